// Package cluster runs a real Kubernetes cluster on one machine without a
// container engine: etcd and the Kubernetes control plane in a network
// namespace of their own, and N nodes that are network namespaces joined by a
// bridge in a fabric namespace. Each node runs kube-proxy and weft-kubelet,
// which runs containers as processes in per-pod network and mount
// namespaces wired by the real CNI plugins.
package cluster

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Config describes a local cluster. The zero value of every field but
// AssetsDir and BinDir has a working default (see Defaults).
type Config struct {
	// Name scopes everything the cluster creates on the machine: network
	// namespaces (weft-<name>-*), the cgroup and the state directory.
	Name string
	// Nodes is the number of worker nodes.
	Nodes int
	// StateDir holds certificates, kubeconfigs, node roots, logs and state.
	StateDir string
	// AssetsDir holds the third-party binaries (make kube-assets).
	AssetsDir string
	// BinDir holds the project's own binaries (make build).
	BinDir string
	// ImageMaps are extra image-map files for the kubelets (the cluster adds
	// its own for the add-ons).
	ImageMaps []string
	// APIPort is the host loopback port that forwards to kube-apiserver;
	// 0 picks a free port.
	APIPort int
	// Index separates the address plans of clusters that run at once
	// (0-15, MaxIndex; see podOctet for the pod CIDRs), above all the host
	// loopback addresses of LoadBalancer Services (127.<100+index>.0.0/16).
	Index int
	// Region and Zones are the nodes' topology.kubernetes.io/region and
	// zone labels: node i is in Zones[i mod len(Zones)], so that a
	// multi-node cluster spans zones as a cloud cluster does. Defaults:
	// "region-1" and one zone per node, "zone-a", "zone-b", ...
	Region string
	Zones  []string
}

// Defaults fills in unset fields.
func (c *Config) Defaults() {
	if c.Name == "" {
		c.Name = "weft"
	}
	if c.Nodes == 0 {
		c.Nodes = 2
	}
	if c.StateDir == "" {
		c.StateDir = filepath.Join("_output", "clusters", c.Name)
	}
	if c.Region == "" {
		c.Region = "region-1"
	}
	if len(c.Zones) == 0 {
		for i := range c.Nodes {
			c.Zones = append(c.Zones, fmt.Sprintf("zone-%c", 'a'+i%26))
		}
	}
}

// Topology labels of the nodes (Kubernetes' well-known ones).
const (
	LabelRegion = "topology.kubernetes.io/region"
	LabelZone   = "topology.kubernetes.io/zone"
)

// NodeZone is the zone of node i, "" for none.
func (c *Config) NodeZone(i int) string {
	if len(c.Zones) == 0 {
		return ""
	}
	return c.Zones[i%len(c.Zones)]
}

// nodeLabels is weft-kubelet's --node-labels value for node i: the
// topology labels that are set.
func (c *Config) nodeLabels(i int) string {
	var out []string
	for k, v := range map[string]string{LabelRegion: c.Region, LabelZone: c.NodeZone(i)} {
		if v != "" {
			out = append(out, k+"="+v)
		}
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,9}$`)

// Validate reports every problem with the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	if !nameRE.MatchString(c.Name) {
		errs = append(errs, fmt.Errorf("cluster name %q: want 1-10 lowercase letters or digits starting with a letter (it prefixes interface and namespace names)", c.Name))
	}
	if c.Nodes < 1 || c.Nodes > 8 {
		errs = append(errs, fmt.Errorf("nodes: %d out of range 1-8", c.Nodes))
	}
	if c.APIPort < 0 || c.APIPort > 65535 {
		errs = append(errs, fmt.Errorf("api port %d out of range", c.APIPort))
	}
	for _, v := range append([]string{c.Region}, c.Zones...) {
		if msgs := validation.IsValidLabelValue(v); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("region or zone %q: not a label value (%s)", v, strings.Join(msgs, "; ")))
		}
	}
	if c.Index < 0 || c.Index > MaxIndex {
		errs = append(errs, fmt.Errorf("index %d out of range 0-%d", c.Index, MaxIndex))
	}
	for _, b := range requiredAssets {
		if _, err := os.Stat(filepath.Join(c.AssetsDir, b)); err != nil {
			errs = append(errs, fmt.Errorf("kube asset %s missing in %s: run `make kube-assets`", b, c.AssetsDir))
		}
	}
	for _, b := range requiredBins {
		if _, err := os.Stat(filepath.Join(c.BinDir, b)); err != nil {
			errs = append(errs, fmt.Errorf("binary %s missing in %s: run `make build`", b, c.BinDir))
		}
	}
	for _, m := range c.ImageMaps {
		if _, err := os.Stat(m); err != nil {
			errs = append(errs, fmt.Errorf("image map: %w", err))
		}
	}
	return errors.Join(errs...)
}

var (
	requiredAssets = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "coredns", "host-local", "ptp", "loopback", "portmap"}
	requiredBins   = []string{"weft-kubelet"}
)

// Well-known cluster addresses. Service and pod ranges are the same in every
// cluster (they only exist inside the nodes' namespaces); the fabric range
// is per Index so that several clusters' node addresses never collide.
const (
	serviceCIDR   = "10.96.0.0/16"
	kubernetesVIP = "10.96.0.1"
	clusterDNS    = "10.96.0.10"
	clusterDomain = "cluster.local"
	apiPort       = 6443
)

// plan is the address plan of one cluster.
type plan struct {
	fabric   netip.Prefix // node uplinks and the control plane
	podCIDR  netip.Prefix // all pods (kube-proxy's cluster CIDR)
	gateway  netip.Addr   // the fabric bridge
	apiAddr  netip.Addr   // the control plane's address
	nodeAddr []netip.Addr
	nodePods []netip.Prefix
}

// MaxIndex is the highest Config.Index.
const MaxIndex = 15

// podOctet is the second octet of the pod CIDR of index: 10.244-10.255
// for indexes 0-11 (the plan before there were more), 10.240-10.243 for
// 12-15 (10.256 does not exist). Every index gets its own /16.
func podOctet(index int) byte {
	if index < 12 {
		return byte(244 + index)
	}
	return byte(240 + index - 12)
}

func newPlan(index, nodes int) plan {
	p := plan{
		fabric:  netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 250, byte(index), 0}), 24),
		podCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, podOctet(index), 0, 0}), 16),
	}
	p.gateway = netip.AddrFrom4([4]byte{10, 250, byte(index), 1})
	p.apiAddr = netip.AddrFrom4([4]byte{10, 250, byte(index), 2})
	for i := range nodes {
		p.nodeAddr = append(p.nodeAddr, netip.AddrFrom4([4]byte{10, 250, byte(index), byte(10 + i)}))
		p.nodePods = append(p.nodePods, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, podOctet(index), byte(i), 0}), 24))
	}
	return p
}

// nodeName is the Kubernetes name of node i.
func nodeName(i int) string { return fmt.Sprintf("node-%d", i) }
