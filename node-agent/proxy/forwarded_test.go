package proxy

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/pkg/hbone"
)

// spoofTunnel opens an HBONE stream to pod B's echo as identity id, from
// the TCP source from, claiming Forwarded: for=claim, and round-trips msg.
func spoofTunnel(t *testing.T, m *mesh, id spiffeid.ID, from, claim string, msg string) (string, error) {
	t.Helper()
	d := &hbone.Dialer{SVID: m.ca.Issue(t, id), Bundle: m.ca.Bundle(),
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext}
	t.Cleanup(func() { d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h := http.Header{}
	hbone.SetForwarded(h, net.ParseIP(claim))
	s, err := d.Dial(ctx, ap(podB.ip, m.tunnelPort).String(), tlsconfig.AuthorizeID(podB.id()), m.echoB.addr.String(), h)
	if err != nil {
		return "", err
	}
	defer s.Close()
	if _, err := s.Write([]byte(msg)); err != nil {
		return "", err
	}
	s.CloseWrite()
	buf := make([]byte, len(msg))
	n, err := s.Read(buf)
	return string(buf[:n]), err
}

// TestForwardedSpoofIsIgnored is the attack of issue #13 H1: a peer with a
// valid certificate of its own claims another pod's address in Forwarded to
// pass an ipBlocks rule and to be delivered from that address. The claim is
// ignored (the tunnel's own source is used) unless the tunnel comes from a
// node and proves the identity of the workload at the claimed address.
func TestForwardedSpoofIsIgnored(t *testing.T) {
	m := newMesh(t)
	// B denies the attacker's real address; A's address is allowed.
	setPolicies(t, m.store, denyPolicy("b", "deny-d", &workloadv1.Match{SourceIps: []string{podD.ip + "/32", "127.0.0.1/32"}}))
	for _, tc := range []struct {
		name, from, claim string
		id                spiffeid.ID
	}{
		{"a pod claims another pod's address", podD.ip, podA.ip, podD.id()},
		{"a pod with the claimed pod's identity still speaks only for itself", podD.ip, podA.ip, podA.id()},
		{"a node claims an address whose identity it did not prove", "127.0.0.1", podA.ip, podC.id()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(m.echoB.sources())
			if got, err := spoofTunnel(t, m, tc.id, tc.from, tc.claim, "spoof"); err == nil && got == "spoof" {
				t.Fatalf("the spoofed stream passed a DENY on its real source %s", tc.from)
			}
			if len(m.echoB.sources()) != before {
				t.Fatalf("destination was connected (sources %v)", m.echoB.sources())
			}
		})
	}
	if v := counter(t, m.b.reg, "weft_node_agent_forwarded_ignored_total", nil); v != 3 {
		t.Errorf("forwarded_ignored_total = %v, want 3", v)
	}
}

// TestForwardedFromTheSourceNode: the source node's agent speaking for its
// pod (the tunnel from a node address, the pod's identity proven) keeps the
// pod's address, for policy and for delivery.
func TestForwardedFromTheSourceNode(t *testing.T) {
	m := newMesh(t)
	got, err := spoofTunnel(t, m, podA.id(), "127.0.0.1", podA.ip, "legit")
	if err != nil || got != "legit" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	if srcs := m.echoB.sources(); len(srcs) != 1 || srcs[0] != netip.MustParseAddr(podA.ip) {
		t.Fatalf("destination saw %v, want pod A's address %s", srcs, podA.ip)
	}
}
