package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// ResolveVeth finds a local pod's host-side veth from the node's routing
// table: CNI plugins such as ptp route each pod IP to its veth. A pod IP
// routed anywhere else (the uplink, a bridge) is ErrNotLocal.
func ResolveVeth(ip netip.Addr) (int, error) {
	routes, err := netlink.RouteGet(net.IP(ip.AsSlice()))
	if err != nil {
		return 0, fmt.Errorf("route to %s: %w", ip, err)
	}
	if len(routes) == 0 {
		return 0, fmt.Errorf("%s: no route: %w", ip, ErrNotLocal)
	}
	r := routes[0]
	if r.Gw != nil {
		return 0, fmt.Errorf("%s is routed via gateway %s: %w", ip, r.Gw, ErrNotLocal)
	}
	l, err := netlink.LinkByIndex(r.LinkIndex)
	if err != nil {
		return 0, fmt.Errorf("%s: link %d: %w", ip, r.LinkIndex, err)
	}
	if l.Type() != "veth" {
		return 0, fmt.Errorf("%s is routed to %s (%s), not a pod veth: %w", ip, l.Attrs().Name, l.Type(), ErrNotLocal)
	}
	return r.LinkIndex, nil
}

// Uplink is the node's default-route interface: where traffic from other
// nodes arrives, so where inbound capture attaches.
func Uplink(name string) (netlink.Link, error) {
	if name != "" {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("uplink %q: %w", name, err)
		}
		return l, nil
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			return netlink.LinkByIndex(r.LinkIndex)
		}
	}
	return nil, errors.New("no IPv4 default route: pass --uplink")
}

// NodeAddresses are this node's own IPv4 addresses, on every interface
// (ptp puts the pods' gateway address on their host-side veths): traffic
// from pods to them (kubelet, host-network pods) is never captured.
func NodeAddresses() ([]netip.Prefix, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, l := range links {
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", l.Attrs().Name, err)
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP.To4())
			if ok && !ip.IsLoopback() {
				out = append(out, netip.PrefixFrom(ip, 32))
			}
		}
	}
	return out, nil
}
