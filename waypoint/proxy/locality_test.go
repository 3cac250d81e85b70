package proxy

import (
	"math"
	"net/netip"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// loc is one LocalityLbEndpoints of a test CLA: zone, priority, weight and
// the endpoints' ports on 10.0.0.1 (negative: UNHEALTHY).
type loc struct {
	zone     string
	priority uint32
	weight   uint32
	ports    []int
}

func localityCluster(t *testing.T, weighted bool, locs ...loc) *cluster {
	t.Helper()
	cl := edsCluster("c")
	if weighted {
		cl.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
			LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{}}}
	}
	s, err := compileCluster(cl, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := &endpointv3.ClusterLoadAssignment{ClusterName: "c"}
	for _, l := range locs {
		lle := &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Region: "r", Zone: l.zone}, Priority: l.priority,
			LoadBalancingWeight: wrapperspb.UInt32(l.weight)}
		for _, p := range l.ports {
			le := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(max(p, -p))}}}}}}}
			if p < 0 {
				le.HealthStatus = corev3.HealthStatus_UNHEALTHY
			}
			lle.LbEndpoints = append(lle.LbEndpoints, le)
		}
		a.Endpoints = append(a.Endpoints, lle)
	}
	eps, err := compileEndpoints(a)
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster("c")
	c.setSettings(s)
	c.setEndpoints(eps)
	return c
}

// picks counts n picks by endpoint port.
func picks(c *cluster, n int) map[uint16]int {
	out := map[uint16]int{}
	for range n {
		if e := c.pick(0, false); e != nil {
			out[e.addr.Port()]++
		} else {
			out[0]++
		}
	}
	return out
}

func (c *cluster) ejectFor(port uint16, d time.Duration) {
	for _, e := range *c.eps.Load() {
		if e.addr == netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port) {
			e.st.mu.Lock()
			e.st.ejectedUntil = time.Now().Add(d)
			e.st.mu.Unlock()
		}
	}
}

// within fails unless got of n is within 5 standard deviations of the
// binomial share p (a false alarm about once in 3.5 million runs).
func within(t *testing.T, what string, got, n int, p float64) {
	t.Helper()
	sd := math.Sqrt(float64(n) * p * (1 - p))
	if want := float64(n) * p; math.Abs(float64(got)-want) > 5*sd+1 {
		t.Errorf("%s: %d of %d, want %.0f ± %.0f", what, got, n, want, 5*sd)
	}
}

func TestPriorityFailover(t *testing.T) {
	c := localityCluster(t, true, loc{"a", 0, 2, []int{1, 2}}, loc{"b", 1, 2, []int{3, 4}})
	if got := picks(c, 1000); got[1]+got[2] != 1000 {
		t.Fatalf("all of priority 0 healthy: %v, want every pick in zone a (ports 1, 2)", got)
	}
	// One of two ejected: priority 0 is 1.4 × 50% = 70% available.
	c.ejectFor(1, time.Minute)
	got := picks(c, 4000)
	within(t, "priority 0 with one of two endpoints ejected", got[2], 4000, 0.7)
	if got[1] != 0 {
		t.Fatalf("the ejected endpoint got %d picks", got[1])
	}
	c.ejectFor(2, time.Minute)
	if got := picks(c, 1000); got[3]+got[4] != 1000 {
		t.Fatalf("priority 0 all ejected: %v, want every pick in zone b (ports 3, 4)", got)
	}
	c.ejectFor(1, 0)
	c.ejectFor(2, 0)
	if got := picks(c, 1000); got[1]+got[2] != 1000 {
		t.Fatalf("ejections over: %v, want every pick back in zone a", got)
	}
}

func TestPriorityFailoverUnhealthy(t *testing.T) {
	c := localityCluster(t, false, loc{"a", 0, 1, []int{-1}}, loc{"b", 1, 1, []int{3}})
	if got := picks(c, 100); got[3] != 100 {
		t.Fatalf("priority 0 unhealthy: %v, want every pick on port 3", got)
	}
	c = localityCluster(t, false, loc{"a", 0, 1, []int{-1}}, loc{"b", 1, 1, []int{-3}})
	if got := picks(c, 10); got[0] != 10 {
		t.Fatalf("nothing healthy: %v, want no endpoint", got)
	}
}

