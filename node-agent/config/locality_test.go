package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
)

var (
	preferClose = []workloadv1.LoadBalancing_Scope{
		workloadv1.LoadBalancing_NETWORK, workloadv1.LoadBalancing_REGION, workloadv1.LoadBalancing_ZONE,
	}
	preferSameNode = append(preferClose[:3:3], workloadv1.LoadBalancing_SUBZONE, workloadv1.LoadBalancing_NODE)
)

// located is a reviews endpoint (or, without ports, a client) on node in
// region/zone.
func located(name, node, region, zone string, healthy bool, ip string) *workloadv1.Address {
	a := workload(wl{name: name, node: node, ips: []string{ip}, unhealthy: !healthy, ports: map[uint32]uint32{9080: 0}})
	a.GetWorkload().Locality = &workloadv1.Locality{Region: region, Zone: zone}
	return a
}

func balancedService(mode workloadv1.LoadBalancing_LocalityMode, prefs ...workloadv1.LoadBalancing_Scope) *workloadv1.Address {
	a := service("10.96.0.10", 9080)
	a.GetService().LoadBalancing = &workloadv1.LoadBalancing{RoutingPreference: prefs, LocalityMode: mode}
	return a
}

// localStore is a Store holding as; it fails the test if they are rejected.
func localStore(t testing.TB, as ...*workloadv1.Address) *Store {
	t.Helper()
	s := NewStore(Options{Logger: quiet})
	if err := s.Handle(AddressType, addresses(as...), nil); err != nil {
		t.Fatal(err)
	}
	return s
}

// picks counts the endpoints n picks from client choose.
func picks(t *testing.T, s *Store, client string, n int) map[string]int {
	t.Helper()
	snap := s.Snapshot()
	src := snap.Workload("Kubernetes//Pod/default/" + client)
	out := map[string]int{}
	for range n {
		w, _, err := s.PickEndpoint(snap.Service(reviews), 9080, src)
		if err != nil {
			out[err.Error()]++
			continue
		}
		out[w.Proto.GetName()]++
	}
	return out
}

