package route

import (
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"net/http"
	"net/netip"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbaccfgv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func faultRoute(t *testing.T, f *faultv3.HTTPFault, timeout time.Duration) *routev3.Route {
	r := toCluster("ratings", prefixMatch("/"), "ratings")
	r.GetRoute().Timeout = dur(timeout)
	r.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.fault": mustAny(t, f)}
	return r
}

func delay(d time.Duration, p *typev3.FractionalPercent) *faultcommonv3.FaultDelay {
	return &faultcommonv3.FaultDelay{FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: dur(d)}, Percentage: p}
}

func abort(status uint32, p *typev3.FractionalPercent) *faultv3.FaultAbort {
	return &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: status}, Percentage: p}
}

func TestFault(t *testing.T) {
	hundred := pct(100, typev3.FractionalPercent_HUNDRED)
	t.Run("abort 100%", func(t *testing.T) {
		up := newFake(nil)
		p := compile(t, hcmWith(t, faultF(t)), rcOf(vhOf("v", []string{"*"}, faultRoute(t, &faultv3.HTTPFault{Abort: abort(500, hundred)}, 0))), up)
		w, info := serve(p, req("GET", "/"), nil)
		if w.Code != 500 || w.Body.String() != "fault filter abort" || info.ResponseFlags != "FI" || len(up.Calls()) != 0 {
			t.Fatalf("%d %q %q calls %d", w.Code, w.Body.String(), info.ResponseFlags, len(up.Calls()))
		}
	})
	t.Run("abort percentage (TEN_THOUSAND)", func(t *testing.T) {
		// 10 % = 1000/10000: rand 999 -> abort, 1000 -> pass.
		for rnd, wantAbort := range map[uint64]bool{999: true, 1000: false, 10999: true} {
			up := newFake(nil)
			f := &faultv3.HTTPFault{Abort: abort(503, pct(1000, typev3.FractionalPercent_TEN_THOUSAND))}
			p := compile(t, hcmWith(t, faultF(t)), rcOf(vhOf("v", []string{"*"}, faultRoute(t, f, 0))), up, Options{Rand: seqRand(rnd)})
			w, _ := serve(p, req("GET", "/"), nil)
			if (w.Code == 503) != wantAbort {
				t.Errorf("rand %d: status %d", rnd, w.Code)
			}
		}
	})
	t.Run("MILLION denominator", func(t *testing.T) {
		f := compileFraction(pct(1, typev3.FractionalPercent_MILLION), 0)
		if !f.sample(func() uint64 { return 1_000_000 }) || f.sample(func() uint64 { return 1 }) {
			t.Fatal("million sampling")
		}
	})
	t.Run("unset percentage never fires (Envoy)", func(t *testing.T) {
		up := newFake(nil)
		p := compile(t, hcmWith(t, faultF(t)), rcOf(vhOf("v", []string{"*"}, faultRoute(t, &faultv3.HTTPFault{Abort: abort(500, nil)}, 0))), up)
		if w, _ := serve(p, req("GET", "/"), nil); w.Code != 200 {
			t.Fatalf("status %d", w.Code)
		}
	})
	t.Run("delay then forward; route timeout does not cover the delay", func(t *testing.T) {
		up := newFake(nil)
		f := &faultv3.HTTPFault{Delay: delay(150*time.Millisecond, hundred)}
		p := compile(t, hcmWith(t, faultF(t)), rcOf(vhOf("v", []string{"*"}, faultRoute(t, f, 50*time.Millisecond))), up)
		start := time.Now()
		w, info := serve(p, req("GET", "/"), nil)
		if el := time.Since(start); el < 150*time.Millisecond {
			t.Fatalf("no delay: %v", el)
		}
		if w.Code != 200 || info.ResponseFlags != "DI" || len(up.Calls()) != 1 {
			t.Fatalf("%d %q calls %d", w.Code, info.ResponseFlags, len(up.Calls()))
		}
	})
	t.Run("delay and abort", func(t *testing.T) {
		f := &faultv3.HTTPFault{Delay: delay(time.Millisecond, hundred), Abort: abort(418, hundred)}
		p := compile(t, hcmWith(t, faultF(t)), rcOf(vhOf("v", []string{"*"}, faultRoute(t, f, 0))), newFake(nil))
		w, info := serve(p, req("GET", "/"), nil)
		if w.Code != 418 || info.ResponseFlags != "DI,FI" || info.Details != "fault_filter_abort" {
			t.Fatalf("%d %q %q", w.Code, info.ResponseFlags, info.Details)
		}
	})
	t.Run("per-route config without the filter has no effect", func(t *testing.T) {
		p := compile(t, hcmWith(t), rcOf(vhOf("v", []string{"*"}, faultRoute(t, &faultv3.HTTPFault{Abort: abort(500, hundred)}, 0))), newFake(nil))
		if w, _ := serve(p, req("GET", "/"), nil); w.Code != 200 {
			t.Fatalf("status %d", w.Code)
		}
	})
	t.Run("grpc abort", func(t *testing.T) {
		f := &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 14}, Percentage: hundred}}
		p := compile(t, hcmWith(t, faultF(t)), rcOf(vhOf("v", []string{"*"}, faultRoute(t, f, 0))), newFake(nil))
		w, _ := serve(p, req("POST", "/pkg.Svc/M", "content-type", "application/grpc"), nil)
		if w.Code != 200 || w.Header().Get("Grpc-Status") != "14" {
			t.Fatalf("%d %v", w.Code, w.Header())
		}
	})
	t.Run("filter disabled per route", func(t *testing.T) {
		r := faultRoute(t, &faultv3.HTTPFault{Abort: abort(500, hundred)}, 0)
		vh := vhOf("v", []string{"*"}, r)
		r.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.fault": mustAny(t, &routev3.FilterConfig{Disabled: true})}
		vh.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.fault": mustAny(t, &faultv3.HTTPFault{Abort: abort(500, hundred)})}
		p := compile(t, hcmWith(t, faultF(t)), rcOf(vh), newFake(nil))
		if w, _ := serve(p, req("GET", "/"), nil); w.Code != 200 {
			t.Fatalf("status %d", w.Code)
		}
	})
}

