package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/pkg/golden"
	"github.com/weft-mesh/weft/pkg/hbone"
	"github.com/weft-mesh/weft/pkg/mesh"
)

func TestRouteByHeaderAndWeightedSplit(t *testing.T) {
	e := newEnv(t)
	e.subsets(map[string]*backend{"v1": startBackend(t, "reviews-v1", nil), "v2": startBackend(t, "reviews-v2", nil),
		"v3": startBackend(t, "reviews-v3", nil)})
	jason := &routev3.Route{Name: "default/reviews.0",
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			Headers: []*routev3.HeaderMatcher{{Name: "end-user", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
				StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "jason"}}}}}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: clusterName("v2")}}}}
	split := &routev3.Route{Name: "default/reviews.1",
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
			WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
				{Name: clusterName("v1"), Weight: wrapperspb.UInt32(50)},
				{Name: clusterName("v3"), Weight: wrapperspb.UInt32(50)},
			}}}}}}
	e.mustPush(resourcev3.RouteType, routeConfig(chainKey, svcHost, jason, split))

	c := e.httpClient(vipAuthority())
	for range 10 {
		if code, b := get(t, c, "/reviews/1", map[string]string{"end-user": "jason"}); code != 200 || b != "reviews-v2" {
			t.Fatalf("end-user jason: %d from %q, want 200 from reviews-v2", code, b)
		}
	}
	counts := map[string]int{}
	const n = 300
	for range n {
		code, b := get(t, c, "/reviews/1", nil)
		if code != 200 {
			t.Fatalf("status %d", code)
		}
		counts[b]++
	}
	if counts["reviews-v2"] != 0 || counts["reviews-v1"] < n*35/100 || counts["reviews-v3"] < n*35/100 {
		t.Fatalf("50/50 split of %d requests: %v", n, counts)
	}
}

func TestLoadBalancingPolicies(t *testing.T) {
	for _, tc := range []struct {
		policy clusterv3.Cluster_LbPolicy
		check  func(t *testing.T, hits []int64, n int)
	}{
		{clusterv3.Cluster_ROUND_ROBIN, func(t *testing.T, hits []int64, n int) {
			for _, h := range hits {
				if h != int64(n/len(hits)) {
					t.Fatalf("round robin over %d sequential requests: %v", n, hits)
				}
			}
		}},
		{clusterv3.Cluster_RANDOM, func(t *testing.T, hits []int64, n int) {
			for _, h := range hits {
				if h < int64(n/len(hits)/3) {
					t.Fatalf("random: %v", hits)
				}
			}
		}},
		{clusterv3.Cluster_LEAST_REQUEST, func(t *testing.T, hits []int64, n int) {
			for _, h := range hits {
				if h < int64(n/len(hits)/3) {
					t.Fatalf("least request (idle endpoints are all equal): %v", hits)
				}
			}
		}},
	} {
		t.Run(tc.policy.String(), func(t *testing.T) {
			e := newEnv(t)
			bs := []*backend{startBackend(t, "a", nil), startBackend(t, "b", nil), startBackend(t, "c", nil)}
			e.simple([]func(*clusterv3.Cluster){func(c *clusterv3.Cluster) { c.LbPolicy = tc.policy }}, bs...)
			c := e.httpClient(vipAuthority())
			const n = 150
			for range n {
				if code, _ := get(t, c, "/", nil); code != 200 {
					t.Fatalf("status %d", code)
				}
			}
			var hits []int64
			for _, b := range bs {
				hits = append(hits, b.hits.Load())
			}
			tc.check(t, hits, n)
		})
	}
}

func TestLeastRequestAvoidsBusyEndpoint(t *testing.T) {
	e := newEnv(t)
	hold := make(chan struct{})
	busy := startBackend(t, "busy", hold)
	idle := startBackend(t, "idle", nil)
	e.simple([]func(*clusterv3.Cluster){func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST }}, busy, idle)
	c := e.httpClient(vipAuthority())
	// Park requests on the busy endpoint (every pick that lands there stays).
	var wg sync.WaitGroup
	defer func() { close(hold); wg.Wait() }()
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); tryGet(c, "/") }()
	}
	await.True(t, "at least 4 requests, one on the busy endpoint", func() bool { return busy.hits.Load()+idle.hits.Load() >= 4 && busy.hits.Load() >= 1 })
	before := busy.hits.Load()
	for range 40 {
		if code, b := get(t, c, "/", nil); code != 200 || b != "idle" {
			t.Fatalf("got %d from %q, want the idle endpoint", code, b)
		}
	}
	if busy.hits.Load() != before {
		t.Fatalf("least request sent %d more requests to the busy endpoint", busy.hits.Load()-before)
	}
}

