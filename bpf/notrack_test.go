package bpf

import (
	"bufio"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
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

// TestNotrackAgentDeliveries: the agent's deliveries (sockets bound to the
// client's address, with the agent's mark) leave no conntrack entry, so a
// pod's later direct connection that reuses the tuple is not judged
// against a stale one-way entry and dropped as INVALID by kube-proxy's rule.
// The node's own connections are tracked as before.
func TestNotrackAgentDeliveries(t *testing.T) {
	tp := newTopo(t)
	podIP := netip.MustParseAddr("10.99.1.2")
	srvIP := netip.MustParseAddr("10.99.9.2")
	// kube-proxy's rule; it also makes conntrack track this netns.
	run(t, "ip", "netns", "exec", tp.node[len("/run/netns/"):], "iptables", "-A", "FORWARD",
		"-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
	c := tp.loadCapture(t, tp.wu, tp.wh1, tp.wh2)
	if err := c.Enroll(tp.wh1, podIP); err != nil {
		t.Fatal(err)
	}

	var delivery, own net.Conn
	tp.inNode(t, "a delivery from the client's IP and a connection of the node's own", func() error {
		var err1, err2 error
		delivery, err1 = transparentDialer(srvIP).Dial("tcp4", "10.99.1.2:9090")
		own, err2 = (&net.Dialer{Timeout: 3 * time.Second}).Dial("tcp4", "10.99.1.2:9090")
		return errors.Join(err1, err2)
	})
	defer own.Close()
	for _, c := range []net.Conn{delivery, own} {
		if who, err := bufio.NewReader(c).ReadString('\n'); err != nil || strings.TrimSpace(who) != "pod-app" {
			t.Fatalf("%s -> pod: greeting %q, %v, want pod-app", c.LocalAddr(), who, err)
		}
	}
	// tracked: an entry for the connection from local, either way.
	tracked := func(local net.Addr) bool {
		l := netip.MustParseAddrPort(local.String())
		var flows []*netlink.ConntrackFlow
		tp.inNode(t, "list conntrack", func() error {
			var err error
			flows, err = netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
			return err
		})
		for _, f := range flows {
			for _, d := range []netlink.IPTuple{f.Forward, f.Reverse} {
				if d.SrcIP.Equal(l.Addr().AsSlice()) && d.SrcPort == l.Port() || d.DstIP.Equal(l.Addr().AsSlice()) && d.DstPort == l.Port() {
					return true
				}
			}
		}
		return false
	}
	if !tracked(own.LocalAddr()) {
		t.Fatalf("the node's own connection %s is not tracked: the test proves nothing", own.LocalAddr())
	}
	if tracked(delivery.LocalAddr()) {
		t.Fatalf("the delivery %s -> pod left a conntrack entry", delivery.LocalAddr())
	}
	// The proxy's answers on a captured connection come from the original
	// destination: untracked too (the pod's next direct connection from
	// the same port would meet the entry in its reply direction).
	captured, who := dial(t, tp.pod, "10.200.0.1:80")
	if who != "proxy" {
		t.Fatalf("enrolled pod: answered by %q, want proxy", who)
	}
	captured.echo(t, "tracked?")
	if tracked(captured.LocalAddr()) {
		t.Fatalf("the captured connection %s -> 10.200.0.1:80 left a conntrack entry", captured.LocalAddr())
	}

	// The attack: the pod is released and a client reuses the tuple.
	port := netip.MustParseAddrPort(delivery.LocalAddr().String()).Port()
	delivery.Close()
	waitTimeWait(t, tp.node, netip.AddrPortFrom(srvIP, port), netip.AddrPortFrom(podIP, 9090))
	if err := c.Drain(tp.wh1, podIP); err != nil {
		t.Fatal(err)
	}
	dialFromPort(t, tp.srv, netip.AddrPortFrom(srvIP, port), "10.99.1.2:9090").Close()
}
