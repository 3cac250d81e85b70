package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/pkg/hbone"
	"github.com/weft-mesh/weft/pkg/spiffetest"
)

var (
	td          = spiffeid.RequireTrustDomainFromString("cluster.local")
	waypointID  = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/waypoint")
	backendID   = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/reviews")
	clientID    = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/productpage")
	strangerID  = spiffeid.RequireFromString("spiffe://cluster.local/ns/other/sa/stranger")
	testTimeout = 10 * time.Second
)

// env is one test world: a CA, a stand-in node agent, a waypoint and a
// client, all on loopback.
type env struct {
	t        *testing.T
	ca       *spiffetest.CA
	wp       *Proxy
	wpAddr   string
	agent    *hbone.Server
	agentLn  net.Listener
	client   *hbone.Dialer
	reg      *prometheus.Registry
	logMu    sync.Mutex
	logBuf   strings.Builder
	agentFwd sync.Map // authority -> last Forwarded header seen by the agent
}

type syncWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func newEnv(t *testing.T, opts ...func(*Options)) *env {
	t.Helper()
	e := &env{t: t, ca: spiffetest.NewCA(t, td), reg: prometheus.NewRegistry()}
	bundle := e.ca.Bundle()

	// Stand-in node agent: terminates HBONE as backendID and delivers each
	// stream to its :authority over TCP, like the destination node agent.
	e.agent = &hbone.Server{
		TLS: hbone.ServerTLSConfig(e.ca.Issue(t, backendID), bundle, tlsconfig.AuthorizeID(waypointID)),
		Handler: func(ctx context.Context, req *hbone.Request) error {
			e.agentFwd.Store(req.Authority, req.Forwarded)
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", req.Authority)
			if err != nil {
				return hbone.Refuse(http.StatusServiceUnavailable, err.Error())
			}
			st, err := req.Accept()
			if err != nil {
				c.Close()
				return err
			}
			hbone.Pipe(st, c.(*net.TCPConn))
			return nil
		},
	}
	var err error
	e.agentLn, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go e.agent.Serve(e.agentLn)
	t.Cleanup(func() { e.agent.Close() })

	o := Options{
		SVID: e.ca.Issue(t, waypointID), Bundle: bundle, Registerer: e.reg,
		AccessLog: syncWriter{&e.logMu, &e.logBuf},
		Log:       slog.New(slog.DiscardHandler),
		// Every pod's tunnel port is the stand-in agent.
		HBONEDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, e.agentLn.Addr().String())
		},
	}
	for _, f := range opts {
		f(&o)
	}
	e.wp, err = New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.wpAddr = ln.Addr().String()
	go e.wp.Serve(ln)
	t.Cleanup(func() { e.wp.Close() })

	e.client = &hbone.Dialer{SVID: e.ca.Issue(t, clientID), Bundle: bundle}
	t.Cleanup(func() { e.client.Close() })
	return e
}

func (e *env) accessLog() string {
	e.logMu.Lock()
	defer e.logMu.Unlock()
	return e.logBuf.String()
}

// push hands resources to the waypoint as an xDS response would.
func (e *env) push(typeURL string, msgs ...proto.Message) error {
	e.t.Helper()
	updated := map[string]proto.Message{}
	for _, m := range msgs {
		updated[resourceName(m)] = m
	}
	return e.wp.Store.Handle(typeURL, updated, nil)
}

func (e *env) mustPush(typeURL string, msgs ...proto.Message) {
	e.t.Helper()
	if err := e.push(typeURL, msgs...); err != nil {
		e.t.Fatalf("push %s: %v", typeURL, err)
	}
}

func resourceName(m proto.Message) string {
	switch r := m.(type) {
	case *listenerv3.Listener:
		return r.GetName()
	case *routev3.RouteConfiguration:
		return r.GetName()
	case *clusterv3.Cluster:
		return r.GetName()
	case *endpointv3.ClusterLoadAssignment:
		return r.GetClusterName()
	}
	panic(fmt.Sprintf("resource %T", m))
}

// dial opens a stream through the waypoint to authority.
func (e *env) dial(ctx context.Context, authority string) (*hbone.ClientStream, error) {
	h := http.Header{}
	hbone.SetForwarded(h, net.ParseIP("10.0.0.7"))
	h.Set("Baggage", "k8s.namespace.name=default,k8s.deployment.name=productpage-v1,service.name=productpage,service.version=v1")
	return e.client.Dial(ctx, e.wpAddr, tlsconfig.AuthorizeID(waypointID), authority, h)
}

func (e *env) dialConn(ctx context.Context, authority string) (net.Conn, error) {
	st, err := e.dial(ctx, authority)
	if err != nil {
		return nil, err
	}
	return &streamConn{Stream: st, local: st.LocalAddr(), remote: st.RemoteAddr()}, nil
}

