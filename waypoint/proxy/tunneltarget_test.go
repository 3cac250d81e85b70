package proxy

import (
	"crypto/tls"
	"net/http"
	"net/netip"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// An endpoint with a tunnel target (istio.io/ingress-use-waypoint: a
// waypoint reached for the service VIP it serves) is dialled over HBONE at
// its own address with the CONNECT to the target. Two clusters reach the
// same waypoint for different services: their requests must never share a
// pooled stream, or one service's request would reach the other.
func TestTunnelTargetPerService(t *testing.T) {
	e := newEnv(t)
	svcA, svcB := startBackend(t, "service-a", nil), startBackend(t, "service-b", nil)
	waypoint := netip.AddrPortFrom(podIP(), 9080) // one address for both: the stand-in agent dials the CONNECT target
	for _, c := range []struct {
		name   string
		target *backend
	}{{"a", svcA}, {"b", svcB}} {
		e.mustPush(resourcev3.ClusterType, edsCluster(c.name))
		ep := cla(c.name, epSpec{addr: waypoint, tunnel: "HBONE", identity: backendID.String(), health: 1})
		ep.Endpoints[0].LbEndpoints[0].Metadata.FilterMetadata["weft"].Fields[mesh.MetadataTunnelTarget] = structpb.NewStringValue(c.target.addr.String())
		e.mustPush(resourcev3.EndpointType, ep)
	}
	prefix := func(p, cluster string) *routev3.Route {
		r := routeTo(p, cluster)
		r.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: p}
		return r
	}
	e.mustPush(resourcev3.ListenerType, listener(hcmChain(t, chainKey, vip, vipPort, chainKey)))
	e.mustPush(resourcev3.RouteType, routeConfig(chainKey, svcHost, prefix("/a", "a"), prefix("/b", "b")))

	c := e.httpClient(vipAuthority())
	for i := range 6 {
		path, want := "/a", "service-a"
		if i%2 == 1 {
			path, want = "/b", "service-b"
		}
		if code, got := get(t, c, path, nil); code != http.StatusOK || got != want {
			t.Fatalf("request %d to %s: %d from %q, want 200 from %s", i, path, code, got, want)
		}
	}
	if svcA.conns.Load() != 1 || svcB.conns.Load() != 1 {
		t.Errorf("connections: service-a %d, service-b %d; want one pooled stream each", svcA.conns.Load(), svcB.conns.Load())
	}
}

// A tunnel target must be an address, on an HBONE endpoint.
func TestTunnelTargetRefused(t *testing.T) {
	for _, c := range []struct{ tunnel, target string }{{"HBONE", "reviews:9080"}, {"NONE", "10.96.0.1:9080"}} {
		ep := cla("c", epSpec{addr: mustAddrPort("10.244.0.9:9080"), tunnel: c.tunnel, identity: backendID.String(), health: 1})
		ep.Endpoints[0].LbEndpoints[0].Metadata.FilterMetadata["weft"].Fields[mesh.MetadataTunnelTarget] = structpb.NewStringValue(c.target)
		if eps, err := compileEndpoints(ep); err == nil || len(eps) != 0 {
			t.Errorf("tunnel %s, target %q: endpoints %d, error %v; want the endpoint refused", c.tunnel, c.target, len(eps), err)
		}
	}
}

// TestPoolKeyOfAllocatesOnce: a request to an endpoint reuses the pool
// key computed for its TLS settings (no hashing or formatting per
// request); other settings get another key.
func TestPoolKeyOfAllocatesOnce(t *testing.T) {
	e := &endpoint{addr: netip.MustParseAddrPort("10.0.0.1:8443"), meta: endpointMeta{TunnelTarget: netip.MustParseAddrPort("10.96.0.1:80")}}
	viaWaypoint := dialTarget{addr: e.addr, connect: e.meta.TunnelTarget}
	withTLS := dialTarget{addr: e.addr, tls: &tls.Config{}, tlsID: 7}
	first := poolKeyOf("c", e, viaWaypoint)
	if allocs := testing.AllocsPerRun(100, func() { poolKeyOf("c", e, viaWaypoint) }); allocs != 0 {
		t.Errorf("%v allocations per request for a known endpoint", allocs)
	}
	if poolKeyOf("c", e, withTLS) == first || poolKeyOf("c", e, withTLS) != poolKey("c", withTLS) {
		t.Error("the key of other TLS settings is the cached one")
	}
}
