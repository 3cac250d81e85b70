package nodebench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/bpf"
	"github.com/weft-mesh/weft/internal/benchkit"
	"github.com/weft-mesh/weft/pkg/mesh"
	"github.com/weft-mesh/weft/pkg/netns"
	"github.com/weft-mesh/weft/pkg/spiffetest"
)

// Addresses of the topology (see the package documentation). They only
// exist inside the namespaces the harness creates.
const (
	fabricA, fabricB = "192.168.77.1", "192.168.77.2"
	gatewayA         = "10.10.1.1" // ptp: on every host-side veth of node-a
	gatewayB         = "10.10.2.1"
	clientIP         = "10.10.1.2"
	serverAIP        = "10.10.1.3"
	serverBIP        = "10.10.2.3"

	bulkPort = 5001 // sink: reads everything, answers one byte at EOF
	echoPort = 5002 // echo
	httpPort = 8080 // 1 KB responses

	respSize = 1024 // bytes of every HTTP response body
)

func requirePrivileged(tb testing.TB) {
	benchkit.RequireRoot(tb, "node data path harness (network namespaces, BPF programs, bpffs)")
}

func run(tb testing.TB, args ...string) {
	tb.Helper()
	benchkit.Run(tb, args...)
}

// Names of what a run creates carry its PID, so the next run can remove
// what a killed run (a test timeout) left behind.
const (
	netnsPrefix   = "wnb"             // wnb<pid>-<node or pod>
	workDirPrefix = "weft-nodebench-" // $TMPDIR/weft-nodebench-<pid>-*, holds the bpffs
)

// sweepStale removes what killed runs of this package left behind.
func sweepStale(tb testing.TB) {
	tb.Helper()
	benchkit.SweepStale(tb, netnsPrefix, workDirPrefix, "nodebench")
}

// node is one node netns with its capture and its proxy process.
type node struct {
	name, ns string // node name (Workload.node) and netns path
	nsName   string
	uplink   int // ifindex of the fabric veth
	pinDir   string
	capture  *bpf.Capture
	proxy    *benchkit.Child
	logDir   string
}

func (n *node) accessLog() string { return filepath.Join(n.logDir, n.name+"-access.log") }
func (n *node) stderrLog() string { return filepath.Join(n.logDir, n.name+"-proxy.log") }

// pod is a pod netns on a node, with the servers it runs.
type pod struct {
	spec   podSpec
	ns     string
	node   *node
	veth   int // host-side ifindex in the node netns
	ip     netip.Addr
	srv    *servers
	hostIf string
}

// harness is the whole topology.
type harness struct {
	a, b               *node
	client, srvA, srvB *pod
	pods               []*pod
	enrolled           bool
	ca                 *spiffetest.CA // the test CA of the pods' and stunnel's certificates
	tunnel             *stunnel       // the cross-node peer; nil when stunnel is not installed
	relay              *relay         // the same-node peer; nil when HAProxy is not installed
}

