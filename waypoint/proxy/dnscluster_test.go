package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weft-mesh/weft/pkg/dnsresolve"
)

// fakeResolver answers lookups from a map the test changes.
type fakeResolver struct {
	mu      sync.Mutex
	answers map[string][]netip.Addr
	lookups map[string]int
}

func (f *fakeResolver) set(name string, addrs ...netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[name] = addrs
}

func (f *fakeResolver) lookup(_ context.Context, name string, fam dnsresolve.Family) (dnsresolve.Answer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups[name]++
	if fam != dnsresolve.V4Only {
		return dnsresolve.Answer{}, fmt.Errorf("family %s, want V4_ONLY", fam)
	}
	a := f.answers[name]
	if len(a) == 0 {
		return dnsresolve.Answer{}, fmt.Errorf("%s: NXDOMAIN: %w", name, dnsresolve.ErrNotFound)
	}
	return dnsresolve.Answer{Addrs: a, TTL: time.Second}, nil
}

func (f *fakeResolver) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lookups[name]
}

// dnsXDSCluster is a STRICT_DNS or LOGICAL_DNS cluster of host:port, as
// control/waypoint renders a ServiceEntry with resolution DNS.
func dnsXDSCluster(name string, typ clusterv3.Cluster_DiscoveryType, port uint32, hosts ...string) *clusterv3.Cluster {
	var lbs []*endpointv3.LbEndpoint
	for _, h := range hosts {
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: socketAddr(h, port)}}})
	}
	return &clusterv3.Cluster{Name: name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: typ},
		ConnectTimeout:       durationpb.New(10 * time.Second),
		DnsLookupFamily:      clusterv3.Cluster_V4_ONLY,
		//lint:ignore SA1019 as control/waypoint renders it
		RespectDnsTtl: true,
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}},
	}
}

