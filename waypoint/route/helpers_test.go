package route

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ---- fake upstream ----

type call struct {
	Cluster string
	Hash    uint64
	Hashed  bool
	Method  string
	Host    string
	URI     string
	Header  http.Header
	Body    string
	BodyErr error
}

type scriptFunc func(n int, req *http.Request, cluster string) (*http.Response, error)

type fakeUp struct {
	mu     sync.Mutex
	calls  []call
	script scriptFunc
	notify chan call
}

func newFake(s scriptFunc) *fakeUp { return &fakeUp{script: s, notify: make(chan call, 64)} }

func (f *fakeUp) RoundTrip(req *http.Request, cluster string, hash uint64, hashed bool) (*http.Response, error) {
	c := call{Cluster: cluster, Hash: hash, Hashed: hashed, Method: req.Method, Host: req.Host, URI: req.URL.RequestURI(), Header: req.Header.Clone()}
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		c.Body, c.BodyErr = string(b), err
	}
	f.mu.Lock()
	n := len(f.calls)
	f.calls = append(f.calls, c)
	f.mu.Unlock()
	select {
	case f.notify <- c:
	default:
	}
	if f.script == nil {
		return resp(200, "ok"), nil
	}
	return f.script(n, req, cluster)
}

func (f *fakeUp) Calls() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

func resp(status int, body string, kv ...string) *http.Response {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body))}
}

func statuses(codes ...int) scriptFunc {
	return func(n int, _ *http.Request, _ string) (*http.Response, error) {
		if n >= len(codes) {
			n = len(codes) - 1
		}
		return resp(codes[n], "body"), nil
	}
}

// ---- proto builders ----

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func hcmWith(t testing.TB, filters ...*hcmv3.HttpFilter) *hcmv3.HttpConnectionManager {
	filters = append(filters, &hcmv3.HttpFilter{Name: "envoy.filters.http.router",
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}})
	return &hcmv3.HttpConnectionManager{StatPrefix: "test", HttpFilters: filters}
}

func httpFilter(t testing.TB, name string, m proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, m)}}
}

func faultF(t testing.TB) *hcmv3.HttpFilter {
	return httpFilter(t, "envoy.filters.http.fault", &faultv3.HTTPFault{})
}
func corsF(t testing.TB) *hcmv3.HttpFilter {
	return httpFilter(t, "envoy.filters.http.cors", &corsv3.Cors{})
}
func rbacF(t testing.TB, name string, r *rbacv3.RBAC) *hcmv3.HttpFilter {
	return httpFilter(t, name, r)
}

func rcOf(vhs ...*routev3.VirtualHost) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: "svc:80", VirtualHosts: vhs}
}

func vhOf(name string, domains []string, routes ...*routev3.Route) *routev3.VirtualHost {
	return &routev3.VirtualHost{Name: name, Domains: domains, Routes: routes}
}

func prefixMatch(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}
func pathMatch(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: p}}
}
func regexMatch(re string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
}

func toCluster(name string, m *routev3.RouteMatch, cluster string) *routev3.Route {
	return &routev3.Route{Name: name, Match: m, Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}, Timeout: durationpb.New(0)}}}
}

func withAction(name string, m *routev3.RouteMatch, a *routev3.RouteAction) *routev3.Route {
	return &routev3.Route{Name: name, Match: m, Action: &routev3.Route_Route{Route: a}}
}

func clusterAction(c string) *routev3.RouteAction {
	return &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: c}, Timeout: durationpb.New(0)}
}

func direct(name string, m *routev3.RouteMatch, status uint32, body string) *routev3.Route {
	return &routev3.Route{Name: name, Match: m, Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
		Status: status, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: body}}}}}
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}
func prefixSM(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}
func regexSM(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: s}}}
}

func hdr(name string, sm *matcherv3.StringMatcher) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}
}

func pct(n uint32, d typev3.FractionalPercent_DenominatorType) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: n, Denominator: d}
}

func hvo(k, v string, a corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: a}
}

func u32(v uint32) *wrapperspb.UInt32Value     { return wrapperspb.UInt32(v) }
func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// seqRand returns the given values in turn (then repeats the last).
func seqRand(vals ...uint64) func() uint64 {
	var mu sync.Mutex
	i := 0
	return func() uint64 {
		mu.Lock()
		defer mu.Unlock()
		v := vals[min(i, len(vals)-1)]
		i++
		return v
	}
}

func compile(t testing.TB, hcm *hcmv3.HttpConnectionManager, rc *routev3.RouteConfiguration, up Upstream, opts ...Options) *Pipeline {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	p, err := CompileWithOptions(hcm, rc, up, o)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return p
}

// serve runs one request through p and returns the recorder and Info.
func serve(p *Pipeline, r *http.Request, peer *Peer) (*httptest.ResponseRecorder, *Info) {
	ctx, info := WithInfo(r.Context())
	if peer != nil {
		ctx = WithPeer(ctx, *peer)
	}
	w := httptest.NewRecorder()
	p.ServeHTTP(w, r.WithContext(ctx))
	return w, info
}

func req(method, target string, kv ...string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(kv); i += 2 {
		if strings.EqualFold(kv[i], "host") {
			r.Host = kv[i+1]
			continue
		}
		r.Header.Add(kv[i], kv[i+1])
	}
	return r
}

func reqBody(method, target, body string) *http.Request {
	return httptest.NewRequest(method, target, strings.NewReader(body))
}

var _ = context.Background
