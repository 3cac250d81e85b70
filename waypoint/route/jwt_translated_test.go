package route

import (
	"encoding/json"
	"os"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	// The golden snapshots' access loggers and tracers, for protojson.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
)

// translatedChains compiles every HTTP chain of the waypoint
// control/waypoint renders for the golden case requestauth (regenerated
// with its -update), the inline JWKS of issuer testing@secure.istio.io
// replaced with jwks (the case has Istio's demo key, whose private half
// the test lacks).
func translatedChains(t *testing.T, jwks string) map[string]*Pipeline {
	return goldenPipelines(t, "requestauth", "waypoints", "default/waypoint", func(hcm *hcmv3.HttpConnectionManager) {
		for _, f := range hcm.HttpFilters {
			if f.Name == "envoy.filters.http.jwt_authn" {
				f.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: withDemoJWKS(t, f.GetTypedConfig(), jwks)}
			}
		}
	}, Options{})
}

// goldenPipelines compiles every HTTP chain of snapshot key (in section
// "waypoints" or "gateways") of control/waypoint's golden case name, after
// edit (nil: none): what the waypoint runs of that translation.
func goldenPipelines(t *testing.T, name, section, key string, edit func(*hcmv3.HttpConnectionManager), opts Options) map[string]*Pipeline {
	t.Helper()
	raw, err := os.ReadFile("../../control/waypoint/testdata/" + name + "/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage
	var snaps map[string]struct {
		Listeners []json.RawMessage `json:"listeners"`
		Routes    []json.RawMessage `json:"routes"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(doc[section], &snaps); err != nil {
		t.Fatal(err)
	}
	snap := snaps[key]
	rcs := map[string]*routev3.RouteConfiguration{}
	for _, r := range snap.Routes {
		rc := &routev3.RouteConfiguration{}
		if err := protojson.Unmarshal(r, rc); err != nil {
			t.Fatal(err)
		}
		rcs[rc.Name] = rc
	}
	out := map[string]*Pipeline{}
	for _, lj := range snap.Listeners {
		var l listenerv3.Listener
		if err := protojson.Unmarshal(lj, &l); err != nil {
			t.Fatal(err)
		}
		for _, fc := range l.FilterChains {
			hcm := &hcmv3.HttpConnectionManager{}
			if err := fc.Filters[len(fc.Filters)-1].GetTypedConfig().UnmarshalTo(hcm); err != nil {
				continue // a TCP chain
			}
			if edit != nil {
				edit(hcm)
			}
			p, err := CompileWithOptions(hcm, rcs[hcm.GetRds().GetRouteConfigName()], newFake(nil), opts)
			if err != nil {
				t.Fatalf("chain %s: the translation is rejected: %v", fc.Name, err)
			}
			out[fc.Name] = p
		}
	}
	return out
}

func withDemoJWKS(t *testing.T, a *anypb.Any, jwks string) *anypb.Any {
	c := &jwtauthnv3.JwtAuthentication{}
	if err := a.UnmarshalTo(c); err != nil {
		t.Fatal(err)
	}
	for _, p := range c.Providers {
		if p.Issuer == testIssuer {
			p.JwksSourceSpecifier = &jwtauthnv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: jwks}}}
		}
	}
	return mustAny(t, c)
}

// TestTranslatedRequestAuthentication: the translation and the waypoint
// agree, and the case's policies decide as Istio's task says.
func TestTranslatedRequestAuthentication(t *testing.T) {
	k := newJWTKey(t, jose.RS256, "demo")
	chains := translatedChains(t, jwksOf(t, k))
	const pp, reviews = "productpage.default.svc.cluster.local:9080", "reviews.default.svc.cluster.local:9080"
	valid := k.sign(t, nil) // sub testing@secure.istio.io, as Istio's demo token
	for _, tc := range []struct {
		name, chain, method string
		kv                  []string
		want                int
		dryRun              string
	}{
		{"productpage without token", pp, "GET", nil, 403, ""},
		{"productpage with the demo principal", pp, "GET", bearer(valid), 200, ""},
		{"productpage with an invalid token", pp, "GET", bearer(newJWTKey(t, jose.RS256, "demo").sign(t, nil)), 401, ""},
		{"productpage, blocked group", pp, "GET", bearer(k.sign(t, map[string]any{"groups": []string{"blocked"}})), 403, ""},
		{"productpage, nested guest role", pp, "GET", bearer(k.sign(t, map[string]any{"realm_access": map[string]any{"roles": []string{"guest"}}})), 403, ""},
		{"productpage, guest and admin", pp, "GET", bearer(k.sign(t, map[string]any{"realm_access": map[string]any{"roles": []string{"guest", "admin"}}})), 200, ""},
		{"reviews DELETE: dry-run denial", reviews, "DELETE", bearer(valid), 200, "denied[ns[default]-policy[dry-deny-delete]-rule[0]]"},
		{"reviews GET without token: dry-run ALLOW would deny", reviews, "GET", nil, 200, "denied[none]"},
		{"reviews GET with token", reviews, "GET", bearer(valid), 200, "allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := req(tc.method, "/", append([]string{"host", "x"}, tc.kv...)...)
			w, info := serve(chains[tc.chain], r, nil)
			if w.Code != tc.want || info.DryRun != tc.dryRun {
				t.Fatalf("status %d (%s), dry run %q; want %d, %q", w.Code, info.Details, info.DryRun, tc.want, tc.dryRun)
			}
		})
	}
}
