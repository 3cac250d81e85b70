package bpf

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// PolicyRouting delivers captured packets locally. bpf_sk_assign does not
// bypass routing: without a local route the kernel forwards (or drops) the
// packet before the assigned socket sees it. The capture programs set Mark
// on every packet they steer, and PolicyRouting installs
//
//	ip rule add fwmark <Mark>/<Mark> lookup <Table> priority <Priority>
//	ip route add local 0.0.0.0/0 dev lo table <Table>
//
// It uses netlink directly (github.com/vishvananda/netlink) so the agent
// image needs no iproute2 and errors are typed. It acts on the network
// namespace of the calling thread.
//
// Note: rp_filter=1 together with src_valid_mark=1 on the receiving device
// breaks delivery of marked packets; leave src_valid_mark=0 or use
// rp_filter 0/2 there.
type PolicyRouting struct {
	Mark     uint32 // fwmark bit(s); also used as the mask
	Table    int
	Priority int
}

// DefaultPolicyRouting uses MarkCapture, table mesh.PolicyTable and rule
// priority mesh.PolicyPriority (after the local table at 0, before main at
// 32766).
func DefaultPolicyRouting() PolicyRouting {
	return PolicyRouting{Mark: MarkCapture, Table: mesh.PolicyTable, Priority: mesh.PolicyPriority}
}

func (p PolicyRouting) rule() *netlink.Rule {
	r := netlink.NewRule()
	r.Family = unix.AF_INET
	r.Mark = p.Mark
	mask := p.Mark
	r.Mask = &mask
	r.Table = p.Table
	r.Priority = p.Priority
	return r
}

func (p PolicyRouting) route() (*netlink.Route, error) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("find loopback device: %w", err)
	}
	_, all, _ := net.ParseCIDR("0.0.0.0/0")
	return &netlink.Route{
		LinkIndex: lo.Attrs().Index,
		Dst:       all,
		Table:     p.Table,
		Type:      unix.RTN_LOCAL,
		Scope:     unix.RT_SCOPE_HOST,
		Family:    unix.AF_INET,
	}, nil
}

func (p PolicyRouting) hasRule() (bool, error) {
	want := p.rule()
	rules, err := netlink.RuleListFiltered(unix.AF_INET, want,
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_MARK|netlink.RT_FILTER_MASK|netlink.RT_FILTER_PRIORITY)
	if err != nil {
		return false, fmt.Errorf("list ip rules: %w", err)
	}
	return len(rules) > 0, nil
}

// Install adds the rule and the local route. Idempotent.
func (p PolicyRouting) Install() error {
	if p.Mark == 0 || p.Table <= 0 {
		return fmt.Errorf("policy routing: mark %#x and table %d must be non-zero", p.Mark, p.Table)
	}
	rt, err := p.route()
	if err != nil {
		return err
	}
	if err := netlink.RouteReplace(rt); err != nil {
		return fmt.Errorf("add route local 0.0.0.0/0 dev lo table %d: %w", p.Table, err)
	}
	ok, err := p.hasRule()
	if err != nil {
		return err
	}
	if !ok {
		if err := netlink.RuleAdd(p.rule()); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add ip rule fwmark %#x/%#x lookup %d: %w", p.Mark, p.Mark, p.Table, err)
		}
	}
	return nil
}

// Remove deletes the rule and the route. Missing pieces are not an error.
func (p PolicyRouting) Remove() error {
	var errs []error
	for {
		ok, err := p.hasRule()
		if err != nil {
			errs = append(errs, err)
			break
		}
		if !ok {
			break
		}
		if err := netlink.RuleDel(p.rule()); err != nil {
			if !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete ip rule fwmark %#x lookup %d: %w", p.Mark, p.Table, err))
			}
			break
		}
	}
	rt, err := p.route()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if err := netlink.RouteDel(rt); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("delete route local 0.0.0.0/0 table %d: %w", p.Table, err))
	}
	return errors.Join(errs...)
}
