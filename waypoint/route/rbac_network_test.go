package route

import (
	"net/netip"
	"testing"

	rbaccfgv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// The network filter evaluates a connection as Envoy does: the peer's
// principal and the destination port match; header and path matchers see
// no request at all (a present :method never matches, its negation does).
func TestNetworkRBACConnection(t *testing.T) {
	anyPerm := &rbaccfgv3.Permission{Rule: &rbaccfgv3.Permission_Any{Any: true}}
	anyID := &rbaccfgv3.Principal{Identifier: &rbaccfgv3.Principal_Any{Any: true}}
	method := &rbaccfgv3.Permission{Rule: &rbaccfgv3.Permission_Header{Header: &routev3.HeaderMatcher{
		Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}}}
	policy := func(perm *rbaccfgv3.Permission, id *rbaccfgv3.Principal) *netrbacv3.RBAC {
		return &netrbacv3.RBAC{StatPrefix: "t.", Rules: &rbaccfgv3.RBAC{Action: rbaccfgv3.RBAC_ALLOW,
			Policies: map[string]*rbaccfgv3.Policy{"p": {Permissions: []*rbaccfgv3.Permission{perm}, Principals: []*rbaccfgv3.Principal{id}}}}}
	}
	reviews := &rbaccfgv3.Principal{Identifier: &rbaccfgv3.Principal_Authenticated_{Authenticated: &rbaccfgv3.Principal_Authenticated{
		PrincipalName: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "spiffe://cluster.local/ns/default/sa/reviews"}}}}}
	peer := Peer{ID: spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/reviews"),
		Addr: netip.MustParseAddr("10.0.0.7"), Dest: netip.MustParseAddrPort("10.96.0.30:9000")}
	for _, tc := range []struct {
		name string
		cfg  *netrbacv3.RBAC
		peer Peer
		want bool
	}{
		{"principal", policy(anyPerm, reviews), peer, true},
		{"other principal", policy(anyPerm, reviews), Peer{ID: spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/x"), Dest: peer.Dest}, false},
		{"no identity", policy(anyPerm, reviews), Peer{Addr: peer.Addr, Dest: peer.Dest}, false},
		{"port", policy(&rbaccfgv3.Permission{Rule: &rbaccfgv3.Permission_DestinationPort{DestinationPort: 9000}}, anyID), peer, true},
		{"other port", policy(&rbaccfgv3.Permission{Rule: &rbaccfgv3.Permission_DestinationPort{DestinationPort: 9001}}, anyID), peer, false},
		{"header", policy(method, anyID), peer, false},
		{"not header", policy(&rbaccfgv3.Permission{Rule: &rbaccfgv3.Permission_NotRule{NotRule: method}}, anyID), peer, true},
	} {
		n, err := CompileNetworkRBAC(tc.cfg)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		ok, details := n.Allowed(tc.peer)
		if ok != tc.want {
			t.Errorf("%s: allowed=%v (%s), want %v", tc.name, ok, details, tc.want)
		}
		if !ok && details != "rbac_access_denied_matched_policy[none]" {
			t.Errorf("%s: details %q", tc.name, details)
		}
	}
}
