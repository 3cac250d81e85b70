package dns

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/bpf"
	"github.com/weft-mesh/weft/pkg/mesh"
	"github.com/weft-mesh/weft/pkg/netns"
)

// The netns topology of TestDNSCaptureNetns: an enrolled pod (10.98.1.2)
// whose resolver is 10.98.53.53, a DNS server in the srv netns that
// answers every name with 192.0.2.1 and reports who asked.
const (
	netnsPodIP    = "10.98.1.2"
	netnsNodeIP   = "10.98.9.1"
	netnsResolver = "10.98.53.53:53"
)

// TestDNSCaptureNetns proves DNS capture on this kernel with real sockets:
// tcx steers the pod's UDP and TCP queries to the proxy's transparent
// sockets (UDP by sk_assign; IP_RECVORIGDSTADDR tells the original
// resolver), mesh hosts are answered from the original destination's
// address and port (the pod's connected socket accepts it), other names
// are forwarded from the node with the skip mark (not captured again), and
// with the proxy gone the pod resolves through its own server (fail open).
func TestDNSCaptureNetns(t *testing.T) {
	node, pod, asked := dnsTopo(t)
	helper := startHelper(t, node)

	for _, network := range []string{"udp", "tcp"} {
		if got := resolve(t, pod, network, "api.example.com."); !slices.Equal(got, []string{"240.240.44.61"}) {
			t.Errorf("%s: mesh host answered %v, want its VIP from the proxy", network, got)
		}
		drainAsked(asked)
		if got := resolve(t, pod, network, "www.example.org."); !slices.Equal(got, []string{"192.0.2.1"}) {
			t.Errorf("%s: other name answered %v, want the resolver's answer", network, got)
		}
		if from := <-asked; from != netnsNodeIP {
			t.Errorf("%s: the resolver was asked by %s, want the node (%s): forwarded by the proxy", network, from, netnsNodeIP)
		}
	}

	t.Log("proxy gone: the pod's queries reach its resolver directly (fail open)")
	helper.stop(t)
	drainAsked(asked)
	for _, network := range []string{"udp", "tcp"} {
		if got := resolve(t, pod, network, "api.example.com."); !slices.Equal(got, []string{"192.0.2.1"}) {
			t.Errorf("%s without the proxy: %v, want the resolver's answer", network, got)
		}
		if from := <-asked; from != netnsPodIP {
			t.Errorf("%s without the proxy: the resolver was asked by %s, want the pod", network, from)
		}
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipUnlessRequired(t, "needs root (network namespaces, BPF)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		skipUnlessRequired(t, "needs iproute2")
	}
}

// skipUnlessRequired skips the test for reason, or fails it where every
// test must run (WEFT_E2E_REQUIRE=1: make test, CI).
func skipUnlessRequired(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("WEFT_E2E_REQUIRE") == "1" {
		t.Fatalf("WEFT_E2E_REQUIRE=1 but %s", reason)
	}
	t.Skip(reason)
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// dnsTopo builds node, pod and srv netns, loads capture in the node with
// DNS capture on and the pod enrolled, and serves DNS in srv. asked gets
// the source address of every query srv receives.
func dnsTopo(t *testing.T) (node, pod string, asked chan string) {
	requireRoot(t)
	id := fmt.Sprintf("wdns%d", os.Getpid()%100000)
	for _, n := range []string{"node", "pod", "srv"} {
		ipCmd(t, "netns", "add", id+"-"+n)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", id+"-"+n).Run() })
		ipCmd(t, "-n", id+"-"+n, "link", "set", "lo", "up")
	}
	wire := func(peer, hostDev, hostIP, peerIP string) {
		ipCmd(t, "link", "add", hostDev, "netns", id+"-node", "type", "veth", "peer", "name", "eth0", "netns", id+"-"+peer)
		ipCmd(t, "-n", id+"-node", "addr", "add", hostIP+"/24", "dev", hostDev)
		ipCmd(t, "-n", id+"-node", "link", "set", hostDev, "up")
		ipCmd(t, "-n", id+"-"+peer, "addr", "add", peerIP+"/24", "dev", "eth0")
		ipCmd(t, "-n", id+"-"+peer, "link", "set", "eth0", "up")
		ipCmd(t, "-n", id+"-"+peer, "route", "add", "default", "via", hostIP)
	}
	wire("pod", "wh", "10.98.1.1", netnsPodIP)
	wire("srv", "wu", netnsNodeIP, "10.98.9.2")
	ipCmd(t, "-n", id+"-srv", "addr", "add", "10.98.53.53/32", "dev", "lo")
	ipCmd(t, "-n", id+"-node", "route", "add", "10.98.53.0/24", "via", "10.98.9.2")
	for _, kv := range []string{"net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
		"net.ipv4.conf.wh.rp_filter=0", "net.ipv4.conf.wu.rp_filter=0"} {
		ipCmd(t, "netns", "exec", id+"-node", "sysctl", "-qw", kv)
	}
	node, pod = "/run/netns/"+id+"-node", "/run/netns/"+id+"-pod"
	asked = serveResolver(t, "/run/netns/"+id+"-srv")
	loadDNSCapture(t, node)
	return node, pod, asked
}

func loadDNSCapture(t *testing.T, node string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bpffs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	var c *bpf.Capture
	err := netns.Do(node, func() error {
		var err error
		if c, err = bpf.Load(dir); err != nil {
			return err
		}
		wh, err := net.InterfaceByName("wh")
		if err != nil {
			return err
		}
		// TCP capture off (ports 0): only DNS is steered.
		return errors.Join(c.SetProxyPorts(0, 0, 0), c.SetDNSPort(Port), c.AttachOutbound(wh.Index),
			c.Enroll(wh.Index, netip.MustParseAddr(netnsPodIP)),
			bpf.DefaultPolicyRouting().Install(), bpf.DefaultNotrack().Install())
	})
	t.Cleanup(func() {
		_ = netns.Do(node, func() error {
			if c != nil {
				_ = c.Close()
			}
			return errors.Join(bpf.DefaultPolicyRouting().Remove(), bpf.DefaultNotrack().Remove())
		})
		_ = bpf.RemovePins(dir)
	})
	if err != nil {
		t.Fatalf("load capture: %v", err)
	}
}

// serveResolver runs the "real" DNS server on 0.0.0.0:53 in srv.
func serveResolver(t *testing.T, srv string) chan string {
	asked := make(chan string, 16)
	h := dns.HandlerFunc(func(w dns.ResponseWriter, m *dns.Msg) {
		ap, _ := netip.ParseAddrPort(w.RemoteAddr().String())
		asked <- ap.Addr().String()
		b, _ := m.Pack()
		r, _ := upstreamAnswer(b)
		w.Write(r)
	})
	var pc net.PacketConn
	var ln net.Listener
	err := netns.Do(srv, func() error {
		var err1, err2 error
		pc, err1 = net.ListenPacket("udp4", "0.0.0.0:53")
		ln, err2 = net.Listen("tcp4", "0.0.0.0:53")
		return errors.Join(err1, err2)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go s.ActivateAndServe()
		t.Cleanup(func() { s.Shutdown() })
	}
	return asked
}

func drainAsked(asked chan string) {
	for {
		select {
		case <-asked:
		default:
			return
		}
	}
}

// resolve asks the pod's resolver for name's A records, from the pod.
func resolve(t *testing.T, pod, network, name string) []string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	var r *dns.Msg
	err := netns.Do(pod, func() error {
		// Dial here (the socket stays in the pod's netns); a connected UDP
		// socket drops answers from any other address and port.
		c := &dns.Client{Net: network, Timeout: 3 * time.Second}
		conn, err := c.Dial(netnsResolver)
		if err != nil {
			return err
		}
		defer conn.Close()
		r, _, err = c.ExchangeWithConn(m, conn)
		return err
	})
	if err != nil {
		t.Fatalf("%s query for %s from the pod: %v", network, name, err)
	}
	return answers(r)
}

// helperProc is the DNS proxy, run by this test binary in the node netns
// (a process, so that every socket it opens, replies included, is there).
type helperProc struct {
	cmd   *exec.Cmd
	stdin io.Closer
}

func startHelper(t *testing.T, node string) *helperProc {
	t.Helper()
	// With the node agent's network capabilities only (the chart's, with
	// DNS capture on), not all of root's: answering from <resolver>:53
	// needs NET_BIND_SERVICE.
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		skipUnlessRequired(t, "needs setpriv (util-linux) to drop capabilities")
	}
	cmd := exec.Command(setpriv, "--bounding-set", "-all,+net_admin,+net_raw,+net_bind_service",
		os.Args[0], "-test.run=^TestDNSProxyHelper$")
	cmd.Env = append(os.Environ(), "WEFT_DNS_HELPER=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := netns.Start(cmd, node); err != nil {
		t.Fatal(err)
	}
	h := &helperProc{cmd: cmd, stdin: stdin}
	t.Cleanup(func() { h.stop(t) })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "listening") {
		t.Fatalf("DNS proxy helper: %q %v", line, err)
	}
	return h
}

func (h *helperProc) stop(t *testing.T) {
	if h.stdin == nil {
		return
	}
	h.stdin.Close()
	h.stdin = nil
	if err := h.cmd.Wait(); err != nil {
		t.Errorf("DNS proxy helper: %v", err)
	}
}

// TestDNSProxyHelper is the node agent's DNS proxy for TestDNSCaptureNetns
// (it runs only as that test's child): the pod is enrolled, api.example.com
// a mesh host. It serves until stdin closes.
func TestDNSProxyHelper(t *testing.T) {
	if os.Getenv("WEFT_DNS_HELPER") != "1" {
		t.Skip("run by TestDNSCaptureNetns")
	}
	store := onePodStore(t, netnsPodIP)
	s := &Server{Mark: mesh.MarkSkip, Log: discard(), Handler: &Handler{
		Snapshot: store.Snapshot, Node: "node-a", Forwarder: NewUpstream(mesh.MarkSkip, 16)}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Listen(ctx, fmt.Sprintf("127.0.0.1:%d", Port)); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	fmt.Println("listening")
	s.Serve(ctx)
}
