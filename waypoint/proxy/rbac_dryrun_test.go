package proxy

import (
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbaccfgv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/weft-mesh/weft/internal/await"
)

// withHTTPFilter puts an HTTP filter before the router of an hcmChain.
func withHTTPFilter(t *testing.T, fc *listenerv3.FilterChain, name string, cfg *rbacv3.RBAC) *listenerv3.FilterChain {
	hcm := &hcmv3.HttpConnectionManager{}
	if err := fc.Filters[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	hcm.HttpFilters = append([]*hcmv3.HttpFilter{{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, cfg)}}}, hcm.HttpFilters...)
	fc.Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, hcm)}
	return fc
}

// TestHTTPDryRunRBAC: a dry-run DENY policy (shadow rules, as
// control/waypoint renders istio.io/dry-run) that matches every request
// lets the request through, logs the would-be denial and counts it.
func TestHTTPDryRunRBAC(t *testing.T) {
	e := newEnv(t)
	b := startBackend(t, "reviews-v1", nil)
	e.simple(nil, b)
	const policy = "ns[default]-policy[dry]-rule[0]"
	deny := &rbacv3.RBAC{ShadowRulesStatPrefix: "istio_dry_run_deny_", ShadowRules: &rbaccfgv3.RBAC{Action: rbaccfgv3.RBAC_DENY,
		Policies: map[string]*rbaccfgv3.Policy{policy: {
			Permissions: []*rbaccfgv3.Permission{{Rule: &rbaccfgv3.Permission_Any{Any: true}}},
			Principals:  []*rbaccfgv3.Principal{{Identifier: &rbaccfgv3.Principal_Any{Any: true}}}}}}}
	e.mustPush(resourcev3.ListenerType, listener(withHTTPFilter(t, hcmChain(t, chainKey, vip, vipPort, chainKey), "rbac-deny", deny)))
	c := e.httpClient(vipAuthority())
	if code, _ := get(t, c, "/reviews/1", nil); code != 200 {
		t.Fatalf("status %d, want 200: a dry-run policy is never enforced", code)
	}
	labels := map[string]string{"filter_chain": chainKey, "decision": "denied"}
	await.True(t, "the would-be denial counted", func() bool {
		return metricValue(t, e, "weft_waypoint_rbac_dry_run_total", labels) == 1
	})
	want := `"rbac_dry_run":"denied[` + policy + `]"`
	await.True(t, "the would-be denial in the access log", func() bool { return strings.Contains(e.accessLog(), want) })
}