func corsRoute(t *testing.T, cp *corsv3.CorsPolicy) *routev3.Route {
	r := toCluster("r", prefixMatch("/"), "c")
	r.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.cors": mustAny(t, cp)}
	return r
}

func TestCORS(t *testing.T) {
	cp := &corsv3.CorsPolicy{
		AllowOriginStringMatch: []*matcherv3.StringMatcher{exact("https://app.example"), prefixSM("https://dev.")},
		AllowMethods:           "GET,POST",
		AllowHeaders:           "x-custom",
		ExposeHeaders:          "x-exposed",
		MaxAge:                 "600",
		AllowCredentials:       wrapperspb.Bool(true),
	}
	up := newFake(nil)
	p := compile(t, hcmWith(t, corsF(t)), rcOf(vhOf("v", []string{"*"}, corsRoute(t, cp))), up)

	w, info := serve(p, req("OPTIONS", "/", "Origin", "https://app.example", "Access-Control-Request-Method", "POST"), nil)
	h := w.Header()
	if w.Code != 200 || h.Get("Access-Control-Allow-Origin") != "https://app.example" || h.Get("Access-Control-Allow-Methods") != "GET,POST" ||
		h.Get("Access-Control-Allow-Headers") != "x-custom" || h.Get("Access-Control-Max-Age") != "600" || h.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("preflight: %d %v", w.Code, h)
	}
	if len(up.Calls()) != 0 || info.Details != "cors_response" {
		t.Fatalf("preflight forwarded")
	}
	// Non-matching origin preflight is forwarded, without CORS headers.
	w, _ = serve(p, req("OPTIONS", "/", "Origin", "https://evil.example", "Access-Control-Request-Method", "POST"), nil)
	if len(up.Calls()) != 1 || w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("non-matching preflight: calls %d %v", len(up.Calls()), w.Header())
	}
	// Actual request with matching origin gets headers on the response.
	w, _ = serve(p, req("GET", "/", "Origin", "https://dev.example"), nil)
	if w.Header().Get("Access-Control-Allow-Origin") != "https://dev.example" || w.Header().Get("Access-Control-Expose-Headers") != "x-exposed" ||
		w.Header().Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("actual: %v", w.Header())
	}
	w, _ = serve(p, req("GET", "/", "Origin", "https://evil.example"), nil)
	if w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("evil origin got CORS headers")
	}
	// An RBAC denial (a later filter) passes back through the CORS encoder.
	deny := &rbacv3.RBAC{Rules: &rbaccfgv3.RBAC{Action: rbaccfgv3.RBAC_DENY, Policies: map[string]*rbaccfgv3.Policy{
		"all": {Permissions: []*rbaccfgv3.Permission{{Rule: &rbaccfgv3.Permission_Any{Any: true}}}, Principals: []*rbaccfgv3.Principal{{Identifier: &rbaccfgv3.Principal_Any{Any: true}}}}}}}
	p = compile(t, hcmWith(t, corsF(t), rbacF(t, "rbac-deny", deny)), rcOf(vhOf("v", []string{"*"}, corsRoute(t, cp))), newFake(nil))
	w, _ = serve(p, req("GET", "/", "Origin", "https://app.example"), nil)
	if w.Code != 403 || w.Header().Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("rbac+cors: %d %v", w.Code, w.Header())
	}
}

