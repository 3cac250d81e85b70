package cluster

import (
	"fmt"
	"net/netip"
	"strconv"
)

// Namespace names. Everything a cluster creates starts with nsPrefix(name),
// which is how `down` finds leftovers of a crashed run.
func nsPrefix(cluster string) string           { return "weft-" + cluster + "-" }
func fabricNS(cluster string) string           { return nsPrefix(cluster) + "fabric" }
func controlPlaneNS(cluster string) string     { return nsPrefix(cluster) + "cp" }
func nodeNS(cluster string, i int) string      { return nsPrefix(cluster) + nodeName(i) }
func podNSPrefix(cluster string, i int) string { return nodeNS(cluster, i) + "-" }

// setupNetwork builds the fabric: a bridge in a namespace of its own, the
// control plane's namespace and one namespace per node, each attached to the
// bridge by a veth pair whose inside end is eth0. Nodes route the other
// nodes' pod CIDRs via those nodes, so pod traffic crosses the fabric without
// encapsulation; nothing is connected to the host's network.
func setupNetwork(cluster string, p plan) error {
	fabric := fabricNS(cluster)
	bits := strconv.Itoa(p.fabric.Bits())
	steps := [][]string{
		{"netns", "add", fabric},
		{"-n", fabric, "link", "set", "lo", "up"},
		{"-n", fabric, "link", "add", "br0", "type", "bridge"},
		{"-n", fabric, "addr", "add", p.gateway.String() + "/" + bits, "dev", "br0"},
		{"-n", fabric, "link", "set", "br0", "up"},
	}
	attach := func(ns, port, addr string) {
		steps = append(steps,
			[]string{"netns", "add", ns},
			[]string{"-n", ns, "link", "set", "lo", "up"},
			[]string{"-n", fabric, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"-n", fabric, "link", "set", port, "master", "br0", "up"},
			[]string{"-n", ns, "addr", "add", addr + "/" + bits, "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
			[]string{"-n", ns, "route", "add", "default", "via", p.gateway.String()},
		)
	}
	attach(controlPlaneNS(cluster), "cp", p.apiAddr.String())
	for i, addr := range p.nodeAddr {
		attach(nodeNS(cluster, i), fmt.Sprintf("n%d", i), addr.String())
		for j, pods := range p.nodePods {
			if j != i {
				steps = append(steps, []string{"-n", nodeNS(cluster, i), "route", "add", pods.String(), "via", p.nodeAddr[j].String()})
			}
		}
		// The fabric routes pod CIDRs too, so the control plane reaches pods
		// (webhooks, aggregated APIs).
		steps = append(steps, []string{"-n", fabric, "route", "add", p.nodePods[i].String(), "via", addr.String()})
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	// Nodes and the fabric forward; rp_filter off because pod replies may
	// come back over a different interface than the kernel would pick, and
	// because rp_filter=1 with src_valid_mark=1 breaks the capture's
	// delivery to the node agent (bpf/README.md, "Marks and routing").
	for _, ns := range append([]string{fabric}, nodeNamespaces(cluster, len(p.nodeAddr))...) {
		for _, kv := range [][2]string{
			{"net.ipv4.ip_forward", "1"},
			{"net.ipv4.conf.all.rp_filter", "0"},
			{"net.ipv4.conf.default.rp_filter", "0"},
		} {
			if err := sysctl(netnsPath(ns), kv[0], kv[1]); err != nil {
				return fmt.Errorf("netns %s: %w", ns, err)
			}
		}
	}
	return nil
}

func nodeNamespaces(cluster string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, nodeNS(cluster, i))
	}
	return out
}

// FabricGateway is the fabric bridge's address: the default route of a
// network namespace attached to the fabric (pod CIDRs are routed there).
func (c *Cluster) FabricGateway() netip.Addr { return c.p.gateway }

// FabricNetns is the network namespace of the bridge that connects the
// nodes: where a packet capture sees all traffic between nodes.
func (c *Cluster) FabricNetns() string { return fabricNS(c.Config.Name) }

// NodeNetns is node i's (host) network namespace.
func (c *Cluster) NodeNetns(i int) string { return nodeNS(c.Config.Name, i) }

// NodeRoot is node's host root: the directory its pods' hostPath volumes
// resolve under (see docs/local-cluster.md, Node roots).
func (c *Cluster) NodeRoot(node string) string { return c.l.nodeRoot(node) }