func TestRingHashSticky(t *testing.T) {
	t.Run("header", func(t *testing.T) {
		ringHashSticky(t, &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}},
			func(user string) (string, map[string]string) { return "/", map[string]string{"x-user": user} })
	})
	// DestinationRule consistentHash httpQueryParameterName.
	t.Run("query parameter", func(t *testing.T) {
		ringHashSticky(t, &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_QueryParameter_{
			QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: "user"}}},
			func(user string) (string, map[string]string) { return "/?a=1&user=" + user, nil })
	})
}

// ringHashSticky checks that requests made by req for one user all reach
// the endpoint the first went to, and that 12 users spread over more than
// one of 4 endpoints.
func ringHashSticky(t *testing.T, hp *routev3.RouteAction_HashPolicy, req func(user string) (string, map[string]string)) {
	e := newEnv(t)
	bs := []*backend{startBackend(t, "a", nil), startBackend(t, "b", nil), startBackend(t, "c", nil), startBackend(t, "d", nil)}
	var eps []epSpec
	for _, b := range bs {
		eps = append(eps, hboneEP(b, "v1"))
	}
	e.mustPush(resourcev3.ClusterType, edsCluster(clusterName(""), func(c *clusterv3.Cluster) {
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(1024)}}
	}))
	e.mustPush(resourcev3.EndpointType, cla(clusterName(""), eps...))
	e.mustPush(resourcev3.ListenerType, listener(hcmChain(t, chainKey, vip, vipPort, chainKey)))
	r := routeTo("default/reviews.0", clusterName(""))
	r.GetRoute().HashPolicy = []*routev3.RouteAction_HashPolicy{hp}
	e.mustPush(resourcev3.RouteType, routeConfig(chainKey, svcHost, r))
	c := e.httpClient(vipAuthority())
	distinct := map[string]bool{}
	for u := range 12 {
		user := "user-" + strconv.Itoa(u)
		path, h := req(user)
		_, first := get(t, c, path, h)
		for range 8 {
			if code, b := get(t, c, path, h); code != 200 || b != first {
				t.Fatalf("%s: got %d from %q, first went to %q", user, code, b, first)
			}
		}
		distinct[first] = true
	}
	if len(distinct) < 2 {
		t.Fatalf("12 users all hashed to %v", distinct)
	}
}

func TestCircuitBreakerOverflow(t *testing.T) {
	e := newEnv(t)
	hold := make(chan struct{})
	b := startBackend(t, "slow", hold)
	e.simple([]func(*clusterv3.Cluster){func(c *clusterv3.Cluster) {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxConnections: wrapperspb.UInt32(1), MaxPendingRequests: wrapperspb.UInt32(1), MaxRequests: wrapperspb.UInt32(100)}}}
	}}, b)
	c := e.httpClient(vipAuthority())
	results := make(chan int, 2)
	for range 2 { // one busy connection, one pending request
		go func() { results <- tryGet(c, "/") }()
	}
	await.True(t, "one connection and one pending request upstream", func() bool {
		cl := e.wp.Upstream.cluster(clusterName(""))
		return cl.conns.Load() == 1 && cl.pending.Load() == 1
	})
	code, _ := get(t, c, "/", nil)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("third concurrent request: %d, want 503", code)
	}
	close(hold)
	for range 2 {
		if code := <-results; code != 200 {
			t.Fatalf("held request: %d", code)
		}
	}
	await.True(t, "the overflow (UO) in the access log", func() bool { return strings.Contains(e.accessLog(), `"response_flags":"UO"`) })
	if v := counterValue(t, e, map[string]string{"response_code": "503", "response_flags": "UO"}); v != 1 {
		t.Fatalf("istio_requests_total{response_code=503,response_flags=UO} = %v", v)
	}
}