func TestRBAC(t *testing.T) {
	any := []*rbaccfgv3.Permission{{Rule: &rbaccfgv3.Permission_Any{Any: true}}}
	anyP := []*rbaccfgv3.Principal{{Identifier: &rbaccfgv3.Principal_Any{Any: true}}}
	principal := func(uri string) *rbaccfgv3.Principal {
		return &rbaccfgv3.Principal{Identifier: &rbaccfgv3.Principal_Authenticated_{Authenticated: &rbaccfgv3.Principal_Authenticated{PrincipalName: exact(uri)}}}
	}
	cidr := func(s string, bits uint32) *corev3.CidrRange {
		return &corev3.CidrRange{AddressPrefix: s, PrefixLen: u32(bits)}
	}
	pathPerm := func(sm *matcherv3.StringMatcher) *rbaccfgv3.Permission {
		return &rbaccfgv3.Permission{Rule: &rbaccfgv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: sm}}}}
	}
	methodPerm := func(m string) *rbaccfgv3.Permission {
		return &rbaccfgv3.Permission{Rule: &rbaccfgv3.Permission_Header{Header: hdr(":method", exact(m))}}
	}
	allow := &rbacv3.RBAC{Rules: &rbaccfgv3.RBAC{Action: rbaccfgv3.RBAC_ALLOW, Policies: map[string]*rbaccfgv3.Policy{
		"ns[default]-policy[viewer]-rule[0]": {
			Permissions: []*rbaccfgv3.Permission{{Rule: &rbaccfgv3.Permission_AndRules{AndRules: &rbaccfgv3.Permission_Set{Rules: []*rbaccfgv3.Permission{
				methodPerm("GET"), pathPerm(prefixSM("/api/")),
				{Rule: &rbaccfgv3.Permission_DestinationPort{DestinationPort: 9080}},
			}}}}},
			Principals: []*rbaccfgv3.Principal{{Identifier: &rbaccfgv3.Principal_OrIds{OrIds: &rbaccfgv3.Principal_Set{Ids: []*rbaccfgv3.Principal{
				principal("spiffe://cluster.local/ns/default/sa/productpage"),
				{Identifier: &rbaccfgv3.Principal_RemoteIp{RemoteIp: cidr("10.9.0.0", 16)}},
			}}}}},
		},
		"authenticated-admin": {
			Permissions: []*rbaccfgv3.Permission{{Rule: &rbaccfgv3.Permission_NotRule{NotRule: pathPerm(prefixSM("/api/"))}}},
			Principals: []*rbaccfgv3.Principal{{Identifier: &rbaccfgv3.Principal_AndIds{AndIds: &rbaccfgv3.Principal_Set{Ids: []*rbaccfgv3.Principal{
				{Identifier: &rbaccfgv3.Principal_Authenticated_{Authenticated: &rbaccfgv3.Principal_Authenticated{}}},
				{Identifier: &rbaccfgv3.Principal_Header{Header: hdr("x-admin", exact("1"))}},
			}}}}},
		},
	}}}
	deny := &rbacv3.RBAC{Rules: &rbaccfgv3.RBAC{Action: rbaccfgv3.RBAC_DENY, Policies: map[string]*rbaccfgv3.Policy{
		"ns[default]-policy[deny-delete]-rule[0]": {Permissions: []*rbaccfgv3.Permission{methodPerm("DELETE")}, Principals: anyP},
		"deny-bad-ip": {Permissions: any, Principals: []*rbaccfgv3.Principal{{Identifier: &rbaccfgv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr("192.168.1.1", 32)}}}},
	}}}
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	pp := Peer{ID: spiffeid.RequireFromPath(td, "/ns/default/sa/productpage"), Addr: netip.MustParseAddr("10.1.0.5"), Dest: netip.MustParseAddrPort("10.96.0.10:9080")}
	other := Peer{ID: spiffeid.RequireFromPath(td, "/ns/default/sa/reviews"), Addr: netip.MustParseAddr("10.1.0.6"), Dest: pp.Dest}
	anon := Peer{Addr: netip.MustParseAddr("10.9.3.3"), Dest: pp.Dest}
	bad := pp
	bad.Addr = netip.MustParseAddr("192.168.1.1")
	wrongPort := pp
	wrongPort.Dest = netip.MustParseAddrPort("10.96.0.10:8080")

	p := compile(t, hcmWith(t, rbacF(t, "rbac-deny", deny), rbacF(t, "rbac-allow", allow)), rcOf(vhOf("v", []string{"*"}, toCluster("r", prefixMatch("/"), "c"))), newFake(nil))
	for _, tc := range []struct {
		name    string
		r       *http.Request
		peer    *Peer
		want    int
		details string
	}{
		{"allowed principal", req("GET", "/api/x"), &pp, 200, "via_upstream"},
		{"wrong principal", req("GET", "/api/x"), &other, 403, "rbac_access_denied_matched_policy[none]"},
		{"remote ip allowed", req("GET", "/api/x"), &anon, 200, "via_upstream"},
		{"wrong method", req("POST", "/api/x"), &pp, 403, "rbac_access_denied_matched_policy[none]"},
		{"url_path ignores query", req("GET", "/api/x?y=/z"), &pp, 200, "via_upstream"},
		{"wrong port", req("GET", "/api/x"), &wrongPort, 403, "rbac_access_denied_matched_policy[none]"},
		{"deny wins", req("DELETE", "/api/x"), &pp, 403, "rbac_access_denied_matched_policy[ns[default]-policy[deny-delete]-rule[0]]"},
		{"deny by ip", req("GET", "/api/x"), &bad, 403, "rbac_access_denied_matched_policy[deny-bad-ip]"},
		{"not_rule + and_ids", req("GET", "/admin", "x-admin", "1"), &other, 200, "via_upstream"},
		{"and_ids needs identity", req("GET", "/admin", "x-admin", "1"), &anon, 403, "rbac_access_denied_matched_policy[none]"},
		{"no peer", req("GET", "/api/x"), nil, 403, "rbac_access_denied_matched_policy[none]"},
	} {
		w, info := serve(p, tc.r, tc.peer)
		if w.Code != tc.want || info.Details != tc.details || info.ResponseFlags != "" {
			t.Errorf("%s: %d %q flags %q, want %d %q", tc.name, w.Code, info.Details, info.ResponseFlags, tc.want, tc.details)
		}
		if tc.want == 403 && w.Body.String() != "RBAC: access denied" {
			t.Errorf("%s: body %q", tc.name, w.Body.String())
		}
	}

	// RBAC runs before the router: a request without a route is denied, not 404.
	p = compile(t, hcmWith(t, rbacF(t, "rbac-allow", allow)), rcOf(vhOf("v", []string{"x"})), newFake(nil))
	if w, _ := serve(p, req("GET", "/nothing"), &other); w.Code != 403 {
		t.Errorf("no route + deny: %d", w.Code)
	}
	// An ALLOW filter with no policies denies everything; no rules = no enforcement.
	empty := &rbacv3.RBAC{Rules: &rbaccfgv3.RBAC{Action: rbaccfgv3.RBAC_ALLOW}}
	p = compile(t, hcmWith(t, rbacF(t, "rbac-allow", empty)), rcOf(vhOf("v", []string{"*"}, toCluster("r", prefixMatch("/"), "c"))), newFake(nil))
	if w, _ := serve(p, req("GET", "/"), &pp); w.Code != 403 {
		t.Errorf("empty allow: %d", w.Code)
	}
	p = compile(t, hcmWith(t, rbacF(t, "rbac-allow", &rbacv3.RBAC{})), rcOf(vhOf("v", []string{"*"}, toCluster("r", prefixMatch("/"), "c"))), newFake(nil))
	if w, _ := serve(p, req("GET", "/"), &pp); w.Code != 200 {
		t.Errorf("no rules: %d", w.Code)
	}
	// gRPC requests get a trailers-only PERMISSION_DENIED.
	p = compile(t, hcmWith(t, rbacF(t, "rbac-allow", empty)), rcOf(vhOf("v", []string{"*"}, toCluster("r", prefixMatch("/"), "c"))), newFake(nil))
	w, _ := serve(p, req("POST", "/pkg.Svc/M", "content-type", "application/grpc"), &pp)
	if w.Code != 200 || w.Header().Get("Grpc-Status") != "7" || w.Header().Get("Grpc-Message") != "RBAC: access denied" {
		t.Errorf("grpc deny: %d %v", w.Code, w.Header())
	}
}