func TestLocalityWeights(t *testing.T) {
	c := localityCluster(t, true, loc{"a", 0, 80, []int{1}}, loc{"b", 0, 20, []int{2, 3}})
	got := picks(c, 5000)
	within(t, "zone a (weight 80)", got[1], 5000, 0.8)
	within(t, "zone b (weight 20)", got[2]+got[3], 5000, 0.2)
	// Zone b half ejected: effective weight 20 × 0.7 = 14 against 80.
	c.ejectFor(2, time.Minute)
	got = picks(c, 5000)
	within(t, "zone b half ejected", got[3], 5000, 14.0/94)
	// Without locality_weighted_lb_config, weights do not count: round
	// robin over the priority's endpoints.
	c = localityCluster(t, false, loc{"a", 0, 80, []int{1}}, loc{"b", 0, 20, []int{2, 3}})
	if got := picks(c, 300); got[1] != 100 || got[2] != 100 || got[3] != 100 {
		t.Fatalf("unweighted: %v, want 100 each", got)
	}
}

func TestPickLevel(t *testing.T) {
	for _, tc := range []struct {
		health []float64
		r      float64
		want   int
	}{
		{[]float64{1, 1}, 0.99, 0},
		{[]float64{0.7, 1}, 0.69, 0},
		{[]float64{0.7, 1}, 0.71, 1},
		// Total below 100%: normalised, so priority 0 keeps it all.
		{[]float64{0.7, 0}, 0.99, 0},
		{[]float64{0.35, 0.35}, 0.49, 0},
		{[]float64{0.35, 0.35}, 0.51, 1},
		{[]float64{0, 0.2}, 0.1, 1},
	} {
		total := 0.0
		for _, h := range tc.health {
			total += h
		}
		if got := pickLevel(tc.health, min(total, 1), tc.r); got != tc.want {
			t.Errorf("pickLevel(%v, r=%v) = %d, want %d", tc.health, tc.r, got, tc.want)
		}
	}
}

// TestLocalityFailoverThroughProxy: requests go to the priority-0
// endpoint; once outlier detection ejects it, to priority 1.
func TestLocalityFailoverThroughProxy(t *testing.T) {
	e := newEnv(t)
	near, far := startBackend(t, "near", nil), startBackend(t, "far", nil)
	e.mustPush(resourcev3.ClusterType, edsCluster(clusterName(""), func(c *clusterv3.Cluster) {
		c.OutlierDetection = &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(2), Interval: durationpb.New(time.Second),
			BaseEjectionTime: durationpb.New(time.Minute), MaxEjectionPercent: wrapperspb.UInt32(100)}
	}))
	a := cla(clusterName(""), hboneEP(near, "v1"), hboneEP(far, "v1"))
	lbs := a.Endpoints[0].LbEndpoints
	a.Endpoints = []*endpointv3.LocalityLbEndpoints{
		{Locality: &corev3.Locality{Zone: "a"}, LbEndpoints: lbs[:1]},
		{Locality: &corev3.Locality{Zone: "b"}, LbEndpoints: lbs[1:], Priority: 1},
	}
	e.mustPush(resourcev3.EndpointType, a)
	e.mustPush(resourcev3.ListenerType, listener(hcmChain(t, chainKey, vip, vipPort, chainKey)))
	e.mustPush(resourcev3.RouteType, routeConfig(chainKey, svcHost, routeTo("default/reviews.0", clusterName(""))))
	c := e.httpClient(vipAuthority())
	for range 10 {
		if code, b := get(t, c, "/", nil); code != 200 || b != "near" {
			t.Fatalf("healthy: %d from %q, want the near endpoint", code, b)
		}
	}
	near.status.Store(503)
	for range 2 {
		get(t, c, "/", nil)
	}
	for range 10 {
		if code, b := get(t, c, "/", nil); code != 200 || b != "far" {
			t.Fatalf("near ejected: %d from %q, want the far endpoint", code, b)
		}
	}
	if far.hits.Load() != 10 {
		t.Fatalf("far endpoint hits %d, want 10", far.hits.Load())
	}
}