func TestMaxRequestsPerConnection(t *testing.T) {
	e := newEnv(t)
	b := startBackend(t, "a", nil)
	opts, _ := anyOfErr(&httpv3.HttpProtocolOptions{CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(2)},
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{}}})
	e.simple([]func(*clusterv3.Cluster){func(c *clusterv3.Cluster) {
		c.TypedExtensionProtocolOptions = map[string]*anypbAny{mesh.HTTPProtocolOptionsKey: opts}
	}}, b)
	c := e.httpClient(vipAuthority())
	for range 6 {
		if code, _ := get(t, c, "/", nil); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	if n := b.conns.Load(); n != 3 {
		t.Fatalf("6 sequential requests with max_requests_per_connection 2 used %d upstream connections, want 3", n)
	}
}

func TestOutlierEjection(t *testing.T) {
	e := newEnv(t)
	good, bad := startBackend(t, "good", nil), startBackend(t, "bad", nil)
	bad.status.Store(500)
	e.simple([]func(*clusterv3.Cluster){func(c *clusterv3.Cluster) {
		c.OutlierDetection = &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(2), Interval: durationpb.New(time.Second),
			BaseEjectionTime: durationpb.New(time.Minute), MaxEjectionPercent: wrapperspb.UInt32(50)}
	}}, good, bad)
	c := e.httpClient(vipAuthority())
	for range 4 { // round robin: two of these hit the bad endpoint
		get(t, c, "/", nil)
	}
	if bad.hits.Load() != 2 {
		t.Fatalf("bad endpoint hits %d, want 2", bad.hits.Load())
	}
	for range 20 {
		if code, b := get(t, c, "/", nil); code != 200 || b != "good" {
			t.Fatalf("after ejection: %d from %q", code, b)
		}
	}
	if got := e.wp.Upstream.cluster(clusterName("")).stats.Ejections.Load(); got != 1 {
		t.Fatalf("ejections %d", got)
	}
	// max_ejection_percent 50: the good one is not ejected even when failing.
	good.status.Store(503)
	for range 6 {
		get(t, c, "/", nil)
	}
	if good.hits.Load() < 26 {
		t.Fatalf("good endpoint was ejected beyond max_ejection_percent (hits %d)", good.hits.Load())
	}
}

func TestH2AndGRPC(t *testing.T) {
	e := newEnv(t)
	// A real grpc-go server answering any method with a trailer.
	gs := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		var in wrapperspb.StringValue
		if err := stream.RecvMsg(&in); err != nil {
			return err
		}
		stream.SetTrailer(metadata.Pairs("x-trailer", "from-backend"))
		return stream.SendMsg(wrapperspb.String("hello " + in.GetValue()))
	}))
	ln, err := net.Listen("tcp", net.JoinHostPort(podIP().String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	gb := &backend{name: "grpc", addr: mustAddrPort(ln.Addr().String())}
	e.simple(nil, gb)

	conn, err := grpc.NewClient("passthrough:///"+svcHost,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return e.dialConn(ctx, vipAuthority()) }))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var out wrapperspb.StringValue
	var trailer metadata.MD
	if err := conn.Invoke(ctx, "/test.Echo/Say", wrapperspb.String("waypoint"), &out, grpc.Trailer(&trailer)); err != nil {
		t.Fatalf("unary call through the waypoint: %v", err)
	}
	if out.GetValue() != "hello waypoint" || strings.Join(trailer.Get("x-trailer"), "") != "from-backend" {
		t.Fatalf("reply %q trailer %v", out.GetValue(), trailer)
	}
	await.True(t, "the gRPC request counted", func() bool {
		return counterValue(t, e, map[string]string{"request_protocol": "grpc", "response_code": "200"}) == 1
	})
}

func TestH2Downstream(t *testing.T) {
	e := newEnv(t)
	b := startBackend(t, "a", nil)
	e.simple(nil, b)
	c := e.h2Client(vipAuthority())
	for range 5 {
		if code, name := get(t, c, "/", nil); code != 200 || name != "a" {
			t.Fatalf("h2: %d from %q", code, name)
		}
	}
}