func TestPickEndpointFailsOverByLocality(t *testing.T) {
	client := located("client", "node-a", "region-1", "zone-a", true, "10.1.0.100")
	client.GetWorkload().Services = nil
	for _, tc := range []struct {
		name                 string
		a1, a2, b, farHealth bool
		want                 map[string]int
	}{
		{"same zone first, round robin within it", true, true, true, true, map[string]int{"a1": 5, "a2": 5}},
		{"the remaining same-zone endpoint", false, true, true, true, map[string]int{"a2": 10}},
		{"zone a gone: the region's other zone", false, false, true, true, map[string]int{"b": 10}},
		{"region gone: anywhere", false, false, false, true, map[string]int{"far": 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := localStore(t, client, balancedService(workloadv1.LoadBalancing_FAILOVER, preferClose...),
				located("a1", "node-a", "region-1", "zone-a", tc.a1, "10.1.0.1"),
				located("a2", "node-a2", "region-1", "zone-a", tc.a2, "10.1.0.2"),
				located("b", "node-b", "region-1", "zone-b", tc.b, "10.1.0.3"),
				located("far", "node-c", "region-2", "zone-a", tc.farHealth, "10.1.0.4"))
			if got := picks(t, s, "client", 10); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("picks %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPickEndpointPreferSameNodeAndStrict(t *testing.T) {
	client := located("client", "node-a", "region-1", "zone-a", true, "10.1.0.100")
	client.GetWorkload().Services = nil
	sameZone := located("zone-peer", "node-a2", "region-1", "zone-a", true, "10.1.0.1")
	sameNode := located("node-peer", "node-a", "region-1", "zone-a", true, "10.1.0.2")

	s := localStore(t, client, sameZone, sameNode, balancedService(workloadv1.LoadBalancing_FAILOVER, preferSameNode...))
	if got := picks(t, s, "client", 4); got["node-peer"] != 4 {
		t.Errorf("PreferSameNode: picks %v, want node-peer only", got)
	}
	// internalTrafficPolicy Local: the node's own endpoints or nothing.
	nodeLocal := balancedService(workloadv1.LoadBalancing_STRICT, workloadv1.LoadBalancing_NODE)
	if got := picks(t, localStore(t, client, sameZone, sameNode, nodeLocal), "client", 4); got["node-peer"] != 4 {
		t.Errorf("STRICT NODE: picks %v, want node-peer only", got)
	}
	s = localStore(t, client, sameZone, nodeLocal)
	snap := s.Snapshot()
	_, _, err := s.PickEndpoint(snap.Service(reviews), 9080, snap.Workload("Kubernetes//Pod/default/client"))
	if !errors.Is(err, ErrNoEndpoint) || !strings.Contains(err.Error(), "STRICT") {
		t.Errorf("STRICT without a local endpoint: %v, want ErrNoEndpoint naming STRICT", err)
	}
	// A client outside the mesh has no locality: any endpoint.
	if w, _, err := s.PickEndpoint(snap.Service(reviews), 9080, nil); err != nil || w.Proto.GetName() != "zone-peer" {
		t.Errorf("nil source: %v %v, want zone-peer", w, err)
	}
}

// TestPickEndpointLocalityDoesNotAllocate: once a client locality's
// choice is made, picks for it allocate nothing.
func TestPickEndpointLocalityDoesNotAllocate(t *testing.T) {
	s, svc, src := benchStore(t)
	s.PickEndpoint(svc, 9080, src)
	if n := testing.AllocsPerRun(100, func() { s.PickEndpoint(svc, 9080, src) }); n != 0 {
		t.Fatalf("%v allocations per pick", n)
	}
}

func BenchmarkPickEndpointLocality(b *testing.B) {
	s, svc, src := benchStore(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := s.PickEndpoint(svc, 9080, src); err != nil {
			b.Fatal(err)
		}
	}
}

// benchStore has a PreferClose service with 30 endpoints in three zones.
func benchStore(t testing.TB) (*Store, *Service, *Workload) {
	as := []*workloadv1.Address{balancedService(workloadv1.LoadBalancing_FAILOVER, preferClose...)}
	for i := range 30 {
		zone := fmt.Sprintf("zone-%c", 'a'+i%3)
		as = append(as, located(fmt.Sprintf("ep-%d", i), "node-"+zone, "region-1", zone, true, fmt.Sprintf("10.1.0.%d", i+1)))
	}
	s := localStore(t, as...)
	snap := s.Snapshot()
	return s, snap.Service(reviews), snap.Workload("Kubernetes//Pod/default/ep-0")
}

func TestValidateLoadBalancing(t *testing.T) {
	for _, tc := range []struct {
		name string
		lb   *workloadv1.LoadBalancing
		want string
	}{
		{"unspecified scope", &workloadv1.LoadBalancing{LocalityMode: workloadv1.LoadBalancing_FAILOVER,
			RoutingPreference: []workloadv1.LoadBalancing_Scope{workloadv1.LoadBalancing_UNSPECIFIED_SCOPE}}, "routing_preference[0]: UNSPECIFIED_SCOPE"},
		{"unknown scope", &workloadv1.LoadBalancing{LocalityMode: workloadv1.LoadBalancing_FAILOVER,
			RoutingPreference: []workloadv1.LoadBalancing_Scope{workloadv1.LoadBalancing_ZONE, 42}}, "routing_preference[1]: unknown value 42"},
		{"unknown locality mode", &workloadv1.LoadBalancing{LocalityMode: 7}, "locality_mode: unknown value 7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := service("10.96.0.10", 9080)
			a.GetService().LoadBalancing = tc.lb
			err := NewStore(Options{Logger: quiet}).Handle(AddressType, addresses(a), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Handle: %v, want an error with %q", err, tc.want)
			}
		})
	}
}
