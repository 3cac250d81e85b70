package route

import (
	"io"
	"net/http"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/pkg/mesh"
)

func TestVirtualHostSelection(t *testing.T) {
	rc := rcOf(
		vhOf("exact", []string{"reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local:9080", "10.0.0.1:9080"}, direct("r", prefixMatch("/"), 200, "exact")),
		vhOf("suffix-long", []string{"*.default.svc.cluster.local"}, direct("r", prefixMatch("/"), 200, "suffix-long")),
		vhOf("suffix", []string{"*.local"}, direct("r", prefixMatch("/"), 200, "suffix")),
		vhOf("prefix", []string{"api.*"}, direct("r", prefixMatch("/"), 200, "prefix")),
		vhOf("any", []string{"*"}, direct("r", prefixMatch("/"), 200, "any")),
	)
	p := compile(t, nil, rc, newFake(nil))
	for _, tc := range []struct{ host, want string }{
		{"reviews.default.svc.cluster.local", "exact"},
		{"Reviews.Default.svc.cluster.local", "exact"}, // case-insensitive
		{"reviews.default.svc.cluster.local:9080", "exact"},
		{"10.0.0.1:9080", "exact"},
		{"ratings.default.svc.cluster.local", "suffix-long"}, // longest suffix wins
		{"foo.other.local", "suffix"},
		{".local", "any"}, // a wildcard must match at least one character
		{"api.example.com", "prefix"},
		{"reviews.default.svc.cluster.local:1", "any"}, // Envoy does not strip ports by default
		{"elsewhere", "any"},
	} {
		want := tc.want
		w, _ := serve(p, req("GET", "/", "host", tc.host), nil)
		if got := w.Body.String(); got != want {
			t.Errorf("host %q: vhost %q, want %q", tc.host, got, want)
		}
	}
}

func TestStripAnyHostPort(t *testing.T) {
	rc := rcOf(vhOf("a", []string{"svc"}, direct("r", prefixMatch("/"), 200, "a")))
	rc.IgnorePortInHostMatching = true
	p := compile(t, nil, rc, newFake(nil))
	w, _ := serve(p, req("GET", "/", "host", "svc:8080"), nil)
	if w.Code != 200 || w.Body.String() != "a" {
		t.Fatalf("got %d %q", w.Code, w.Body.String())
	}
}

