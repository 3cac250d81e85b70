package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Legacy attachment for kernels without tcx (before 6.6): a clsact qdisc
// and a direct-action cls_bpf filter at a fixed priority and handle, so
// that a restart replaces the program atomically (FilterReplace) instead of
// adding a second filter. The filter itself keeps the program alive; there
// is no link to pin. The programs' "next" verdict (-1) is TC_ACT_UNSPEC
// there, which also means "continue".
const (
	clsactPriority = 0xc0de // tc filter priority of Weft's capture filters
	clsactHandle   = 1
)

// clsactParent is the clsact hook dir's filter hangs from.
func clsactParent(dir Direction) uint32 {
	if dir.egress() {
		return netlink.HANDLE_MIN_EGRESS
	}
	return netlink.HANDLE_MIN_INGRESS
}

func clsactFilter(dir Direction, prog *ebpf.Program, ifindex int) *netlink.BpfFilter {
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    clsactParent(dir),
			Handle:    clsactHandle,
			Protocol:  unix.ETH_P_ALL,
			Priority:  clsactPriority,
		},
		Name:         "weft_capture_" + string(dir),
		DirectAction: true,
	}
	if prog != nil {
		f.Fd = prog.FD()
	}
	return f
}

func attachClsact(dir Direction, prog *ebpf.Program, ifindex int) error {
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: ifindex,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	if err := netlink.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc to ifindex %d: %w", ifindex, err)
	}
	if err := netlink.FilterReplace(clsactFilter(dir, prog, ifindex)); err != nil {
		return fmt.Errorf("attach %s capture as cls_bpf filter on ifindex %d: %w", dir, ifindex, err)
	}
	return nil
}

// detachClsact removes Weft's filter (the clsact qdisc may be shared and
// stays). A missing device or filter is not an error.
func detachClsact(dir Direction, ifindex int) error {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return nil // device gone: its filters went with it
	}
	filters, err := netlink.FilterList(l, clsactParent(dir))
	if err != nil {
		return nil // no clsact qdisc
	}
	for _, f := range filters {
		a := f.Attrs()
		if a.Priority != clsactPriority || a.Handle != clsactHandle {
			continue
		}
		if err := netlink.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("detach %s capture filter from ifindex %d: %w", dir, ifindex, err)
		}
	}
	return nil
}

// clsactPrograms counts Weft filters on the ingress and egress of ifindex
// (for tests).
func clsactPrograms(ifindex int) (int, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		filters, err := netlink.FilterList(l, parent)
		if err != nil {
			return 0, err
		}
		for _, f := range filters {
			if _, ok := f.(*netlink.BpfFilter); ok && f.Attrs().Priority == clsactPriority {
				n++
			}
		}
	}
	return n, nil
}