func socketAddr(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

// TestDNSClusters: a STRICT_DNS cluster balances over every A record of its
// host and follows a changed answer; LOGICAL_DNS uses the first address
// only; a host that never resolves fails the request with 503 and the
// lookup error, without a lookup per request.
func TestDNSClusters(t *testing.T) {
	// Two backends on the same port of two loopback addresses.
	b1 := startBackend(t, "one", nil)
	b2 := startBackendAt(t, "two", netip.AddrPortFrom(podIP(), b1.addr.Port()), nil)
	b3 := startBackendAt(t, "three", netip.AddrPortFrom(podIP(), b1.addr.Port()), nil)
	port := uint32(b1.addr.Port())
	res := &fakeResolver{answers: map[string][]netip.Addr{}, lookups: map[string]int{}}
	res.set("api.example.com", b1.addr.Addr(), b2.addr.Addr())
	res.set("first.example.com", b3.addr.Addr(), b1.addr.Addr())
	e := newEnv(t, func(o *Options) { o.Lookup = res.lookup })

	strict, logical, nowhere := "outbound|80||api.example.com", "outbound|80||first.example.com", "outbound|80||nowhere.example.com"
	e.mustPush(resourcev3.ClusterType, dnsXDSCluster(strict, clusterv3.Cluster_STRICT_DNS, port, "api.example.com"),
		dnsXDSCluster(logical, clusterv3.Cluster_LOGICAL_DNS, port, "first.example.com"),
		dnsXDSCluster(nowhere, clusterv3.Cluster_STRICT_DNS, port, "nowhere.example.com"))
	e.mustPush(resourcev3.EndpointType)
	e.mustPush(resourcev3.ListenerType, listener(hcmChain(t, chainKey, vip, vipPort, chainKey)))
	strictRoute, logicalRoute, nowhereRoute := routeTo("default/a.0", strict), routeTo("default/b.0", logical), routeTo("default/c.0", nowhere)
	strictRoute.Match.PathSpecifier = prefix("/strict")
	logicalRoute.Match.PathSpecifier = prefix("/logical")
	nowhereRoute.Match.PathSpecifier = prefix("/nowhere")
	e.mustPush(resourcev3.RouteType, routeConfig(chainKey, svcHost, strictRoute, logicalRoute, nowhereRoute))
	c := e.httpClient(vipAuthority())

	waitFor(t, "both addresses of api.example.com", func() bool { return len(*e.wp.Store.state[strict].eps.Load()) == 2 })
	seen := map[string]int{}
	for range 10 {
		code, backend := get(t, c, "/strict", nil)
		if code != http.StatusOK {
			t.Fatalf("GET /strict: %d", code)
		}
		seen[backend]++
	}
	if seen["one"] != 5 || seen["two"] != 5 {
		t.Fatalf("STRICT_DNS over two A records, round robin: %v, want 5 each", seen)
	}
	for range 4 {
		if code, backend := get(t, c, "/logical", nil); code != http.StatusOK || backend != "three" {
			t.Fatalf("LOGICAL_DNS: %d from %q, want 200 from the first address (three)", code, backend)
		}
	}

	// A new answer replaces the endpoints.
	res.set("api.example.com", b3.addr.Addr())
	waitFor(t, "the new answer of api.example.com", func() bool {
		eps := *e.wp.Store.state[strict].eps.Load()
		return len(eps) == 1 && eps[0].addr == b3.addr
	})
	if code, backend := get(t, c, "/strict", nil); code != http.StatusOK || backend != "three" {
		t.Fatalf("after the answer changed: %d from %q, want three", code, backend)
	}

	// Never resolved: 503 naming the lookup failure, no lookup per request.
	lookups := res.count("nowhere.example.com")
	for range 5 {
		req, _ := http.NewRequest(http.MethodGet, "http://"+svcHost+":"+strconv.Itoa(vipPort)+"/nowhere", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("GET /nowhere: %d %q, want 503", resp.StatusCode, body)
		}
	}
	if n := res.count("nowhere.example.com") - lookups; n > 1 {
		t.Errorf("%d lookups during 5 requests to a cluster that does not resolve; lookups are not per request", n)
	}
	d := e.wp.Store.Dump()
	found := false
	for _, cd := range d.Clusters {
		if cd.Name == nowhere {
			found = true
			if cd.Type != "STRICT_DNS" || len(cd.DNS) != 1 || !strings.Contains(cd.DNS[0].Error, "NXDOMAIN") || len(cd.Endpoints) != 0 {
				t.Errorf("dump of the unresolved cluster: %+v", cd)
			}
		}
	}
	if !found {
		t.Fatal("unresolved cluster missing from the dump")
	}
	hosts := func(state string) float64 {
		return metricValue(t, e, "weft_waypoint_dns_hosts", map[string]string{"state": state})
	}
	if r, s, u := hosts("resolved"), hosts("stale"), hosts("unresolved"); r != 2 || s != 0 || u != 1 {
		t.Errorf("weft_waypoint_dns_hosts resolved %v stale %v unresolved %v, want 2, 0, 1", r, s, u)
	}
	e.wp.Upstream.init()
	_, _, err := e.wp.Upstream.target(e.wp.Store.state[nowhere], e.wp.Store.state[nowhere].settings.Load(), nil, 0, false)
	if !errors.Is(err, dnsresolve.ErrNotFound) {
		t.Errorf("picking from the unresolved cluster: %v, want the DNS error", err)
	}
}

func prefix(p string) *routev3.RouteMatch_Prefix { return &routev3.RouteMatch_Prefix{Prefix: p} }

// waitFor polls cond (the resolver runs in the background).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDNSClusterValidation: what a DNS cluster must have.
func TestDNSClusterValidation(t *testing.T) {
	two := dnsXDSCluster("c", clusterv3.Cluster_LOGICAL_DNS, 80, "a.example.com", "b.example.com")
	none := dnsXDSCluster("c", clusterv3.Cluster_STRICT_DNS, 80)
	resolvers := dnsXDSCluster("c", clusterv3.Cluster_STRICT_DNS, 80, "a.example.com")
	//lint:ignore SA1019 a field the proxy rejects
	resolvers.DnsResolvers = []*corev3.Address{socketAddr("10.0.0.53", 53)}
	noPort := dnsXDSCluster("c", clusterv3.Cluster_STRICT_DNS, 0, "a.example.com")
	for _, tc := range []struct {
		c    *clusterv3.Cluster
		want string
	}{
		{two, "exactly one endpoint"},
		{none, "at least one endpoint"},
		{resolvers, "resolver configuration is not supported"},
		{noPort, "want a hostname or IP and a port"},
	} {
		if _, err := compileCluster(tc.c, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("compileCluster: %v, want %q", err, tc.want)
		}
	}
}