func TestRouteMatch(t *testing.T) {
	ci := func(m *routev3.RouteMatch) *routev3.RouteMatch {
		m.CaseSensitive = wrapperspb.Bool(false)
		return m
	}
	withHeaders := func(m *routev3.RouteMatch, hs ...*routev3.HeaderMatcher) *routev3.RouteMatch {
		m.Headers = hs
		return m
	}
	withQuery := func(m *routev3.RouteMatch, qs ...*routev3.QueryParameterMatcher) *routev3.RouteMatch {
		m.QueryParameters = qs
		return m
	}
	inv := func(h *routev3.HeaderMatcher) *routev3.HeaderMatcher { h.InvertMatch = true; return h }
	present := func(name string, v bool) *routev3.HeaderMatcher {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: v}}
	}
	routes := []*routev3.Route{
		direct("jason", withHeaders(prefixMatch("/reviews"), hdr("end-user", exact("jason"))), 200, "jason"),
		direct("exact", pathMatch("/exact"), 200, "exact"),
		direct("exact-ci", ci(pathMatch("/CI")), 200, "exact-ci"),
		direct("regex", regexMatch(`/items/[0-9]+`), 200, "regex"),
		direct("regex-ci-ignored", ci(regexMatch(`/RX`)), 200, "regex-ci-ignored"),
		direct("prefix-ci", ci(prefixMatch("/Upper/")), 200, "prefix-ci"),
		direct("method", withHeaders(prefixMatch("/m"), hdr(":method", exact("POST"))), 200, "method"),
		direct("authority", withHeaders(prefixMatch("/a"), hdr(":authority", prefixSM("special."))), 200, "authority"),
		direct("scheme", withHeaders(prefixMatch("/s"), hdr(":scheme", exact("https"))), 200, "scheme"),
		direct("suffix", withHeaders(prefixMatch("/h"), hdr("x-suf", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "end"}})), 200, "suffix"),
		direct("contains", withHeaders(prefixMatch("/h"), hdr("x-con", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "MID"}, IgnoreCase: true})), 200, "contains"),
		direct("hregex", withHeaders(prefixMatch("/h"), hdr("x-re", regexSM(`v[0-9]`))), 200, "hregex"),
		direct("present", withHeaders(prefixMatch("/h"), present("x-present", true)), 200, "present"),
		direct("absent", withHeaders(prefixMatch("/abs"), present("x-gone", false)), 200, "absent"),
		direct("without", withHeaders(prefixMatch("/w"), inv(hdr("x-user", exact("bob")))), 200, "without"),
		direct("query", withQuery(prefixMatch("/q"), &routev3.QueryParameterMatcher{Name: "v", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: exact("2")}}), 200, "query"),
		direct("query-present", withQuery(prefixMatch("/q"), &routev3.QueryParameterMatcher{Name: "debug", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}}), 200, "query-present"),
		direct("multi", withHeaders(prefixMatch("/multi"), hdr("x-m", exact("a,b"))), 200, "multi"),
		direct("catchall", prefixMatch("/"), 200, "catchall"),
	}
	p := compile(t, nil, rcOf(vhOf("v", []string{"*"}, routes...)), newFake(nil))
	for _, tc := range []struct {
		name string
		r    *http.Request
		want string
	}{
		{"header match", req("GET", "/reviews/1", "end-user", "jason"), "jason"},
		{"header mismatch falls through", req("GET", "/reviews/1", "end-user", "json"), "catchall"},
		{"exact path ignores query", req("GET", "/exact?x=1"), "exact"},
		{"exact path is exact", req("GET", "/exact/more"), "catchall"},
		{"exact case-insensitive", req("GET", "/ci"), "exact-ci"},
		{"regex full match", req("GET", "/items/42"), "regex"},
		{"regex is full match only", req("GET", "/items/42/x"), "catchall"},
		{"regex ignores query", req("GET", "/items/42?a=b"), "regex"},
		{"case_sensitive ignored for regex", req("GET", "/rx"), "catchall"},
		{"prefix case-insensitive", req("GET", "/upper/x"), "prefix-ci"},
		{":method", req("POST", "/m"), "method"},
		{":method mismatch", req("GET", "/m"), "catchall"},
		{":authority", req("GET", "/a", "host", "special.svc"), "authority"},
		{":scheme http", req("GET", "/s"), "catchall"},
		{"suffix", req("GET", "/h", "x-suf", "the-end"), "suffix"},
		{"contains ignore case", req("GET", "/h", "x-con", "a-mid-b"), "contains"},
		{"header regex full", req("GET", "/h", "x-re", "v1"), "hregex"},
		{"header regex not partial", req("GET", "/h", "x-re", "v12"), "catchall"},
		{"present", req("GET", "/h", "x-present", ""), "present"},
		{"present_match false, absent", req("GET", "/abs"), "absent"},
		{"present_match false, present", req("GET", "/abs", "x-gone", "1"), "catchall"},
		{"invert: other value", req("GET", "/w", "x-user", "alice"), "without"},
		{"invert: same value", req("GET", "/w", "x-user", "bob"), "catchall"},
		{"invert: missing header does not match (Envoy)", req("GET", "/w"), "catchall"},
		{"query exact", req("GET", "/q?a=1&v=2"), "query"},
		{"query first value", req("GET", "/q?v=3&v=2"), "catchall"},
		{"query present", req("GET", "/q?debug"), "query-present"},
		{"multi-valued header joined with ','", req("GET", "/multi", "x-m", "a", "x-m", "b"), "multi"},
	} {
		w, info := serve(p, tc.r, nil)
		if got := w.Body.String(); got != tc.want {
			t.Errorf("%s: route %q, want %q", tc.name, got, tc.want)
		}
		if info.Route != tc.want {
			t.Errorf("%s: Info.Route %q, want %q", tc.name, info.Route, tc.want)
		}
	}
}

func TestScheme(t *testing.T) {
	m := prefixMatch("/")
	m.Headers = []*routev3.HeaderMatcher{hdr(":scheme", exact("https"))}
	p := compile(t, nil, rcOf(vhOf("v", []string{"*"}, direct("tls", m, 200, "tls"))), newFake(nil))
	r := req("GET", "https://example.com/")
	w, _ := serve(p, r, nil)
	if w.Body.String() != "tls" {
		t.Fatalf("got %d %q", w.Code, w.Body.String())
	}
}

func TestNoRoute(t *testing.T) {
	up := newFake(nil)
	p := compile(t, nil, rcOf(vhOf("v", []string{"svc"}, toCluster("r", pathMatch("/only"), "c"))), up)
	for _, r := range []*http.Request{req("GET", "/other", "host", "svc"), req("GET", "/only", "host", "unknown")} {
		w, info := serve(p, r, nil)
		if w.Code != 404 || info.ResponseFlags != "NR" || info.Details != "route_not_found" || w.Body.Len() != 0 {
			t.Errorf("%s %s: got %d flags %q details %q body %q", r.Host, r.URL, w.Code, info.ResponseFlags, info.Details, w.Body.String())
		}
	}
	if n := len(up.Calls()); n != 0 {
		t.Fatalf("upstream called %d times", n)
	}
}

