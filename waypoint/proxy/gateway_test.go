package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/pkg/golden"
)

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) uint32 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint32(ln.Addr().(*net.TCPAddr).Port)
}

// gatewayListener is control/waypoint's ingress Listener "0.0.0.0_<port>".
func gatewayListener(t *testing.T, port uint32) *listenerv3.Listener {
	name := "http." + strconv.Itoa(int(port))
	fc := hcmChain(t, name, "", port, name)
	fc.FilterChainMatch = &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(port)}
	return &listenerv3.Listener{Name: "0.0.0.0_" + strconv.Itoa(int(port)), FilterChains: []*listenerv3.FilterChain{fc},
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}}
}

// TestGatewayMode: plain HTTP in on the port the Listener names, the
// route's exact path to an HBONE endpoint with the gateway's identity (the
// stand-in agent only accepts that identity), 404 for other paths, a
// generated x-request-id, reporter="source" with the gateway as source,
// and the listener closed when the configuration drops it.
func TestGatewayMode(t *testing.T) {
	e := newEnv(t)
	b := startBackend(t, "productpage-v1", nil)
	port := freePort(t)
	rcName := "http." + strconv.Itoa(int(port))
	e.mustPush(resourcev3.ClusterType, edsCluster(clusterName("")))
	e.mustPush(resourcev3.EndpointType, cla(clusterName(""), hboneEP(b, "v1")))
	e.mustPush(resourcev3.ListenerType, gatewayListener(t, port))
	r := routeTo("default/bookinfo.0", clusterName(""))
	r.Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/productpage"}}
	e.mustPush(resourcev3.RouteType, routeConfig(rcName, "*", r))

	if got := e.wp.Store.Snapshot().ListenPorts; len(got) != 1 || uint32(got[0]) != port {
		t.Fatalf("ListenPorts %v, want [%d]", got, port)
	}
	pl := &PlainListeners{Proxy: e.wp, Host: "127.0.0.1", Source: Source{ID: waypointID,
		Baggage: "k8s.deployment.name=weft-ingress,k8s.namespace.name=weft-ingress,service.name=weft-ingress,service.version=latest"}}
	if err := pl.Sync(e.wp.Store.Snapshot().ListenPorts); err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	base := "http://127.0.0.1:" + strconv.Itoa(int(port))
	c := &http.Client{Timeout: testTimeout}
	fetch := func(path string) (int, string) {
		t.Helper()
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := fetch("/productpage"); code != 200 || body != "hello from productpage-v1" {
		t.Fatalf("GET /productpage: %d %q", code, body)
	}
	if id := b.seenHeader("X-Request-Id"); !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(id) {
		t.Fatalf("upstream x-request-id %q, want a generated UUID", id)
	}
	if got := b.seenHeader("X-Forwarded-For"); got != "127.0.0.1" {
		t.Fatalf("upstream x-forwarded-for %q, want the client address", got)
	}
	if code, _ := fetch("/nope"); code != http.StatusNotFound {
		t.Fatalf("GET /nope: %d, want 404", code)
	}
	want := map[string]string{
		"reporter": "source", "response_code": "200",
		"source_workload": "weft-ingress", "source_workload_namespace": "weft-ingress", "source_principal": waypointID.String(),
		"destination_workload": "productpage-v1", "destination_principal": backendID.String(),
		"connection_security_policy": "mutual_tls",
	}
	await.True(t, "both requests counted by the source reporter", func() bool { return counterValue(t, e, map[string]string{"reporter": "source"}) == 2 })
	if v := counterValue(t, e, want); v != 1 {
		t.Fatalf("istio_requests_total%v = %v", want, v)
	}
	if v := counterValue(t, e, map[string]string{"reporter": "source", "response_code": "404", "response_flags": "NR"}); v != 1 {
		t.Fatalf("404 NR requests = %v", v)
	}
	golden.Assert(t, "testdata/metric-labels-gateway.golden", labelNames(t, e.reg))

	// The configuration drops the listener: the port closes.
	if err := e.wp.Store.Handle(resourcev3.ListenerType, nil, []string{"0.0.0.0_" + strconv.Itoa(int(port))}); err != nil {
		t.Fatal(err)
	}
	if err := pl.Sync(e.wp.Store.Snapshot().ListenPorts); err != nil {
		t.Fatal(err)
	}
	if len(pl.Ports()) != 0 {
		t.Fatalf("still listening on %v", pl.Ports())
	}
	if conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(int(port)), time.Second); err == nil {
		conn.Close()
		t.Fatalf("port %d still accepts connections after the listener was removed", port)
	}
}

