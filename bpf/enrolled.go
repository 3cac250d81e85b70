package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Enrolled lists the enrolment maps: flags per veth ifindex and per pod IP.
// A restarted agent reads them to pick up where the previous one stopped.
func (c *Capture) Enrolled() (ifindexes map[int]uint32, ips map[netip.Addr]uint32, err error) {
	ifindexes, ips = map[int]uint32{}, map[netip.Addr]uint32{}
	var k uint32
	var v captureEnrolment
	it := c.objs.EnrolledIfindex.Iterate()
	for it.Next(&k, &v) {
		ifindexes[int(k)] = v.Flags
	}
	if err := it.Err(); err != nil {
		return nil, nil, fmt.Errorf("list enrolled veths: %w", err)
	}
	it = c.objs.EnrolledIps.Iterate()
	for it.Next(&k, &v) {
		ips[addrFromBe32(k)] = v.Flags
	}
	if err := it.Err(); err != nil {
		return nil, nil, fmt.Errorf("list enrolled pod IPs: %w", err)
	}
	return ifindexes, ips, nil
}

// addrFromBe32 undoes be32.
func addrFromBe32(k uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], k)
	return netip.AddrFrom4(b)
}

// SetLocalServiceVIPs makes the map of Service VIPs with an enrolled
// endpoint on this node equal to vips (IPv4 only; others are ignored): a
// non-enrolled pod's connections to them go to the outbound listener so that
// the agent can police plaintext to its local enrolled endpoints.
func (c *Capture) SetLocalServiceVIPs(vips map[netip.Addr]bool) error {
	want := map[uint32]bool{}
	for ip := range vips {
		if ip = ip.Unmap(); ip.Is4() {
			want[be32(ip)] = true
		}
	}
	var stale []uint32
	var k uint32
	var v uint8
	it := c.objs.LocalServiceVips.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
		delete(want, k)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list local service VIPs: %w", err)
	}
	var errs []error
	for _, k := range stale {
		if err := c.objs.LocalServiceVips.Delete(&k); err != nil {
			errs = append(errs, fmt.Errorf("remove service VIP %s: %w", addrFromBe32(k), err))
		}
	}
	one := uint8(1)
	for k := range want {
		if err := c.objs.LocalServiceVips.Put(&k, &one); err != nil {
			errs = append(errs, fmt.Errorf("add service VIP %s: %w", addrFromBe32(k), err))
		}
	}
	return errors.Join(errs...)
}
