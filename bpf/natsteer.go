package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// NATTable is the nftables table (family ip) that steers DNATed
// connections to enrolled pods into the proxy (NATSteering).
const NATTable = "weft-nat-capture"

// The steered pods, by enrolment flag (enrolled_ips): captured pods' new
// DNATed connections go to the listener (or are dropped without one);
// draining pods keep only the flows the listener already owns.
const (
	natCaptured = "captured"
	natDraining = "draining"
)

// ctStatusDNAT is IPS_DST_NAT in the conntrack status bits.
const ctStatusDNAT = 1 << 5

// NATSteering steers connections that netfilter DNATed to an enrolled pod
// (NodePort, LoadBalancer and externalIPs Services, hostPorts: kube-proxy
// and the portmap plugin rewrite the destination in PREROUTING, after the
// tc capture programs ran on the node's address) into the proxy's NAT
// listener, with tproxy right after the DNAT. Without it such a connection
// reaches an enrolled pod on the node that received it in plaintext, past
// PeerAuthentication STRICT and L4 policy.
//
// The listener is its own (not the plaintext inbound one) because these
// connections stay in conntrack, unlike the ones the tc programs capture:
// the listener's answers carry no MarkSkip (which the notrack table would
// exempt), so conntrack reverses the DNAT on them and the client sees the
// address it connected to.
//
// Fail closed as the tc programs: a SYN that should be steered while no
// listener is there (agent restarting) is dropped. A flow that started
// before the pod was enrolled keeps going direct, and so do a draining
// pod's new connections (its steered flows stay with the listener). The
// rules act on the network namespace of the calling thread.
type NATSteering struct {
	Mark uint32 // MarkCapture: the policy-routing rule delivers locally
}

// DefaultNATSteering matches DefaultPolicyRouting's mark.
func DefaultNATSteering() NATSteering { return NATSteering{Mark: MarkCapture} }

func (n NATSteering) objects() (t *nftables.Table, captured, draining *nftables.Set, c *nftables.Chain) {
	t = &nftables.Table{Name: NATTable, Family: nftables.TableFamilyIPv4}
	captured = &nftables.Set{Table: t, Name: natCaptured, KeyType: nftables.TypeIPAddr}
	draining = &nftables.Set{Table: t, Name: natDraining, KeyType: nftables.TypeIPAddr}
	prio := *nftables.ChainPriorityNATDest + 10 // right after kube-proxy's DNAT
	c = &nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: &prio}
	return t, captured, draining, c
}

// Install creates the table and set if missing (keeping the set's pods:
// they outlive agent restarts, like the pinned maps) and (re)writes the
// rules to steer to the listener on port (127.0.0.1, IP_TRANSPARENT).
func (n NATSteering) Install(port uint16) error {
	if port == 0 {
		return errors.New("NAT steering: listener port 0")
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t, captured, draining, ch := n.objects()
	c.AddTable(t)
	for _, s := range []*nftables.Set{captured, draining} {
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("nftables set %s: %w", s.Name, err)
		}
	}
	c.AddChain(ch)
	c.FlushChain(ch)
	// Segments of flows the listener owns (a transparent socket has the
	// tuple), captured or draining pod: to that socket. Only these: tproxy
	// would hand any other segment to the listener, which resets a flow
	// that began before enrolment.
	for _, set := range []*nftables.Set{captured, draining} {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: n.steer(append(n.match(set), ownedFlow()...), port)})
	}
	// A captured pod's new connection: to the listener, else (tproxy found
	// none) the SYN is dropped. A draining pod's go direct.
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: n.steer(append(n.match(captured), bareSYN()...), port)})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(append(n.match(captured), bareSYN()...),
		&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install nftables table ip %s (NAT steering to port %d): %w", NATTable, port, err)
	}
	return nil
}

// match: TCP, destination-NATed, to an enrolled pod.
func (n NATSteering) match(s *nftables.Set) []expr.Any {
	le := func(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: le(ctStatusDNAT), Xor: le(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: le(0)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
	}
}

// steer is match, then tproxy to 127.0.0.1:port with Mark ORed in.
func (n NATSteering) steer(match []expr.Any, port uint16) []expr.Any {
	e := append(match,
		&expr.Immediate{Register: 1, Data: []byte{127, 0, 0, 1}},
		&expr.Immediate{Register: 2, Data: binary.BigEndian.AppendUint16(nil, port)},
		&expr.TProxy{Family: byte(nftables.TableFamilyIPv4), TableFamily: byte(nftables.TableFamilyIPv4), RegAddr: 1, RegPort: 2},
	)
	e = append(e, n.setMark()...)
	return append(e, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictAccept})
}

// bareSYN matches a TCP SYN without ACK.
func bareSYN() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
	}
}

// ownedFlow matches a segment whose tuple belongs to a transparent socket
// in this netns (the listener's accepted connections; the packet is
// addressed to the pod, where nothing else here is bound).
func ownedFlow() []expr.Any {
	return []expr.Any{
		&expr.Socket{Key: expr.SocketKeyTransparent, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{1}},
	}
}

// setMark ORs Mark into the packet's mark (x & ^Mark ^ Mark).
func (n NATSteering) setMark() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, ^n.Mark), Xor: binary.NativeEndian.AppendUint32(nil, n.Mark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

// SetEnrolment puts ip in the set of its enrolment flags (FlagCapture
// wins over FlagDraining) and takes it out of the other; flags 0 takes it
// out of both.
func (n NATSteering) SetEnrolment(ip netip.Addr, flags uint32) error {
	if !ip.Is4() {
		return fmt.Errorf("NAT steering: %s: only IPv4 is captured", ip)
	}
	_, captured, draining, _ := n.objects()
	var in, out []*nftables.Set
	switch {
	case flags&FlagCapture != 0:
		in, out = []*nftables.Set{captured}, []*nftables.Set{draining}
	case flags&FlagDraining != 0:
		in, out = []*nftables.Set{draining}, []*nftables.Set{captured}
	default:
		out = []*nftables.Set{captured, draining}
	}
	el := []nftables.SetElement{{Key: ip.AsSlice()}}
	for _, s := range out { // each on its own: a missing element fails the batch
		if err := n.setOp(s, el, false); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("NAT steering: %s out of %s: %w", ip, s.Name, err)
		}
	}
	for _, s := range in {
		if err := n.setOp(s, el, true); err != nil {
			return fmt.Errorf("NAT steering: %s into %s: %w", ip, s.Name, err)
		}
	}
	return nil
}

func (n NATSteering) setOp(s *nftables.Set, el []nftables.SetElement, add bool) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	if add {
		err = c.SetAddElements(s, el)
	} else {
		err = c.SetDeleteElements(s, el)
	}
	if err != nil {
		return err
	}
	return c.Flush()
}

// Installed reports whether the table exists.
func (n NATSteering) Installed() (bool, error) {
	return tableExists(nftables.TableFamilyIPv4, NATTable)
}

// Remove deletes the table; a missing table is not an error.
func (n NATSteering) Remove() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t, _, _, _ := n.objects()
	c.DelTable(t)
	if err := c.Flush(); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove nftables table ip %s: %w", NATTable, err)
	}
	return nil
}