// httpClient sends HTTP/1.1 through the waypoint to authority.
func (e *env) httpClient(authority string) *http.Client {
	tr := &http.Transport{
		DialContext:        func(ctx context.Context, _, _ string) (net.Conn, error) { return e.dialConn(ctx, authority) },
		DisableCompression: true,
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testTimeout}
}

// h2Client sends h2 (prior knowledge) through the waypoint to authority.
func (e *env) h2Client(authority string) *http.Client {
	h2c := new(http.Protocols)
	h2c.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: h2c,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return e.dialConn(ctx, authority) }}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testTimeout}
}

// backend is an HTTP server on its own loopback address ("pod IP").
type backend struct {
	name   string
	addr   netip.AddrPort
	hits   atomic.Int64
	status atomic.Int32 // 0: 200
	conns  atomic.Int64
	hold   chan struct{} // when non-nil, requests wait for it to close
	seen   sync.Map      // header name -> last value
	srv    *http.Server
}

var nextIP atomic.Int32

func init() { nextIP.Store(10) }

// podIP returns a fresh loopback address standing in for a pod IP.
func podIP() netip.Addr {
	n := nextIP.Add(1)
	return netip.AddrFrom4([4]byte{127, 0, byte(n / 250), byte(n%250 + 2)})
}

func startBackend(t *testing.T, name string, hold chan struct{}) *backend {
	t.Helper()
	return startBackendAt(t, name, netip.AddrPortFrom(podIP(), 0), hold)
}

// startBackendAt is startBackend listening on addr.
func startBackendAt(t *testing.T, name string, addr netip.AddrPort, hold chan struct{}) *backend {
	t.Helper()
	b := &backend{name: name, hold: hold}
	ln, err := net.Listen("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	b.addr = netip.MustParseAddrPort(ln.Addr().String())
	b.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.hits.Add(1)
			for _, h := range []string{"Traceparent", "X-B3-Traceid", "X-B3-Spanid", "X-Forwarded-For", "X-Forwarded-Client-Cert", "X-Request-Id", "Connection", "Host"} {
				b.seen.Store(h, r.Header.Get(h))
			}
			b.seen.Store("Host", r.Host)
			b.seen.Store("RequestURI", r.RequestURI)
			if b.hold != nil {
				select {
				case <-b.hold:
				case <-r.Context().Done():
					return
				}
			}
			io.Copy(io.Discard, r.Body)
			w.Header().Set("X-Backend", b.name)
			code := int(b.status.Load())
			if code == 0 {
				code = http.StatusOK
			}
			w.WriteHeader(code)
			io.WriteString(w, "hello from "+b.name)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				b.conns.Add(1)
			}
		},
	}
	b.srv.Protocols = new(http.Protocols)
	b.srv.Protocols.SetHTTP1(true)
	b.srv.Protocols.SetUnencryptedHTTP2(true) // h2 prior knowledge, as upstream h2 uses
	go b.srv.Serve(ln)
	t.Cleanup(func() { b.srv.Close() })
	return b
}

// startUpperEcho is a plain TCP backend on a pod IP that answers each
// connection with what it read, upper-cased, once the client closes its
// side; accepted (if not nil) gets a value per connection.
func startUpperEcho(t *testing.T, accepted chan<- struct{}) net.Listener {
	return startReplyBackend(t, accepted, func(b []byte) []byte { return []byte(strings.ToUpper(string(b))) })
}

// startReplyBackend is a plain TCP backend on a pod IP that answers each
// connection with reply(what it read) once the client closes its side;
// accepted (if not nil) gets a value per connection.
func startReplyBackend(t *testing.T, accepted chan<- struct{}, reply func([]byte) []byte) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(podIP().String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if accepted != nil {
				accepted <- struct{}{}
			}
			go func() {
				b, _ := io.ReadAll(c)
				c.Write(reply(b))
				c.Close()
			}()
		}
	}()
	return ln
}

func (b *backend) seenHeader(h string) string {
	v, _ := b.seen.Load(h)
	s, _ := v.(string)
	return s
}

// ---- xDS builders ----

const (
	vip      = "10.96.0.10"
	vipPort  = 9080
	svcHost  = "reviews.default.svc.cluster.local"
	chainKey = "reviews.default.svc.cluster.local:9080"
)

func clusterName(subset string) string {
	return "outbound|" + strconv.Itoa(vipPort) + "|" + subset + "|" + svcHost
}

func anyOf(t testing.TB, m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func hcmChain(t testing.TB, name, ip string, port uint32, rc string) *listenerv3.FilterChain {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: rc,
			ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &routerv3.Router{})}}},
		// What control/waypoint sets on every HTTP chain.
		UpgradeConfigs:    []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
		Proxy_100Continue: true,
		AccessLog:         stdoutAccessLog(t),
	}
	return &listenerv3.FilterChain{
		Name:             name,
		FilterChainMatch: chainMatch(ip, port),
		Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, hcm)}}},
	}
}