func TestTCPProxyChain(t *testing.T) {
	e := newEnv(t)
	ln := startUpperEcho(t, nil)
	st := e.tcpService(t, "mysql", "10.96.0.20", 3306, ln.Addr().String())
	defer st.Close()
	st.Write([]byte("select 1"))
	st.CloseWrite()
	got, err := io.ReadAll(st)
	if err != nil || string(got) != "SELECT 1" {
		t.Fatalf("tcp proxy echo: %q, %v", got, err)
	}
	if fwd, _ := e.agentFwd.Load(ln.Addr().String()); fwd != "for=10.0.0.7;host=mysql.default.svc.cluster.local" {
		t.Fatalf("upstream CONNECT Forwarded %q, want the original client and the Service", fwd)
	}
	await.True(t, "the TCP connection in the access log", func() bool { return strings.Contains(e.accessLog(), `"protocol":"tcp"`) })
	want := map[string]string{"reporter": "waypoint", "request_protocol": "tcp", "destination_service": "mysql.default.svc.cluster.local",
		"destination_service_name": "mysql", "destination_workload": "mysql", "source_principal": clientID.String(), "response_flags": "-"}
	await.True(t, "the TCP stream counted", func() bool { return metricValue(t, e, "istio_tcp_connections_closed_total", want) == 1 })
	if v := metricValue(t, e, "istio_tcp_received_bytes_total", want); v != float64(len("select 1")) {
		t.Errorf("istio_tcp_received_bytes_total = %v", v)
	}
	if v := metricValue(t, e, "istio_tcp_connections_opened_total", want); v != 1 {
		t.Errorf("istio_tcp_connections_opened_total = %v", v)
	}
	golden.Assert(t, "testdata/metric-labels-waypoint-tcp.golden", labelNames(t, e.reg))
}

func TestMetricsAccessLogAndTracePropagation(t *testing.T) {
	e := newEnv(t)
	b := startBackend(t, "reviews-v1", nil)
	e.simple(nil, b)
	c := e.httpClient(vipAuthority())
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	code, _ := get(t, c, "/reviews/7", map[string]string{"traceparent": tp, "x-b3-traceid": "463ac35c9f6413ad", "x-b3-spanid": "0020000000000001", "x-request-id": "req-1"})
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	if got := b.seenHeader("Traceparent"); got != tp {
		t.Fatalf("traceparent upstream %q, want it unchanged", got)
	}
	if got := b.seenHeader("X-B3-Traceid"); got != "463ac35c9f6413ad" {
		t.Fatalf("x-b3-traceid upstream %q", got)
	}
	if got := b.seenHeader("Host"); !strings.HasPrefix(got, svcHost) {
		t.Fatalf("upstream Host %q", got)
	}
	want := map[string]string{
		"reporter": "waypoint", "response_code": "200", "response_flags": "-",
		"source_workload": "productpage-v1", "source_workload_namespace": "default", "source_principal": clientID.String(),
		"destination_workload": "reviews-v1", "destination_workload_namespace": "default", "destination_principal": backendID.String(),
		"destination_service": svcHost, "destination_service_name": "reviews", "destination_version": "v1",
		"connection_security_policy": "mutual_tls", "request_protocol": "http",
	}
	// Telemetry is recorded right after the response is sent.
	await.True(t, "the request counted by the waypoint reporter", func() bool { return counterValue(t, e, map[string]string{"reporter": "waypoint"}) == 1 })
	if v := counterValue(t, e, want); v != 1 {
		t.Fatalf("istio_requests_total%v = %v", want, v)
	}
	mfs, _ := e.reg.Gather()
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"} {
		if !names[n] {
			t.Fatalf("metric %s missing", n)
		}
	}
	golden.Assert(t, "testdata/metric-labels-waypoint.golden", labelNames(t, e.reg))
	var line map[string]any
	await.True(t, "req-1 in the access log", func() bool { return strings.Contains(e.accessLog(), "req-1") })
	sc := bufio.NewScanner(strings.NewReader(e.accessLog()))
	for sc.Scan() {
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("access log line is not JSON: %q", sc.Text())
		}
	}
	for k, v := range map[string]any{"method": "GET", "path": "/reviews/7", "response_code": float64(200), "route_name": "default/reviews.0",
		"upstream_cluster": clusterName(""), "upstream_host": b.addr.String(), "downstream_remote_address": "10.0.0.7",
		"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "request_id": "req-1", "msg": "access", "level": "INFO",
		"response_flags": "-", "attempts": float64(1)} {
		if line[k] != v {
			t.Errorf("access log %s = %v, want %v (line %v)", k, line[k], v, line)
		}
	}
	for _, k := range []string{"time", "start_time"} {
		if s, _ := line[k].(string); !timeParses(s) {
			t.Errorf("access log %s = %v, want an RFC 3339 time", k, line[k])
		}
	}
	if d, ok := line["duration_ms"].(float64); !ok || d <= 0 {
		t.Errorf("access log duration_ms = %v, want a positive number", line["duration_ms"])
	}
}