// newHarness builds the topology, starts both node proxies (each knowing
// the pods and the synthetic mesh of known) and attaches capture; nobody is
// enrolled yet. Everything is undone by tb.Cleanup.
func newHarness(tb testing.TB, known scale) *harness {
	tb.Helper()
	requirePrivileged(tb)
	sweepStale(tb)
	id := fmt.Sprintf("%s%d", netnsPrefix, os.Getpid())
	tmp, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", workDirPrefix, os.Getpid()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(tmp) })
	h := &harness{}

	addNetns := func(suffix string) (string, string) {
		name := id + "-" + suffix
		run(tb, "ip", "netns", "add", name)
		tb.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
				tb.Errorf("ip netns del %s: %v: %s", name, err, out)
			}
		})
		run(tb, "ip", "-n", name, "link", "set", "lo", "up")
		return name, "/run/netns/" + name
	}
	mkNode := func(name string) *node {
		n := &node{name: name, logDir: tmp}
		n.nsName, n.ns = addNetns(name)
		return n
	}
	h.a, h.b = mkNode("node-a"), mkNode("node-b")

	// Fabric: one veth pair, each end its node's uplink.
	run(tb, "ip", "link", "add", "uplink", "netns", h.a.nsName, "type", "veth", "peer", "name", "uplink", "netns", h.b.nsName)
	for _, x := range []struct {
		n          *node
		self, peer string
		remotePods string
	}{{h.a, fabricA, fabricB, "10.10.2.0/24"}, {h.b, fabricB, fabricA, "10.10.1.0/24"}} {
		run(tb, "ip", "-n", x.n.nsName, "addr", "add", x.self+"/24", "dev", "uplink")
		run(tb, "ip", "-n", x.n.nsName, "link", "set", "uplink", "up")
		run(tb, "ip", "-n", x.n.nsName, "route", "add", x.remotePods, "via", x.peer, "dev", "uplink")
		run(tb, "ip", "-n", x.n.nsName, "route", "add", "default", "via", x.peer, "dev", "uplink")
		for _, kv := range []string{"net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", "net.ipv4.conf.uplink.rp_filter=0"} {
			run(tb, "ip", "netns", "exec", x.n.nsName, "sysctl", "-qw", kv)
		}
	}

	// Pods, ptp style.
	mkPod := func(n *node, name, ip, gw, hostIf string) *pod {
		nsName, ns := addNetns(name)
		run(tb, "ip", "link", "add", hostIf, "netns", n.nsName, "type", "veth", "peer", "name", "eth0", "netns", nsName)
		run(tb, "ip", "-n", n.nsName, "addr", "add", gw+"/32", "dev", hostIf)
		run(tb, "ip", "-n", n.nsName, "link", "set", hostIf, "up")
		run(tb, "ip", "-n", n.nsName, "route", "add", ip+"/32", "dev", hostIf, "src", gw)
		run(tb, "ip", "netns", "exec", n.nsName, "sysctl", "-qw", "net.ipv4.conf."+hostIf+".rp_filter=0")
		run(tb, "ip", "-n", nsName, "addr", "add", ip+"/32", "dev", "eth0")
		run(tb, "ip", "-n", nsName, "link", "set", "eth0", "up")
		run(tb, "ip", "-n", nsName, "route", "add", gw, "dev", "eth0", "scope", "link")
		run(tb, "ip", "-n", nsName, "route", "add", "default", "via", gw, "dev", "eth0")
		p := &pod{ns: ns, node: n, ip: netip.MustParseAddr(ip), hostIf: hostIf,
			spec: podSpec{Name: name, Namespace: "bench", ServiceAccount: name, Node: n.name, IP: ip}}
		p.veth = ifindex(tb, n.ns, hostIf)
		h.pods = append(h.pods, p)
		return p
	}
	h.client = mkPod(h.a, "client", clientIP, gatewayA, "vclient")
	h.srvA = mkPod(h.a, "server-a", serverAIP, gatewayA, "vserver")
	h.srvB = mkPod(h.b, "server-b", serverBIP, gatewayB, "vserver")
	h.srvA.srv = startServers(tb, h.srvA.ns)
	h.srvB.srv = startServers(tb, h.srvB.ns)

	// bpffs, one pin directory per node.
	bpffs := filepath.Join(tmp, "bpffs")
	if err := bpf.EnsureBPFFS(bpffs); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := unix.Unmount(bpffs, unix.MNT_DETACH); err != nil {
			tb.Errorf("unmount bpffs %s: %v", bpffs, err)
		}
	})

	// Certificates: one SVID per pod, each node gets its own pods' ones.
	ca := spiffetest.NewCA(tb, spiffeid.RequireTrustDomainFromString(trustDomain))
	h.ca = ca
	bundlePEM, err := ca.Bundle().Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	bundleFile := filepath.Join(tmp, "bundle.pem")
	writeFile(tb, bundleFile, bundlePEM)
	svids := map[*node][]svidFiles{}
	var specs []podSpec
	for _, p := range h.pods {
		specs = append(specs, p.spec)
		f := svidFiles{ID: p.spec.id().String()}
		f.Cert, f.Key = writeSVID(tb, ca.Issue(tb, p.spec.id()), tmp, p.spec.Name)
		svids[p.node] = append(svids[p.node], f)
	}

	for _, n := range []*node{h.a, h.b} {
		n.pinDir = filepath.Join(bpffs, n.name)
		if err := os.Mkdir(n.pinDir, 0o700); err != nil {
			tb.Fatal(err)
		}
		h.setupCapture(tb, n)
		var cfg proxyConfig
		cfg.Node, cfg.Workloads, cfg.Known, cfg.SVIDs, cfg.Bundle, cfg.AccessLog = n.name, specs, known, svids[n], bundleFile, n.accessLog()
		cfg.Ports.Outbound, cfg.Ports.Inbound, cfg.Ports.HBONE = mesh.OutboundPort, mesh.InboundPlaintextPort, mesh.HBONEPort
		startProxy(tb, n, cfg)
		// Only now may the programs steer to the listeners.
		if err := n.capture.SetProxyPorts(mesh.OutboundPort, mesh.InboundPlaintextPort, mesh.HBONEPort); err != nil {
			tb.Fatal(err)
		}
	}
	h.tunnel = h.startStunnel(tb, ca, tmp, bundleFile)
	h.relay = h.startRelay(tb, tmp)
	return h
}

