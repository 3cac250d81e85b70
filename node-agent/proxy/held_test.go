package proxy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/weft-mesh/weft/internal/await"
)

// TestHeldPodIsRefused: a pod captured at CNI ADD before the control plane
// described it (Env.Held) sends nothing and receives nothing in plaintext:
// its connections are refused even to a Service VIP (which an unknown
// plaintext client would be passed through to), and a passthrough from an
// enrolled pod to its address is refused too.
func TestHeldPodIsRefused(t *testing.T) {
	m := newMesh(t)
	held := map[netip.Addr]bool{netip.MustParseAddr("127.0.0.7"): true, m.echoX.addr.Addr(): true}
	m.a.env.Held = func(ip netip.Addr) bool { return held[ip] }

	// The held pod 127.0.0.7 calls the Service.
	c := m.dsts.connect(t, m.a.outLn.Addr(), "127.0.0.7", netip.MustParseAddrPort(vip+":80"))
	if got, err := roundTrip(c, "held source"); err == nil && got != "" {
		t.Fatalf("held source reached the Service: %q", got)
	}
	// Enrolled pod A calls the held pod's address (unknown to the snapshot).
	if got, err := roundTrip(m.fromA(t, m.echoX.addr), "to a held pod"); err == nil && got != "" {
		t.Fatalf("passthrough to a held pod: %q", got)
	}
	if n := len(m.echoB.sources()) + len(m.echoX.sources()); n != 0 {
		t.Fatalf("destinations saw %d connections, want none", n)
	}
	await.True(t, "both refusals logged and counted with flag NC", func() bool {
		return strings.Count(m.a.log.String(), `"response_flags":"NC"`) == 2 &&
			counter(t, m.a.reg, "istio_tcp_connections_closed_total", map[string]string{"response_flags": FlagNotConfigured}) == 2
	})
}