// TestRBACLog: an RBAC filter with action LOG (Istio's AUDIT) marks the
// requests its policies match for the access log and never denies; a
// network RBAC with LOG never refuses a connection.
func TestRBACLog(t *testing.T) {
	logDeletes := &rbacv3.RBAC{Rules: &rbaccfgv3.RBAC{Action: rbaccfgv3.RBAC_LOG, Policies: map[string]*rbaccfgv3.Policy{
		"ns[default]-policy[audit]-rule[0]": {
			Permissions: []*rbaccfgv3.Permission{{Rule: &rbaccfgv3.Permission_Header{Header: hdr(":method", exact("DELETE"))}}},
			Principals:  []*rbaccfgv3.Principal{{Identifier: &rbaccfgv3.Principal_Any{Any: true}}},
		}}}}
	p := compile(t, hcmWith(t, rbacF(t, "rbac-audit", logDeletes)), rcOf(vhOf("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "c"))), newFake(nil))
	for method, want := range map[string]string{"DELETE": "ns[default]-policy[audit]-rule[0]", "GET": ""} {
		w, info := serve(p, req(method, "/x"), nil)
		if w.Code != 200 || info.Audit != want {
			t.Errorf("%s: %d, audit %q; want 200 and audit %q", method, w.Code, info.Audit, want)
		}
	}
	n, err := CompileNetworkRBAC(&netrbacv3.RBAC{Rules: logDeletes.Rules})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := n.Allowed(Peer{}); !ok {
		t.Error("network RBAC with action LOG refused a connection")
	}
}
