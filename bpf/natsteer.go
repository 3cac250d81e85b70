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

// natSet holds the enrolled pod IPs (CAPTURE or DRAINING), as enrolled_ips.
const natSet = "enrolled"

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
// before the pod was enrolled keeps going direct. The rules act on the
// network namespace of the calling thread.
type NATSteering struct {
	Mark uint32 // MarkCapture: the policy-routing rule delivers locally
}

// DefaultNATSteering matches DefaultPolicyRouting's mark.
func DefaultNATSteering() NATSteering { return NATSteering{Mark: MarkCapture} }

func (n NATSteering) objects() (*nftables.Table, *nftables.Set, *nftables.Chain) {
	t := &nftables.Table{Name: NATTable, Family: nftables.TableFamilyIPv4}
	s := &nftables.Set{Table: t, Name: natSet, KeyType: nftables.TypeIPAddr}
	prio := *nftables.ChainPriorityNATDest + 10 // right after kube-proxy's DNAT
	c := &nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: &prio}
	return t, s, c
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
	t, s, ch := n.objects()
	c.AddTable(t)
	if err := c.AddSet(s, nil); err != nil {
		return fmt.Errorf("nftables set %s: %w", natSet, err)
	}
	c.AddChain(ch)
	c.FlushChain(ch)
	steer := append(n.match(s),
		&expr.Immediate{Register: 1, Data: []byte{127, 0, 0, 1}},
		&expr.Immediate{Register: 2, Data: binary.BigEndian.AppendUint16(nil, port)},
		&expr.TProxy{Family: byte(nftables.TableFamilyIPv4), TableFamily: byte(nftables.TableFamilyIPv4), RegAddr: 1, RegPort: 2},
	)
	steer = append(steer, n.setMark()...)
	steer = append(steer, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictAccept})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: steer})
	// Reached only when tproxy found no socket: no listener.
	failClosed := append(n.match(s),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}}, // SYN without ACK
		&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: failClosed})
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

// setMark ORs Mark into the packet's mark (x & ^Mark ^ Mark).
func (n NATSteering) setMark() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, ^n.Mark), Xor: binary.NativeEndian.AppendUint32(nil, n.Mark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

// SetEnrolled adds ip to the steered pods (on) or removes it (a missing
// one is not an error).
func (n NATSteering) SetEnrolled(ip netip.Addr, on bool) error {
	if !ip.Is4() {
		return fmt.Errorf("NAT steering: %s: only IPv4 is captured", ip)
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	_, s, _ := n.objects()
	el := []nftables.SetElement{{Key: ip.AsSlice()}}
	if on {
		err = c.SetAddElements(s, el)
	} else {
		err = c.SetDeleteElements(s, el)
	}
	if err == nil {
		err = c.Flush()
	}
	if err != nil && !(errors.Is(err, unix.ENOENT) && !on) {
		return fmt.Errorf("NAT steering: set %s enrolled=%v: %w", ip, on, err)
	}
	return nil
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
	t, _, _ := n.objects()
	c.DelTable(t)
	if err := c.Flush(); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove nftables table ip %s: %w", NATTable, err)
	}
	return nil
}