// TestGatewayNormalizesPath: in gateway mode too, the HCM's path
// normalization (MERGE_SLASHES here) runs before routing, the normalized
// path goes upstream, and %00 is refused.
func TestGatewayNormalizesPath(t *testing.T) {
	e := newEnv(t)
	b := startBackend(t, "productpage-v1", nil)
	port := freePort(t)
	rcName := "http." + strconv.Itoa(int(port))
	l := gatewayListener(t, port)
	f := l.FilterChains[0].Filters[0]
	hcm := &hcmv3.HttpConnectionManager{}
	if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	hcm.NormalizePath, hcm.MergeSlashes = wrapperspb.Bool(true), true
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, hcm)}
	e.mustPush(resourcev3.ClusterType, edsCluster(clusterName("")))
	e.mustPush(resourcev3.EndpointType, cla(clusterName(""), hboneEP(b, "v1")))
	e.mustPush(resourcev3.ListenerType, l)
	r := routeTo("default/bookinfo.0", clusterName(""))
	r.Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/productpage"}}
	e.mustPush(resourcev3.RouteType, routeConfig(rcName, "*", r))
	pl := &PlainListeners{Proxy: e.wp, Host: "127.0.0.1", Source: Source{ID: waypointID}}
	if err := pl.Sync(e.wp.Store.Snapshot().ListenPorts); err != nil {
		t.Fatal(err)
	}
	defer pl.Close()

	send := func(target string) int {
		t.Helper()
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(int(port)), testTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: bookinfo.example\r\nConnection: close\r\n\r\n", target)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := send("//static/..//%70roductpage?x=/../"); code != 200 || b.seenHeader("RequestURI") != "/productpage?x=/../" {
		t.Fatalf("normalized request: %d, upstream got %q", code, b.seenHeader("RequestURI"))
	}
	if code := send("/productpage%00"); code != http.StatusBadRequest || b.hits.Load() != 1 {
		t.Fatalf("%%00: %d, backend hits %d", code, b.hits.Load())
	}
}

// TestEdgeRequestID: a gateway keeps the x-request-id of a client on a
// private or loopback address and replaces an external client's, as Envoy
// does at the edge; a waypoint keeps every caller's; any hop gives one to
// a request without it.
func TestEdgeRequestID(t *testing.T) {
	withID := http.Header{"X-Request-Id": {"chosen-by-caller"}}
	for _, c := range []struct {
		name   string
		h      http.Header
		rs     *requestState
		wantID bool
	}{
		{"gateway, external client", withID, &requestState{edge: true, clientIP: netip.MustParseAddr("203.0.113.7")}, true},
		{"gateway, external IPv6 client", withID, &requestState{edge: true, clientIP: netip.MustParseAddr("2001:db8::7")}, true},
		{"gateway, private client", withID, &requestState{edge: true, clientIP: netip.MustParseAddr("10.1.2.3")}, false},
		{"gateway, loopback client", withID, &requestState{edge: true, clientIP: netip.MustParseAddr("127.0.0.1")}, false},
		{"waypoint, any caller", withID, &requestState{clientIP: netip.MustParseAddr("203.0.113.7")}, false},
		{"no id", http.Header{}, &requestState{clientIP: netip.MustParseAddr("10.1.2.3")}, true},
	} {
		if got := needsRequestID(c.h, c.rs); got != c.wantID {
			t.Errorf("%s: new x-request-id %v, want %v", c.name, got, c.wantID)
		}
	}
}

// TestGatewayTCPServer: a gateway port whose chain is a tcp_proxy (an
// Istio Gateway TCP server) forwards the client's bytes to the cluster
// over HBONE and the reply back, half-close included.
func TestGatewayTCPServer(t *testing.T) {
	e := newEnv(t)
	ln := startUpperEcho(t, nil)
	cl := "outbound|6379||redis.default.svc.cluster.local"
	e.mustPush(resourcev3.ClusterType, edsCluster(cl))
	e.mustPush(resourcev3.EndpointType, cla(cl, epSpec{addr: mustAddrPort(ln.Addr().String()), tunnel: "HBONE",
		identity: backendID.String(), workload: "redis", health: corev3.HealthStatus_HEALTHY}))
	port := freePort(t)
	l := gatewayListener(t, port)
	fc := tcpChain(t, "tcp."+strconv.Itoa(int(port)), "", port, cl)
	fc.FilterChainMatch = &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(port)}
	l.FilterChains = []*listenerv3.FilterChain{fc}
	e.mustPush(resourcev3.ListenerType, l)
	pl := &PlainListeners{Proxy: e.wp, Host: "127.0.0.1", Source: Source{ID: waypointID}}
	if err := pl.Sync(e.wp.Store.Snapshot().ListenPorts); err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(int(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	if _, err := io.WriteString(c, "ping through the gateway"); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "PING THROUGH THE GATEWAY" {
		t.Fatalf("reply %q, %v; want the backend's upper-cased echo", got, err)
	}
}