func timeParses(s string) bool {
	_, err := time.Parse(time.RFC3339Nano, s)
	return err == nil
}

func TestUnknownAuthorityRefused(t *testing.T) {
	e := newEnv(t)
	e.simple(nil, startBackend(t, "a", nil))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	_, err := e.dial(ctx, "10.1.2.3:80")
	var re *hbone.RefusedError
	if !errors.As(err, &re) || re.Status != http.StatusServiceUnavailable {
		t.Fatalf("CONNECT to an unknown destination: %v, want refused 503", err)
	}
	// Same VIP, other port: no chain either.
	if _, err := e.dial(ctx, vip+":1234"); !errors.As(err, &re) {
		t.Fatalf("CONNECT to an unknown port: %v", err)
	}
}

func TestBadResourceRejectedRestServes(t *testing.T) {
	e := newEnv(t)
	b := startBackend(t, "a", nil)
	e.simple(nil, b)
	c := e.httpClient(vipAuthority())
	if code, _ := get(t, c, "/", nil); code != 200 {
		t.Fatalf("status %d", code)
	}
	// A cluster update with one bad cluster: NACKed, the good one applied,
	// the bad one's previous version kept.
	other := edsCluster("outbound|80||other.default.svc.cluster.local")
	bad := edsCluster(clusterName(""), func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_LOAD_BALANCING_POLICY_CONFIG })
	err := e.push(resourcev3.ClusterType, other, bad)
	if err == nil || !strings.Contains(err.Error(), clusterName("")) {
		t.Fatalf("bad cluster accepted: %v", err)
	}
	if e.wp.Upstream.cluster("outbound|80||other.default.svc.cluster.local") == nil {
		t.Fatal("the good cluster of the same response was not applied")
	}
	if code, _ := get(t, c, "/", nil); code != 200 {
		t.Fatalf("after the rejected cluster: %d", code)
	}
	// A route with an invalid regex: rejected, the old route keeps serving.
	badRoute := routeConfig(chainKey, svcHost, &routev3.Route{Name: "bad",
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "(unclosed"}}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: clusterName("")}}}})
	if err := e.push(resourcev3.RouteType, badRoute); err == nil {
		t.Fatal("route with an invalid regex accepted")
	}
	if code, name := get(t, c, "/", nil); code != 200 || name != "a" {
		t.Fatalf("after the rejected route: %d from %q", code, name)
	}
	// A bad endpoint (HBONE without identity) is rejected too.
	if err := e.push(resourcev3.EndpointType, cla(clusterName(""), epSpec{addr: b.addr, tunnel: "HBONE", health: corev3.HealthStatus_HEALTHY})); err == nil {
		t.Fatal("HBONE endpoint without identity accepted")
	}
	if code, _ := get(t, c, "/", nil); code != 200 {
		t.Fatalf("after the rejected endpoints: %d", code)
	}
	if len(e.wp.Store.Rejected()) != 3 {
		t.Fatalf("rejected: %v", e.wp.Store.Rejected())
	}
}

func TestWorkloadChainPassthrough(t *testing.T) {
	e := newEnv(t)
	b := startBackend(t, "pod", nil)
	chain := "workload|" + b.addr.Addr().String()
	passthrough := &clusterv3.Cluster{Name: "passthrough", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy: clusterv3.Cluster_CLUSTER_PROVIDED, ConnectTimeout: durationpb.New(10 * time.Second)}
	e.mustPush(resourcev3.ClusterType, passthrough)
	e.mustPush(resourcev3.EndpointType)
	e.mustPush(resourcev3.ListenerType, listener(hcmChain(t, chain, b.addr.Addr().String(), 0, chain)))
	e.mustPush(resourcev3.RouteType, routeConfig(chain, chain, routeTo("workload", "passthrough")))
	c := e.httpClient(b.addr.String())
	if code, name := get(t, c, "/", nil); code != 200 || name != "pod" {
		t.Fatalf("passthrough: %d from %q", code, name)
	}
}

