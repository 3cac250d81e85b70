package bpf

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/pkg/netns"
)

// listenNAT is the NAT listener as the agent opens it: transparent, and
// without the agent's mark (its answers must stay in conntrack).
func listenNAT(t *testing.T, nsPath, addr string) net.Listener {
	t.Helper()
	return listenWith(t, net.ListenConfig{Control: transparentControl(false)}, nsPath, addr)
}

// addNodePort DNATs TCP to port on any node address to target, as
// kube-proxy does for a NodePort (without masquerade: the client's
// address is kept, as with externalTrafficPolicy Local).
func addNodePort(t *testing.T, tp *topo, port uint16, target netip.AddrPort) {
	t.Helper()
	tp.inNode(t, "NodePort DNAT", func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tbl := c.AddTable(&nftables.Table{Name: "test-nodeport", Family: nftables.TableFamilyIPv4})
		ch := c.AddChain(&nftables.Chain{Name: "prerouting", Table: tbl, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
		c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
			&expr.Immediate{Register: 1, Data: target.Addr().AsSlice()},
			&expr.Immediate{Register: 2, Data: binary.BigEndian.AppendUint16(nil, target.Port())},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2},
		}})
		return c.Flush()
	})
}

// TestNATSteeringNetns: a NodePort connection DNATed to an enrolled pod on
// the node that received it reached the pod directly, past the proxy (the
// tc programs run before the DNAT and see only the node's address). With
// NAT steering (Capture.SteerNAT, its set kept by Enroll and Unenroll) it
// reaches the NAT listener, which sees the pod's address and the client's,
// and the client's connection works both ways (conntrack turns the
// listener's answers back into the node's address), while a flow from
// before enrolment keeps going direct. A successor agent's
// SteerNAT leaves the steering where it is until SetProxyListeners moves
// it. A draining pod's steered flows stay with the listener, its new ones go
// direct. With no listener the SYN is dropped; unenrolled, the pod is
// reached directly again.
func TestNATSteeringNetns(t *testing.T) {
	tp := newTopo(t)
	c := tp.loadCapture(t, tp.wu, tp.wh1)
	pod := netip.MustParseAddrPort("10.99.1.2:9090")
	addNodePort(t, tp, 30080, pod)
	const nodePort = "10.99.9.1:30080" // the node's address on the client's link
	nat := DefaultNATSteering()
	t.Cleanup(func() { _ = netns.Do(tp.node, func() error { return nat.Remove() }) })

	early, who := dial(t, tp.srv, nodePort) // kept open across enrolment
	if who != "pod-app" {
		t.Fatalf("before NAT steering: %q answered the NodePort, want pod-app (the bypass)", who)
	}
	drain(tp.podAppGot)

	natGot := make(chan accepted, 16)
	serve(t, listenNAT(t, tp.node, "127.0.0.1:15007"), "proxy-nat", natGot)
	tp.inNode(t, "NAT steering, enrol", func() error {
		return errors.Join(c.SteerNAT(nat, 15007), c.Enroll(tp.wh1, pod.Addr()))
	})
	early.echo(t, "a flow from before enrolment keeps going direct")
	conn, who := dial(t, tp.srv, nodePort)
	if who != "proxy-nat" {
		t.Fatalf("enrolled: %q answered the NodePort, want proxy-nat", who)
	}
	conn.echo(t, "through the NAT listener")
	expectAccepted(t, natGot, pod.String(), "10.99.9.2")
	expectNone(t, tp.podAppGot, "the pod")

	// A successor starts (its own port 15099) while this listener serves.
	next := listenNAT(t, tp.node, "127.0.0.1:15099")
	serve(t, next, "successor-nat", nil)
	tp.inNode(t, "successor's SteerNAT", func() error { return c.SteerNAT(nat, 15099) })
	if who, err := dialWho(tp.srv, nodePort, 3*time.Second); err != nil || who != "proxy-nat" {
		t.Fatalf("after a successor's SteerNAT: %q %v, want proxy-nat still", who, err)
	}
	tp.inNode(t, "successor ready", func() error {
		return c.SetProxyListeners(ProxyListeners{Outbound: 15001, Inbound: 15006, NAT: 15099, HBONE: 15008, HBONEDestination: 15008})
	})
	if who, err := dialWho(tp.srv, nodePort, 3*time.Second); err != nil || who != "successor-nat" {
		t.Fatalf("after SetProxyListeners: %q %v, want successor-nat", who, err)
	}

	// Draining: the listener keeps its flows, new connections go direct.
	kept, who := dial(t, tp.srv, nodePort)
	if who != "successor-nat" {
		t.Fatalf("before the drain: %q, want successor-nat", who)
	}
	drain(tp.podAppGot)
	tp.inNode(t, "drain", func() error { return c.Drain(tp.wh1, pod.Addr()) })
	kept.echo(t, "still through the NAT listener while draining")
	if who, err := dialWho(tp.srv, nodePort, 3*time.Second); err != nil || who != "pod-app" {
		t.Fatalf("draining: a new connection got %q %v, want pod-app (direct)", who, err)
	}
	tp.inNode(t, "enrol again", func() error { return c.Enroll(tp.wh1, pod.Addr()) })

	next.Close()
	expectHeldBack(t, tp.srv, nodePort)
	drain(tp.podAppGot)
	expectHeldBack(t, tp.srv, nodePort)
	expectNone(t, tp.podAppGot, "the pod, with no NAT listener")

	tp.inNode(t, "unenrol", func() error { return c.Unenroll(tp.wh1, pod.Addr()) })
	tp.inNode(t, "unenrol twice", func() error { return nat.SetEnrolment(pod.Addr(), 0) })
	if who, err := dialWho(tp.srv, nodePort, 3*time.Second); err != nil || who != "pod-app" {
		t.Fatalf("unenrolled: %q %v, want pod-app", who, err)
	}
}
