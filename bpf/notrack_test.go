package bpf

import (
	"errors"
	"net/netip"
	"testing"
)

// TestNotrackKeepsServiceVIP reproduces kube-proxy: a DNAT rule turns a
// "Service VIP" into the server's address in the node's PREROUTING. A
// captured connection to the VIP must reach the proxy with the VIP as its
// original destination and complete its handshake; that needs Notrack
// (without it the SYN is DNATed and the ACK, looked up at tc by the VIP
// tuple, misses the proxy's socket).
func TestNotrackKeepsServiceVIP(t *testing.T) {
	tp := newTopo(t)
	podIP := netip.MustParseAddr("10.99.1.2")
	const vip = "10.96.0.77:80"
	run(t, "ip", "netns", "exec", tp.node[len("/run/netns/"):], "iptables", "-t", "nat", "-A", "PREROUTING",
		"-d", "10.96.0.77", "-p", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination", "10.200.0.1:80")

	c := tp.loadCapture(t, 0, tp.wh1, tp.wh2)

	// Not enrolled: kube-proxy's DNAT applies as usual.
	if _, who := dial(t, tp.pod, vip); who != "server" {
		t.Fatalf("before enrolment: VIP answered by %q, want server (DNAT)", who)
	}
	if err := c.Enroll(tp.wh1, podIP); err != nil {
		t.Fatal(err)
	}
	kept, who := dial(t, tp.pod, vip)
	if who != "proxy" {
		t.Fatalf("enrolled: VIP answered by %q, want proxy", who)
	}
	expectAccepted(t, tp.outGot, vip, podIP.String())
	kept.echo(t, "through the proxy, VIP intact")

	// A same-node client outside the mesh (pod2, attached, not enrolled)
	// reaches the VIP through kube-proxy unless the VIP has a local
	// enrolled endpoint: then the outbound listener gets it, VIP intact.
	if _, who := dial(t, tp.pod2, vip); who != "server" {
		t.Fatalf("non-enrolled client, VIP not local: answered by %q, want server", who)
	}
	if err := c.SetLocalServiceVIPs(map[netip.Addr]bool{netip.MustParseAddr("10.96.0.77"): true}); err != nil {
		t.Fatal(err)
	}
	if _, who := dial(t, tp.pod2, vip); who != "proxy" {
		t.Fatalf("non-enrolled client, VIP with a local enrolled endpoint: answered by %q, want proxy", who)
	}
	expectAccepted(t, tp.outGot, vip, "10.99.2.2")
	if err := c.SetLocalServiceVIPs(nil); err != nil {
		t.Fatal(err)
	}
	if _, who := dial(t, tp.pod2, vip); who != "server" {
		t.Fatalf("VIP removed from the map: answered by %q, want server", who)
	}

	// Remove is idempotent and really removes: the DNAT wins again for
	// new connections (the capture now breaks them, which is the point).
	tp.inNode(t, "remove notrack", func() error {
		return errors.Join(DefaultNotrack().Remove(), DefaultNotrack().Remove())
	})
	tp.inNode(t, "check removed", func() error {
		if ok, err := DefaultNotrack().Installed(); err != nil || ok {
			return errors.Join(err, errors.New("table still present"))
		}
		return nil
	})
}