func TestUpstreamIdentityVerified(t *testing.T) {
	e := newEnv(t)
	b := startBackend(t, "a", nil)
	e.mustPush(resourcev3.ClusterType, edsCluster(clusterName("")))
	e.mustPush(resourcev3.EndpointType, cla(clusterName(""), epSpec{addr: b.addr, tunnel: "HBONE", identity: strangerID.String(), health: corev3.HealthStatus_HEALTHY}))
	e.mustPush(resourcev3.ListenerType, listener(hcmChain(t, chainKey, vip, vipPort, chainKey)))
	e.mustPush(resourcev3.RouteType, routeConfig(chainKey, svcHost, routeTo("r", clusterName(""))))
	c := e.httpClient(vipAuthority())
	if code, _ := get(t, c, "/", nil); code != http.StatusServiceUnavailable || b.hits.Load() != 0 {
		t.Fatalf("endpoint presenting the wrong identity: %d, hits %d", code, b.hits.Load())
	}
	await.True(t, "the upstream failure (UF) in the access log", func() bool { return strings.Contains(e.accessLog(), `"response_flags":"UF`) })
}

func TestChainSelection(t *testing.T) {
	mk := func(name string, port uint32, prefixes ...string) *chain {
		c := &chain{name: name, port: port}
		for _, p := range prefixes {
			c.prefixes = append(c.prefixes, mustPrefix(p))
		}
		return c
	}
	cs := newChainSet([]*chain{
		mk("svc:80", 80, "10.96.0.1/32"),
		mk("svc:81", 81, "10.96.0.1/32"),
		mk("workload|10.1.0.5", 0, "10.1.0.5/32"),
		mk("net:80", 80, "10.1.0.0/16"),
		mk("any:80", 80),
	})
	for _, tc := range []struct{ dst, want string }{
		{"10.96.0.1:80", "svc:80"},
		{"10.96.0.1:81", "svc:81"},
		{"10.96.0.1:82", ""},
		{"10.1.0.5:80", "net:80"},
		{"10.1.0.5:8080", "workload|10.1.0.5"},
		{"10.1.9.9:80", "net:80"},
		{"192.168.0.1:80", "any:80"},
		{"192.168.0.1:81", ""},
	} {
		got := ""
		if c := cs.match(mustAddrPort(tc.dst)); c != nil {
			got = c.name
		}
		if got != tc.want {
			t.Errorf("%s: chain %q, want %q", tc.dst, got, tc.want)
		}
	}
}

// ---- helpers ----

// tryGet is get for other goroutines: 0 on error.
func tryGet(c *http.Client, path string) int {
	resp, err := c.Get("http://" + svcHost + ":" + strconv.Itoa(vipPort) + path)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// counterValue sums istio_requests_total over series matching labels.
func counterValue(t *testing.T, e *env, labels map[string]string) float64 {
	t.Helper()
	return metricValue(t, e, "istio_requests_total", labels)
}

// metricValue sums the counter series of name that carry labels.
func metricValue(t *testing.T, e *env, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			got := labelMap(m)
			for k, v := range labels {
				if got[k] != v {
					continue series
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

func labelMap(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// TestRouteUpdateAppliesToKeptAliveConnection: a client that keeps its
// connection (one HBONE stream) alive gets the new routes on its next
// request, as Envoy applies RDS updates; Bookinfo's productpage does this.
func TestRouteUpdateAppliesToKeptAliveConnection(t *testing.T) {
	e := newEnv(t)
	e.subsets(map[string]*backend{"v1": startBackend(t, "reviews-v1", nil), "v2": startBackend(t, "reviews-v2", nil)})
	e.mustPush(resourcev3.RouteType, routeConfig(chainKey, svcHost, routeTo("default/reviews.0", clusterName("v1"))))

	var streams atomic.Int32
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			streams.Add(1)
			return e.dialConn(ctx, vipAuthority())
		},
		DisableCompression: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: testTimeout}
	if code, b := get(t, c, "/reviews/1", nil); code != 200 || b != "reviews-v1" {
		t.Fatalf("before the update: %d from %q", code, b)
	}
	e.mustPush(resourcev3.RouteType, routeConfig(chainKey, svcHost, routeTo("default/reviews.0", clusterName("v2"))))
	if code, b := get(t, c, "/reviews/1", nil); code != 200 || b != "reviews-v2" {
		t.Fatalf("after the update, same connection: %d from %q, want reviews-v2", code, b)
	}
	if n := streams.Load(); n != 1 {
		t.Fatalf("the client opened %d streams; the test needs the connection kept alive", n)
	}
}