// setupCapture does in n's netns what the agent's setupCapture does, plus
// attaching the outbound program to every pod veth (the enroller's job).
func (h *harness) setupCapture(tb testing.TB, n *node) {
	tb.Helper()
	n.uplink = ifindex(tb, n.ns, "uplink")
	tb.Cleanup(func() {
		err := netns.Do(n.ns, func() error {
			var errs []error
			if n.capture != nil {
				errs = append(errs, n.capture.Close())
			}
			errs = append(errs, bpf.DefaultPolicyRouting().Remove(), bpf.DefaultNotrack().Remove())
			return errors.Join(errs...)
		})
		if err = errors.Join(err, bpf.RemovePins(n.pinDir)); err != nil {
			tb.Errorf("tear down capture on %s: %v", n.name, err)
		}
	})
	err := netns.Do(n.ns, func() error {
		var err error
		if n.capture, err = bpf.Load(n.pinDir); err != nil {
			return err
		}
		if err := bpf.DefaultPolicyRouting().Install(); err != nil {
			return err
		}
		if err := bpf.DefaultNotrack().Install(); err != nil {
			return err
		}
		for _, a := range []string{fabricA, fabricB, gatewayA, gatewayB} {
			if err := n.capture.AddBypass(netip.PrefixFrom(netip.MustParseAddr(a), 32)); err != nil {
				return err
			}
		}
		if err := n.capture.AttachInbound(n.uplink); err != nil {
			return err
		}
		for _, p := range h.pods {
			if p.node == n {
				if err := n.capture.AttachOutbound(p.veth); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("capture on %s: %v", n.name, err)
	}
}

// startProxy re-executes the test binary as n's proxy inside n's netns and
// waits until it listens. Cleanup ends it (by PID) and waits for it.
func startProxy(tb testing.TB, n *node, cfg proxyConfig) {
	tb.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	cfgFile := filepath.Join(n.logDir, n.name+"-proxy.json")
	writeFile(tb, cfgFile, raw)
	n.proxy, _ = benchkit.StartChild(tb, benchkit.SelfCommand(proxyEnv, cfgFile), benchkit.ChildOptions{
		Name:   n.name + " proxy",
		Stderr: n.stderrLog(),
		Start:  func(cmd *exec.Cmd) error { return netns.Start(cmd, n.ns) },
		Ready:  benchkit.ReadyLine(readyLine),
	})
}

// enroll switches the mesh on (all pods captured) or back to direct. Off
// is the two-step unenrol: drain, let the proxied connections close, then
// delete.
func (h *harness) enroll(tb testing.TB, on bool) {
	tb.Helper()
	if on == h.enrolled {
		return
	}
	for _, p := range h.pods {
		var err error
		if on {
			err = p.node.capture.Enroll(p.veth, p.ip)
		} else {
			err = p.node.capture.Drain(p.veth, p.ip)
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
	if !on {
		time.Sleep(100 * time.Millisecond) // the drain's grace for connections in flight
		for _, p := range h.pods {
			if err := p.node.capture.Unenroll(p.veth, p.ip); err != nil {
				tb.Fatal(err)
			}
		}
	}
	h.enrolled = on
}

func ifindex(tb testing.TB, nsPath, dev string) int {
	tb.Helper()
	var idx int
	err := netns.Do(nsPath, func() error {
		i, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		idx = i.Index
		return nil
	})
	if err != nil {
		tb.Fatalf("ifindex of %s in %s: %v", dev, nsPath, err)
	}
	return idx
}

func writeFile(tb testing.TB, path string, b []byte) {
	tb.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// dialer dials from inside a pod's netns (sockets keep their netns).
func dialer(nsPath string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, _, addr string) (net.Conn, error) {
		return netns.Dial(ctx, nsPath, addr)
	}
}

// servers are a server pod's TCP sink, echo and HTTP servers; they record
// the source IPs they see.
type servers struct {
	mu    sync.Mutex
	peers map[netip.Addr]int
}

func (s *servers) saw(a net.Addr) {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return
	}
	s.mu.Lock()
	s.peers[ap.Addr().Unmap()]++
	s.mu.Unlock()
}

func (s *servers) seen(ip netip.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peers[ip]
}
