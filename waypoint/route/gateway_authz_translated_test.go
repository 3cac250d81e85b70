package route

import (
	"net/netip"
	"testing"
)

// TestTranslatedIngressAuthorization runs the ingress gateway chain that
// control/waypoint renders for its golden case ingress-authz (regenerated
// with its -update): the IP allow-list (remoteIpBlocks) on the client
// address, the root namespace's DENY on /admin, and /api denied without a
// request principal (no JWT; a forged token fails jwt_authn).
func TestTranslatedIngressAuthorization(t *testing.T) {
	pipelines := goldenPipelines(t, "ingress-authz", "gateways", "weft-ingress/weft-ingress", nil, Options{})
	p := pipelines["http.8080"]
	if p == nil {
		t.Fatalf("no chain http.8080 in %v", pipelines)
	}
	dest := netip.MustParseAddrPort("10.244.0.20:8080")
	client := func(ip string) *Peer { return &Peer{Addr: netip.MustParseAddr(ip), Dest: dest} }
	for _, tc := range []struct {
		name string
		ip   string
		path string
		hdr  []string
		want int
	}{
		{"allow-listed network", "203.0.113.9", "/productpage", nil, 200},
		{"allow-listed address", "198.51.100.7", "/productpage", nil, 200},
		{"another client", "198.51.100.8", "/productpage", nil, 403},
		{"a forged X-Forwarded-For does not make the client allow-listed", "192.0.2.1", "/productpage", []string{"X-Forwarded-For", "203.0.113.9"}, 403},
		{"admin denied mesh-wide", "203.0.113.9", "/admin/users", nil, 403},
		{"api without a token", "203.0.113.9", "/api/v1/products", nil, 403},
		{"api with a forged token", "203.0.113.9", "/api/v1/products", []string{"Authorization", "Bearer eyJhbGciOiJub25lIn0.eyJpc3MiOiJ0ZXN0aW5nQHNlY3VyZS5pc3Rpby5pbyJ9."}, 401},
	} {
		w, info := serve(p, req("GET", tc.path, tc.hdr...), client(tc.ip))
		if w.Code != tc.want {
			t.Errorf("%s: %d (%s), want %d", tc.name, w.Code, info.Details, tc.want)
		}
	}
}
