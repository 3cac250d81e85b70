package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// NotrackTable is the nftables table (family inet) that exempts captured
// packets from connection tracking.
const NotrackTable = "weft-capture"

// Notrack exempts captured packets (skb mark bit Mark) from conntrack, and
// so from NAT. Without it kube-proxy DNATs the SYN of a connection to a
// Service VIP after capture_outbound assigned it to the proxy: the listener
// then sees the endpoint instead of the VIP, and the handshake's ACK (looked
// up at tc ingress by its pre-NAT tuple) misses the request socket and is
// forwarded away. The rule sits in its own table at the raw priority, so it
// coexists with iptables (legacy or nft) and other nftables users.
//
// It acts on the network namespace of the calling thread.
type Notrack struct {
	Mark uint32
}

// DefaultNotrack matches DefaultPolicyRouting's mark.
func DefaultNotrack() Notrack { return Notrack{Mark: MarkCapture} }

// Install creates (or replaces) the table, atomically.
func (n Notrack) Install() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Name: NotrackTable, Family: nftables.TableFamilyINet}
	// Add+Del+Add in one batch: replaces an older table, and never fails
	// because it did not exist.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	chain := c.AddChain(&nftables.Chain{
		Name:     "prerouting",
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookPrerouting,
		Priority: nftables.ChainPriorityRaw,
	})
	mark := make([]byte, 4)
	binary.NativeEndian.PutUint32(mark, n.Mark)
	c.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mark, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: mark},
		&expr.Counter{},
		&expr.Notrack{},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install nftables table inet %s (notrack for mark %#x): %w", NotrackTable, n.Mark, err)
	}
	return nil
}

// Remove deletes the table; a missing table is not an error.
func (n Notrack) Remove() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	c.DelTable(&nftables.Table{Name: NotrackTable, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil && !errors.Is(err, os.ErrNotExist) {
		if ok, _ := n.Installed(); ok {
			return fmt.Errorf("remove nftables table inet %s: %w", NotrackTable, err)
		}
	}
	return nil
}

// Installed reports whether the table exists.
func (n Notrack) Installed() (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, err
	}
	for _, t := range tables {
		if t.Name == NotrackTable {
			return true, nil
		}
	}
	return false, nil
}