func chainMatch(ip string, port uint32) *listenerv3.FilterChainMatch {
	m := &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{{AddressPrefix: ip, PrefixLen: wrapperspb.UInt32(32)}}}
	if port != 0 {
		m.DestinationPort = wrapperspb.UInt32(port)
	}
	return m
}

func tcpChain(t testing.TB, name, ip string, port uint32, cluster string) *listenerv3.FilterChain {
	return &listenerv3.FilterChain{
		Name:             name,
		FilterChainMatch: chainMatch(ip, port),
		Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.tcp_proxy",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, &tcpv3.TcpProxy{
				StatPrefix: name, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster}, AccessLog: stdoutAccessLog(t)})}}},
	}
}

// stdoutAccessLog is the access_log control/waypoint gives every chain
// unless the Telemetry API turns it off.
func stdoutAccessLog(t testing.TB) []*accesslogv3.AccessLog {
	return []*accesslogv3.AccessLog{{Name: stdoutAccessLogger,
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: anyOf(t, &streamv3.StdoutAccessLog{})}}}
}

func listener(chains ...*listenerv3.FilterChain) *listenerv3.Listener {
	return &listenerv3.Listener{Name: ListenerName, FilterChains: chains,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 15008}}}}}
}

func routeTo(name, cluster string) *routev3.Route {
	return &routev3.Route{Name: name,
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}}}
}

func routeConfig(name, host string, routes ...*routev3.Route) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{
		Name: host, Domains: []string{"*"}, Routes: routes}}}
}

func edsCluster(name string, mods ...func(*clusterv3.Cluster)) *clusterv3.Cluster {
	c := &clusterv3.Cluster{Name: name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}},
		ConnectTimeout: durationpb.New(10 * time.Second),
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

type epSpec struct {
	addr     netip.AddrPort
	tunnel   string
	identity string
	workload string
	version  string
	health   corev3.HealthStatus
}

func hboneEP(b *backend, version string) epSpec {
	return epSpec{addr: b.addr, tunnel: "HBONE", identity: backendID.String(), workload: b.name, version: version,
		health: corev3.HealthStatus_HEALTHY}
}

func cla(name string, eps ...epSpec) *endpointv3.ClusterLoadAssignment {
	var lbs []*endpointv3.LbEndpoint
	for _, e := range eps {
		md, _ := structpb.NewStruct(map[string]any{"tunnel": e.tunnel, "identity": e.identity,
			"workload": e.workload, "namespace": "default", "version": e.version})
		lbs = append(lbs, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
				Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: e.addr.Addr().String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(e.addr.Port())}}}}}},
			HealthStatus: e.health,
			Metadata:     &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"weft": md}},
		})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}}
}

// simple configures one HTTP service chain routing everything to one
// cluster with the given backends.
func (e *env) simple(mods []func(*clusterv3.Cluster), backends ...*backend) {
	e.t.Helper()
	var eps []epSpec
	for _, b := range backends {
		eps = append(eps, hboneEP(b, "v1"))
	}
	e.mustPush(resourcev3.ClusterType, edsCluster(clusterName(""), mods...))
	e.mustPush(resourcev3.EndpointType, cla(clusterName(""), eps...))
	e.mustPush(resourcev3.ListenerType, listener(hcmChain(e.t, chainKey, vip, vipPort, chainKey)))
	e.mustPush(resourcev3.RouteType, routeConfig(chainKey, svcHost, routeTo("default/reviews.0", clusterName(""))))
}

// subsets configures the service's HTTP chain and one cluster per subset,
// each with one backend; the routes are the caller's.
func (e *env) subsets(backends map[string]*backend) {
	e.t.Helper()
	for subset, b := range backends {
		e.mustPush(resourcev3.ClusterType, edsCluster(clusterName(subset)))
		e.mustPush(resourcev3.EndpointType, cla(clusterName(subset), hboneEP(b, subset)))
	}
	e.mustPush(resourcev3.ListenerType, listener(hcmChain(e.t, chainKey, vip, vipPort, chainKey)))
}

func vipAuthority() string { return net.JoinHostPort(vip, strconv.Itoa(vipPort)) }

// svcHostPort is the service's Host header.
const svcHostPort = svcHost + ":9080"

// get sends one GET and returns status and X-Backend.
func get(t *testing.T, c *http.Client, path string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+svcHost+":"+strconv.Itoa(vipPort)+path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Backend")
}

type anypbAny = anypb.Any

func anyOfErr(m proto.Message) (*anypb.Any, error) { return anypb.New(m) }

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
