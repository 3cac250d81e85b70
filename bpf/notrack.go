package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// NotrackTable is the nftables table (family inet) that exempts captured
// packets from connection tracking.
const NotrackTable = "weft-capture"

// Notrack exempts captured packets (skb mark bit Mark) from conntrack, and
// so from NAT. Without it kube-proxy DNATs the SYN of a connection to a
// Service VIP after capture_outbound assigned it to the proxy: the listener
// then sees the endpoint instead of the VIP, and the handshake's ACK (looked
// up at tc ingress by its pre-NAT tuple) misses the request socket and is
// forwarded away.
//
// It also exempts the proxy's own packets from addresses that are not the
// node's (mark bit SkipMark): deliveries bound to the client's address and
// answers of the transparent listeners from the original destination. The
// packets they answer are captured, so untracked; tracked one way only,
// each connection left an UNREPLIED entry for minutes, and a pod's later
// direct connection that reused the tuple (once released or uninstalled)
// had its SYN judged INVALID against it and dropped by kube-proxy's
// "ctstate INVALID -j DROP".
//
// The rules sit in their own table at the raw priority, so they coexist
// with iptables (legacy or nft) and other nftables users. They act on the
// network namespace of the calling thread.
type Notrack struct {
	Mark     uint32
	SkipMark uint32
}

// DefaultNotrack matches DefaultPolicyRouting's mark and the agent's own.
func DefaultNotrack() Notrack { return Notrack{Mark: MarkCapture, SkipMark: MarkSkip} }

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
	c.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: append(markSet(n.Mark), &expr.Counter{}, &expr.Notrack{})})
	output := c.AddChain(&nftables.Chain{
		Name:     "output",
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookOutput,
		Priority: nftables.ChainPriorityRaw,
	})
	local := make([]byte, 4)
	binary.NativeEndian.PutUint32(local, unix.RTN_LOCAL)
	c.AddRule(&nftables.Rule{Table: t, Chain: output, Exprs: append(markSet(n.SkipMark),
		&expr.Fib{Register: 1, FlagSADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: local},
		&expr.Counter{},
		&expr.Notrack{},
	)})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install nftables table inet %s (notrack for marks %#x, %#x): %w", NotrackTable, n.Mark, n.SkipMark, err)
	}
	return nil
}

// markSet matches packets whose mark has every bit of bits set.
func markSet(bits uint32) []expr.Any {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, bits)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: b, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	}
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
	return tableExists(nftables.TableFamilyINet, NotrackTable)
}

// tableExists reports whether the calling thread's netns has the table.
func tableExists(family nftables.TableFamily, name string) (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, err
	}
	tables, err := c.ListTablesOfFamily(family)
	if err != nil {
		return false, err
	}
	for _, t := range tables {
		if t.Name == name {
			return true, nil
		}
	}
	return false, nil
}