func TestCompileErrors(t *testing.T) {
	bad := []struct {
		name string
		rc   *routev3.RouteConfiguration
		want string
	}{
		{"invalid regex", rcOf(vhOf("v", []string{"*"}, direct("r", regexMatch("(["), 200, ""))), "invalid RE2 regex"},
		{"duplicate domain", rcOf(vhOf("a", []string{"x"}), vhOf("b", []string{"X"})), "unique domains"},
		{"no action", rcOf(vhOf("v", []string{"*"}, &routev3.Route{Match: prefixMatch("/")})), "unsupported route action"},
		{"zero weights", rcOf(vhOf("v", []string{"*"}, withAction("w", prefixMatch("/"), &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "a", Weight: u32(0)}}}}}))), "total weight is 0"},
	}
	for _, tc := range bad {
		_, err := Compile(nil, tc.rc, newFake(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
	}
	// Unknown HTTP filter and missing router.
	rc := rcOf(vhOf("v", []string{"*"}))
	h := hcmWith(t)
	h.HttpFilters = h.HttpFilters[:0]
	if _, err := Compile(h, rc, newFake(nil)); err == nil || !strings.Contains(err.Error(), "router") {
		t.Errorf("missing router: %v", err)
	}
	h = hcmWith(t, httpFilter(t, "weird", &routev3.Route{}))
	if _, err := Compile(h, rc, newFake(nil)); err == nil || !strings.Contains(err.Error(), "unsupported type") {
		t.Errorf("unknown filter: %v", err)
	}
}

func TestDirectResponse(t *testing.T) {
	p := compile(t, nil, rcOf(vhOf("v", []string{"*"}, direct("d", prefixMatch("/"), 418, "teapot"))), newFake(nil))
	w, info := serve(p, req("GET", "/"), nil)
	b, _ := io.ReadAll(w.Result().Body)
	if w.Code != 418 || string(b) != "teapot" || w.Header().Get("Content-Type") != "text/plain" || info.Details != "direct_response" {
		t.Fatalf("got %d %q %v %q", w.Code, b, w.Header(), info.Details)
	}
}

// TestRoutePeerPrincipal: a filter_state matcher on the peer principal
// (VirtualService sourceNamespace) reads the verified tunnel identity
// only; headers a client in another namespace writes to claim the
// namespace (x-forwarded-client-cert, baggage, Istio's peer metadata
// headers) do not make it match.
func TestRoutePeerPrincipal(t *testing.T) {
	fromFoo := prefixMatch("/")
	fromFoo.FilterState = []*matcherv3.FilterStateMatcher{{Key: mesh.PeerPrincipalFilterState,
		Matcher: &matcherv3.FilterStateMatcher_StringMatch{StringMatch: regexSM(`spiffe://[^/]+/ns/foo/sa/[^/]+`)}}}
	p := compile(t, nil, rcOf(vhOf("v", []string{"*"}, direct("foo", fromFoo, 200, "foo"), direct("rest", prefixMatch("/"), 200, "rest"))), newFake(nil))
	peer := func(id string) *Peer { return &Peer{ID: spiffeid.RequireFromString(id)} }
	forged := []string{
		"x-forwarded-client-cert", "By=spiffe://cluster.local/ns/foo/sa/waypoint;URI=spiffe://cluster.local/ns/foo/sa/curl",
		"baggage", "k8s.namespace.name=foo,service.name=curl",
		"x-istio-peer-metadata", "ns=foo",
		"x-envoy-peer-metadata-id", "sidecar~10.0.0.1~curl.foo~foo.svc.cluster.local",
	}
	for _, tc := range []struct {
		name string
		r    *http.Request
		peer *Peer
		want string
	}{
		{"peer in foo", req("GET", "/"), peer("spiffe://cluster.local/ns/foo/sa/curl"), "foo"},
		{"peer in bar", req("GET", "/"), peer("spiffe://cluster.local/ns/bar/sa/curl"), "rest"},
		{"peer in bar forging foo headers", req("GET", "/", forged...), peer("spiffe://cluster.local/ns/bar/sa/curl"), "rest"},
		{"namespace that only starts with foo", req("GET", "/"), peer("spiffe://cluster.local/ns/foobar/sa/curl"), "rest"},
		{"no identity, forged headers", req("GET", "/", forged...), &Peer{}, "rest"},
		{"no peer at all, forged headers", req("GET", "/", forged...), nil, "rest"},
	} {
		if w, _ := serve(p, tc.r, tc.peer); w.Body.String() != tc.want {
			t.Errorf("%s: route %q, want %q", tc.name, w.Body.String(), tc.want)
		}
	}
	bad := prefixMatch("/")
	bad.FilterState = []*matcherv3.FilterStateMatcher{{Key: "io.istio.client_namespace",
		Matcher: &matcherv3.FilterStateMatcher_StringMatch{StringMatch: exact("foo")}}}
	if _, err := Compile(nil, rcOf(vhOf("v", []string{"*"}, direct("b", bad, 200, ""))), newFake(nil)); err == nil || !strings.Contains(err.Error(), "only") {
		t.Errorf("filter_state on another key: err %v, want a compile error", err)
	}
}
