package bpf

import (
	"encoding/binary"
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
