package bpf

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/internal/benchkit"
	"github.com/weft-mesh/weft/pkg/mesh"
	"github.com/weft-mesh/weft/pkg/netns"
)

func TestKeys(t *testing.T) {
	k, err := ipv4Key(netip.MustParseAddr("10.1.2.3"))
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], k)
	if b != [4]byte{10, 1, 2, 3} {
		t.Fatalf("ipv4Key bytes = %v, want network order", b)
	}
	if _, err := ipv4Key(netip.MustParseAddr("fd00::1")); err == nil {
		t.Fatal("ipv4Key accepted an IPv6 address")
	}
	lk, err := lpmKey(netip.MustParsePrefix("10.1.2.3/16"))
	if err != nil {
		t.Fatal(err)
	}
	binary.NativeEndian.PutUint32(b[:], lk.Addr)
	if lk.Prefixlen != 16 || b != [4]byte{10, 1, 0, 0} {
		t.Fatalf("lpmKey = %d %v, want 16 10.1.0.0", lk.Prefixlen, b)
	}
	binary.NativeEndian.PutUint16(b[:2], htons(15001))
	if b[0] != 0x3a || b[1] != 0x99 {
		t.Fatalf("htons(15001) bytes = %x %x", b[0], b[1])
	}
}

// TestCaptureSpec checks the committed object without privileges.
func TestCaptureSpec(t *testing.T) {
	spec, err := loadCapture()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"capture_outbound", "capture_inbound"} {
		ps, ok := spec.Programs[p]
		if !ok {
			t.Fatalf("program %s missing", p)
		}
		if ps.Type != ebpf.SchedCLS || ps.AttachType != ebpf.AttachTCXIngress {
			t.Fatalf("program %s: type %v attach %v, want SchedCLS tcx ingress", p, ps.Type, ps.AttachType)
		}
	}
	for _, m := range []string{"enrolled_ifindex", "enrolled_ips", "proxy_listeners", "bypass", "counters"} {
		ms, ok := spec.Maps[m]
		if !ok {
			t.Fatalf("map %s missing", m)
		}
		if ms.Pinning != ebpf.PinByName {
			t.Fatalf("map %s is not pinned by name", m)
		}
	}
	if n := spec.Maps["proxy_listeners"].MaxEntries; n != 3 {
		t.Fatalf("proxy_listeners has %d entries, want 3 (outbound, inbound, HBONE)", n)
	}
	if sz := spec.Maps["proxy_listeners"].ValueSize; sz != 8 {
		t.Fatalf("struct listener is %d bytes, want 8 (in sync with captureListener)", sz)
	}
}

// ---- privileged end-to-end proof ----

func run(t *testing.T, args ...string) {
	t.Helper()
	benchkit.Run(t, args...)
}

func addNetns(t *testing.T, name string) string {
	t.Helper()
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return "/run/netns/" + name
}

func ifindex(t *testing.T, nsPath, dev string) int {
	t.Helper()
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
		t.Fatalf("ifindex of %s: %v", dev, err)
	}
	return idx
}

func mountBPFFS(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bpffs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// The test process is in the host mount namespace: the bpffs outlives
	// every goroutine's netns switch (a private mount ns would lose it).
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount bpffs %s: %v", dir, err)
		}
	})
	return dir
}

type accepted struct {
	local, remote netip.AddrPort
}

// serve accepts on ln, greets every connection with "<name>\n" and echoes.
func serve(t *testing.T, ln net.Listener, name string, got chan<- accepted) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if got != nil {
				got <- accepted{
					local:  c.LocalAddr().(*net.TCPAddr).AddrPort(),
					remote: c.RemoteAddr().(*net.TCPAddr).AddrPort(),
				}
			}
			go func() {
				defer c.Close()
				if _, err := fmt.Fprintf(c, "%s\n", name); err != nil {
					return
				}
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

func listen(t *testing.T, nsPath, addr string, transparent bool) net.Listener {
	t.Helper()
	lc := net.ListenConfig{}
	if transparent {
		lc.Control = transparentControl(true)
	}
	return listenWith(t, lc, nsPath, addr)
}

// transparentControl makes a socket like the agent's listeners
// (proxy.TransparentSocket): transparent, with the agent's mark if marked.
func transparentControl(marked bool) func(string, string, syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
			if marked {
				serr = errors.Join(serr, unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(MarkSkip)))
			}
		})
		return errors.Join(err, serr)
	}
}

func listenWith(t *testing.T, lc net.ListenConfig, nsPath, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := netns.Do(nsPath, func() error {
		var err error
		ln, err = lc.Listen(context.Background(), "tcp4", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, nsPath, err)
	}
	return ln
}

type conn struct {
	net.Conn
	r *bufio.Reader
}

// dial connects from nsPath and returns who answered ("proxy", "server", ...).
func dial(t *testing.T, nsPath, addr string) (*conn, string) {
	t.Helper()
	c, err := dialTimeout(nsPath, addr, 3*time.Second)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, nsPath, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	r := bufio.NewReader(c)
	who, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read greeting over %s from %s: %v", addr, nsPath, err)
	}
	return &conn{c, r}, strings.TrimSpace(who)
}

func dialTimeout(nsPath, addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return netns.Dial(ctx, nsPath, addr)
}

// dialWho is dial without a *testing.T (usable from goroutines): it
// returns who answered and closes the connection.
func dialWho(nsPath, addr string, timeout time.Duration) (string, error) {
	c, err := dialTimeout(nsPath, addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	who, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read greeting: %w", err)
	}
	return strings.TrimSpace(who), nil
}

// expectHeldBack checks that a connect from nsPath to addr gets no answer
// at all within a short timeout: its SYN was dropped (fail closed). A
// connection refused or a greeting would mean the packet got through.
func expectHeldBack(t *testing.T, nsPath, addr string) {
	t.Helper()
	who, err := dialWho(nsPath, addr, 300*time.Millisecond)
	if err == nil {
		t.Fatalf("dial %s: answered by %q, want the SYN dropped (fail closed)", addr, who)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("dial %s: %v, want a timeout (SYN dropped, fail closed)", addr, err)
	}
}

// drain discards what got has buffered so far.
func drain(got <-chan accepted) {
	for {
		select {
		case <-got:
		default:
			return
		}
	}
}

// expectNone checks that nothing was accepted on got.
func expectNone(t *testing.T, got <-chan accepted, who string) {
	t.Helper()
	select {
	case a := <-got:
		t.Fatalf("%s accepted %+v, want nothing", who, a)
	default:
	}
}

func (c *conn) echo(t *testing.T, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", msg); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	got, err := c.r.ReadString('\n')
	if err != nil || strings.TrimSpace(got) != msg {
		t.Fatalf("echo %q: got %q, %v", msg, got, err)
	}
}

func expectAccepted(t *testing.T, got <-chan accepted, local string, remoteIP string) {
	t.Helper()
	select {
	case a := <-got:
		if a.local.String() != local {
			t.Fatalf("transparent listener accepted with local address %s, want original destination %s", a.local, local)
		}
		if a.remote.Addr().String() != remoteIP {
			t.Fatalf("transparent listener accepted from %s, want %s", a.remote, remoteIP)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("transparent listener accepted nothing")
	}
}

// topo is the test network:
//
//	pod  (10.99.1.2) --veth-- [wh1]                     enrolled
//	pod2 (10.99.2.2) --veth-- [wh2]   node netns        attached, not enrolled
//	srv  (10.99.9.2, 10.200.0.1:80) --veth-- [wu]      "uplink"
//
// The node netns runs the proxy's transparent listeners (15001 "proxy",
// 15006 "proxy-inbound", 15008 "hbone"); the pod serves 15008 itself too
// ("pod-hbone"), to show that HBONE tunnels never reach it, and an
// application port 9090 ("pod-app"), to show that a same-node plaintext
// client (pod2) is policed by the inbound listener instead of reaching it.
// Port 8080 is served by nobody in the pod (connection refused when direct).
type topo struct {
	node, pod, pod2, srv string // netns paths
	wh1, wh2, wu         int    // ifindexes in node
	pinDir               string

	outLn, inLn, hbLn    net.Listener // node netns, transparent
	outGot, inGot, hbGot chan accepted
	srvGot, podHbGot     chan accepted // srv:80, pod:15008
	podAppGot            chan accepted // pod:9090
}

func newTopo(t *testing.T) *topo {
	benchkit.RequireRoot(t, "capture test (network namespaces, BPF programs, bpffs)")

	id := fmt.Sprintf("wcap%d-%d", os.Getpid()%100000, time.Now().UnixNano()%1000)
	tp := &topo{}
	tp.node = addNetns(t, id+"-node")
	tp.pod = addNetns(t, id+"-pod")
	tp.pod2 = addNetns(t, id+"-pod2")
	tp.srv = addNetns(t, id+"-srv")
	nodeName := id + "-node"

	wire := func(peerNS, hostDev, hostIP, peerIP string) {
		peerName := strings.TrimPrefix(peerNS, "/run/netns/")
		run(t, "ip", "link", "add", hostDev, "netns", nodeName, "type", "veth", "peer", "name", "eth0", "netns", peerName)
		run(t, "ip", "-n", nodeName, "addr", "add", hostIP+"/24", "dev", hostDev)
		run(t, "ip", "-n", nodeName, "link", "set", hostDev, "up")
		run(t, "ip", "-n", peerName, "addr", "add", peerIP+"/24", "dev", "eth0")
		run(t, "ip", "-n", peerName, "link", "set", "eth0", "up")
		run(t, "ip", "-n", peerName, "route", "add", "default", "via", hostIP)
	}
	wire(tp.pod, "wh1", "10.99.1.1", "10.99.1.2")
	wire(tp.pod2, "wh2", "10.99.2.1", "10.99.2.2")
	wire(tp.srv, "wu", "10.99.9.1", "10.99.9.2")
	run(t, "ip", "-n", id+"-srv", "addr", "add", "10.200.0.1/32", "dev", "lo")
	run(t, "ip", "-n", nodeName, "route", "add", "10.200.0.0/24", "via", "10.99.9.2")
	for _, kv := range []string{
		"net.ipv4.ip_forward=1",
		"net.ipv4.conf.all.rp_filter=0",
		"net.ipv4.conf.default.rp_filter=0",
		"net.ipv4.conf.wh1.rp_filter=0",
		"net.ipv4.conf.wh2.rp_filter=0",
		"net.ipv4.conf.wu.rp_filter=0",
	} {
		run(t, "ip", "netns", "exec", nodeName, "sysctl", "-qw", kv)
	}

	// The "real" destination and a pod-side HBONE stand-in.
	tp.srvGot = make(chan accepted, 64)
	tp.podHbGot = make(chan accepted, 64)
	serve(t, listen(t, tp.srv, "0.0.0.0:80", false), "server", tp.srvGot)
	serve(t, listen(t, tp.pod, "0.0.0.0:15008", false), "pod-hbone", tp.podHbGot)
	tp.podAppGot = make(chan accepted, 64)
	serve(t, listen(t, tp.pod, "0.0.0.0:9090", false), "pod-app", tp.podAppGot)
	// The proxy's transparent listeners in the node netns.
	tp.outGot = make(chan accepted, 16)
	tp.inGot = make(chan accepted, 16)
	tp.hbGot = make(chan accepted, 16)
	tp.listenOutbound(t)
	tp.listenInbound(t)
	tp.listenHBONE(t)

	tp.pinDir = mountBPFFS(t)
	tp.wh1 = ifindex(t, tp.node, "wh1")
	tp.wh2 = ifindex(t, tp.node, "wh2")
	tp.wu = ifindex(t, tp.node, "wu")
	return tp
}

// listenOutbound (re)opens the proxy's outbound listener (after a close:
// the agent came back).
func (tp *topo) listenOutbound(t *testing.T) {
	tp.outLn = listen(t, tp.node, "0.0.0.0:15001", true)
	serve(t, tp.outLn, "proxy", tp.outGot)
}

func (tp *topo) listenInbound(t *testing.T) {
	tp.inLn = listen(t, tp.node, "0.0.0.0:15006", true)
	serve(t, tp.inLn, "proxy-inbound", tp.inGot)
}

func (tp *topo) listenHBONE(t *testing.T) {
	tp.hbLn = listen(t, tp.node, "0.0.0.0:15008", true)
	serve(t, tp.hbLn, "hbone", tp.hbGot)
}

func (tp *topo) inNode(t *testing.T, what string, fn func() error) {
	t.Helper()
	if err := netns.Do(tp.node, fn); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// loadCapture loads the programs in the node, points them at the test
// listeners, attaches capture_outbound to the veths and capture_inbound to
// uplink (0: none), installs policy routing and the notrack table (twice:
// both are idempotent) and turns TCP early demux off. Cleanup undoes all of
// it but early demux (the node netns goes with the test).
func (tp *topo) loadCapture(t *testing.T, uplink int, veths ...int) *Capture {
	t.Helper()
	var c *Capture
	tp.inNode(t, "load and attach", func() error {
		var err error
		if c, err = Load(tp.pinDir); err != nil {
			return err
		}
		errs := []error{c.SetProxyPorts(mesh.OutboundPort, mesh.InboundPlaintextPort, mesh.HBONEPort)}
		for _, v := range veths {
			errs = append(errs, c.AttachOutbound(v))
		}
		if uplink != 0 {
			errs = append(errs, c.AttachInbound(uplink))
		}
		for range 2 {
			errs = append(errs, DefaultPolicyRouting().Install(), DefaultNotrack().Install())
		}
		errs = append(errs, DisableTCPEarlyDemux()) // as the agent's init container does
		return errors.Join(errs...)
	})
	t.Cleanup(func() {
		_ = netns.Do(tp.node, func() error {
			if c != nil {
				_ = c.Close()
			}
			return errors.Join(DefaultPolicyRouting().Remove(), DefaultNotrack().Remove())
		})
		_ = RemovePins(tp.pinDir)
	})
	return c
}

// TestCaptureNetns proves tcx capture end to end with real sockets (see topo).
func TestCaptureNetns(t *testing.T) {
	tp := newTopo(t)
	node, pod, pod2, srv := tp.node, tp.pod, tp.pod2, tp.srv
	wh1, wh2, wu := tp.wh1, tp.wh2, tp.wu
	pinDir, outGot, inGot := tp.pinDir, tp.outGot, tp.inGot
	inNode := func(what string, fn func() error) { t.Helper(); tp.inNode(t, what, fn) }
	podIP := netip.MustParseAddr("10.99.1.2")

	var c *Capture
	inNode("load and attach", func() error {
		var err error
		if c, err = Load(pinDir); err != nil {
			return err
		}
		return errors.Join(
			c.SetProxyPorts(mesh.OutboundPort, mesh.InboundPlaintextPort, mesh.HBONEPort),
			c.AttachOutbound(wh1),
			c.AttachOutbound(wh2),
			c.AttachInbound(wu),
			DefaultPolicyRouting().Install(),
			DefaultPolicyRouting().Install(), // idempotent
		)
	})
	t.Cleanup(func() {
		_ = netns.Do(node, func() error {
			if c != nil {
				_ = c.Close()
			}
			return DefaultPolicyRouting().Remove()
		})
		_ = RemovePins(pinDir)
	})

	// Attached but nobody enrolled: nothing is captured.
	if _, who := dial(t, pod, "10.200.0.1:80"); who != "server" {
		t.Fatalf("before enrolment: answered by %q, want server", who)
	}

	if err := c.Enroll(wh1, podIP); err != nil {
		t.Fatal(err)
	}

	t.Log("enrolled pod: captured, original destination preserved")
	kept, who := dial(t, pod, "10.200.0.1:80")
	if who != "proxy" {
		t.Fatalf("enrolled pod: answered by %q, want proxy", who)
	}
	expectAccepted(t, outGot, "10.200.0.1:80", "10.99.1.2")
	kept.echo(t, "hello")

	t.Log("enrolled pod to an address nobody serves")
	if _, who := dial(t, pod, "10.201.0.9:80"); who != "proxy" {
		t.Fatalf("unserved address: answered by %q, want proxy", who)
	}
	expectAccepted(t, outGot, "10.201.0.9:80", "10.99.1.2")

	t.Log("unenrolled pod on an attached veth: not captured")
	if _, who := dial(t, pod2, "10.200.0.1:80"); who != "server" {
		t.Fatalf("unenrolled pod: answered by %q, want server", who)
	}

	t.Log("same node: non-enrolled pod2 to the enrolled pod goes to 15006, not the pod")
	local, who := dial(t, pod2, "10.99.1.2:9090")
	if who != "proxy-inbound" {
		t.Fatalf("same-node plaintext client to enrolled pod: answered by %q, want proxy-inbound", who)
	}
	expectAccepted(t, inGot, "10.99.1.2:9090", "10.99.2.2")
	local.echo(t, "same-node") // later packets follow the established socket
	expectNone(t, tp.podAppGot, "pod-app")
	t.Log("same node: non-enrolled pod2 to <pod IP>:15008 goes to the node's HBONE listener")
	if _, who := dial(t, pod2, "10.99.1.2:15008"); who != "hbone" {
		t.Fatalf("same-node client to enrolled pod's 15008: answered by %q, want hbone", who)
	}
	expectAccepted(t, tp.hbGot, "10.99.1.2:15008", "10.99.2.2")
	expectNone(t, tp.podHbGot, "pod-hbone")
	t.Log("same node: non-enrolled pod2 to a non-enrolled destination goes direct")
	drain(tp.srvGot)
	if _, who := dial(t, pod2, "10.200.0.1:80"); who != "server" {
		t.Fatalf("non-enrolled pod to non-enrolled destination: answered by %q, want server", who)
	}
	expectAccepted(t, tp.srvGot, "10.200.0.1:80", "10.99.2.2")
	expectNone(t, inGot, "proxy-inbound")

	t.Log("same node: replies of a non-enrolled pod to the agent's transparent dial (from the enrolled pod's IP) reach the agent")
	pod2Got := make(chan accepted, 4)
	serve(t, listen(t, pod2, "0.0.0.0:7070", false), "pod2-app", pod2Got)
	var ac net.Conn
	inNode("transparent dial from the enrolled pod's IP", func() error {
		var err error
		ac, err = transparentDialer(podIP).Dial("tcp4", "10.99.2.2:7070")
		return err
	})
	t.Cleanup(func() { ac.Close() })
	_ = ac.SetDeadline(time.Now().Add(3 * time.Second))
	agentSide := &conn{ac, bufio.NewReader(ac)}
	if who, err := agentSide.r.ReadString('\n'); err != nil || strings.TrimSpace(who) != "pod2-app" {
		t.Fatalf("agent's transparent dial to pod2: greeting %q, %v, want pod2-app", who, err)
	}
	expectAccepted(t, pod2Got, "10.99.2.2:7070", "10.99.1.2")
	agentSide.echo(t, "reply-path")
	agentSide.Close()
	expectNone(t, inGot, "proxy-inbound")

	t.Log("bypass CIDR: not captured")
	if err := c.AddBypass(netip.MustParsePrefix("10.200.0.0/24")); err != nil {
		t.Fatal(err)
	}
	if _, who := dial(t, pod, "10.200.0.1:80"); who != "server" {
		t.Fatalf("bypassed destination: answered by %q, want server", who)
	}
	if err := c.RemoveBypass(netip.MustParsePrefix("10.200.0.0/24")); err != nil {
		t.Fatal(err)
	}

	t.Log("inbound: plaintext to an enrolled pod IP goes to 15006")
	if _, who := dial(t, srv, "10.99.1.2:8080"); who != "proxy-inbound" {
		t.Fatalf("inbound to enrolled pod: answered by %q, want proxy-inbound", who)
	}
	expectAccepted(t, inGot, "10.99.1.2:8080", "10.99.9.2")

	t.Log("inbound HBONE: <pod IP>:15008 goes to the node's HBONE listener, not the pod")
	hb, who := dial(t, srv, "10.99.1.2:15008")
	if who != "hbone" {
		t.Fatalf("inbound to 15008: answered by %q, want hbone (node HBONE listener)", who)
	}
	expectAccepted(t, tp.hbGot, "10.99.1.2:15008", "10.99.9.2")
	hb.echo(t, "tunnel") // later packets follow the established socket
	hb.Close()
	expectNone(t, tp.podHbGot, "pod-hbone")

	t.Log("HBONE port 0: 15008 is a plaintext port like any other")
	inNode("hbone port 0", func() error { return c.SetProxyPorts(mesh.OutboundPort, mesh.InboundPlaintextPort, 0) })
	if _, who := dial(t, srv, "10.99.1.2:15008"); who != "proxy-inbound" {
		t.Fatalf("inbound to 15008 with HBONE port 0: answered by %q, want proxy-inbound", who)
	}
	expectAccepted(t, inGot, "10.99.1.2:15008", "10.99.9.2")
	expectNone(t, tp.hbGot, "hbone")
	expectNone(t, tp.podHbGot, "pod-hbone")
	inNode("hbone port back", func() error {
		return c.SetProxyPorts(mesh.OutboundPort, mesh.InboundPlaintextPort, mesh.HBONEPort)
	})

	t.Log("a successor's HBONE listener on another port still takes <pod IP>:15008")
	succGot := make(chan accepted, 4)
	serve(t, listen(t, tp.node, "127.0.0.1:25008", true), "hbone-successor", succGot)
	inNode("hbone listener elsewhere", func() error {
		return c.SetProxyListeners(ProxyListeners{Outbound: mesh.OutboundPort, Inbound: mesh.InboundPlaintextPort,
			HBONE: 25008, HBONEDestination: mesh.HBONEPort})
	})
	if _, who := dial(t, srv, "10.99.1.2:15008"); who != "hbone-successor" {
		t.Fatalf("inbound to 15008, HBONE listener on 25008: answered by %q, want hbone-successor", who)
	}
	expectAccepted(t, succGot, "10.99.1.2:15008", "10.99.9.2")
	if _, who := dial(t, srv, "10.99.1.2:25008"); who != "proxy-inbound" {
		t.Fatalf("inbound to 25008: answered by %q, want proxy-inbound (only the destination port selects HBONE)", who)
	}
	expectAccepted(t, inGot, "10.99.1.2:25008", "10.99.9.2")
	expectNone(t, tp.hbGot, "hbone")
	inNode("hbone listener back", func() error {
		return c.SetProxyPorts(mesh.OutboundPort, mesh.InboundPlaintextPort, mesh.HBONEPort)
	})

	t.Log("agent restart: reopen pins, update links in place")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = nil
	inNode("reload", func() error {
		var err error
		if c, err = Load(pinDir); err != nil {
			return err
		}
		return errors.Join(c.AttachOutbound(wh1), c.AttachOutbound(wh2), c.AttachInbound(wu))
	})
	inNode("query tcx", func() error {
		for _, idx := range []int{wh1, wh2, wu} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: idx, Attach: ebpf.AttachTCXIngress})
			if err != nil {
				return err
			}
			if len(res.Programs) != 1 {
				return fmt.Errorf("ifindex %d has %d tcx ingress programs after restart, want 1", idx, len(res.Programs))
			}
		}
		return nil
	})
	if flags, ok, err := c.Enrolment(wh1); err != nil || !ok || flags != FlagCapture {
		t.Fatalf("enrolment after restart = %#x %v %v, want capture", flags, ok, err)
	}
	kept.echo(t, "after-restart")
	local.echo(t, "after-restart")
	if _, who := dial(t, pod, "10.200.0.1:80"); who != "proxy" {
		t.Fatalf("after restart: answered by %q, want proxy", who)
	}
	expectAccepted(t, outGot, "10.200.0.1:80", "10.99.1.2")

	t.Log("drain: established proxied connection keeps working, new ones go direct")
	if err := c.Drain(wh1, podIP); err != nil {
		t.Fatal(err)
	}
	kept.echo(t, "while-draining")
	if _, who := dial(t, pod, "10.200.0.1:80"); who != "server" {
		t.Fatalf("draining pod: new connection answered by %q, want server", who)
	}
	kept.echo(t, "still-draining")
	kept.Close()
	// A tunnel from a node that has not heard of the drain yet still
	// reaches the node's HBONE listener, not the pod (which would reset it).
	if _, who := dial(t, srv, "10.99.1.2:15008"); who != "hbone" {
		t.Fatalf("tunnel to a draining pod: answered by %q, want hbone", who)
	}
	expectNone(t, tp.podHbGot, "pod-hbone")
	local.echo(t, "while-draining") // same-node inbound connection too
	if _, who := dial(t, pod2, "10.99.1.2:9090"); who != "pod-app" {
		t.Fatalf("same-node client to draining pod: new connection answered by %q, want pod-app", who)
	}
	expectAccepted(t, tp.podAppGot, "10.99.1.2:9090", "10.99.2.2")
	local.echo(t, "still-draining")
	local.Close()

	t.Log("unenrol: nothing captured")
	if err := c.Unenroll(wh1, podIP); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := c.Enrolment(wh1); ok {
		t.Fatal("enrolment still present after Unenroll")
	}
	if _, who := dial(t, pod, "10.200.0.1:80"); who != "server" {
		t.Fatalf("unenrolled pod: answered by %q, want server", who)
	}
	if _, who := dial(t, srv, "10.99.1.2:15008"); who != "pod-hbone" {
		t.Fatalf("inbound 15008 to unenrolled pod: answered by %q, want pod-hbone (normal delivery)", who)
	}
	<-tp.podHbGot
	if _, who := dial(t, pod2, "10.99.1.2:9090"); who != "pod-app" {
		t.Fatalf("same-node client to unenrolled pod: answered by %q, want pod-app (direct)", who)
	}
	expectAccepted(t, tp.podAppGot, "10.99.1.2:9090", "10.99.2.2")
	expectNone(t, inGot, "proxy-inbound")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if cc, err := netns.Dial(ctx, srv, "10.99.1.2:8080"); !errors.Is(err, syscall.ECONNREFUSED) {
		if cc != nil {
			cc.Close()
		}
		t.Fatalf("inbound to unenrolled pod without a listener: %v, want connection refused (not captured)", err)
	}
	select {
	case a := <-outGot:
		t.Fatalf("unexpected capture after drain/unenrol: %+v", a)
	default:
	}

	t.Log("detach")
	inNode("detach", func() error {
		return errors.Join(c.DetachOutbound(wh1), c.DetachOutbound(wh2), c.DetachInbound(wu))
	})
	inNode("query tcx after detach", func() error {
		res, err := link.QueryPrograms(link.QueryOptions{Target: wh1, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return err
		}
		if len(res.Programs) != 0 {
			return fmt.Errorf("wh1 still has %d tcx programs", len(res.Programs))
		}
		return nil
	})
}

// TestCaptureClsactNetns exercises the pre-6.6 fallback (clsact + cls_bpf)
// on this kernel by forcing it.
func TestCaptureClsactNetns(t *testing.T) {
	tp := newTopo(t)
	podIP := netip.MustParseAddr("10.99.1.2")
	var c *Capture
	load := func() {
		tp.inNode(t, "load and attach (clsact)", func() error {
			var err error
			if c, err = Load(tp.pinDir); err != nil {
				return err
			}
			c.legacyTC = true
			return errors.Join(
				c.SetProxyPorts(mesh.OutboundPort, mesh.InboundPlaintextPort, mesh.HBONEPort),
				c.AttachOutbound(tp.wh1),
				DefaultPolicyRouting().Install(),
			)
		})
	}
	load()
	t.Cleanup(func() {
		_ = netns.Do(tp.node, func() error {
			if c != nil {
				_ = c.Close()
			}
			return DefaultPolicyRouting().Remove()
		})
		_ = RemovePins(tp.pinDir)
	})
	if err := c.Enroll(tp.wh1, podIP); err != nil {
		t.Fatal(err)
	}
	kept, who := dial(t, tp.pod, "10.200.0.1:80")
	if who != "proxy" {
		t.Fatalf("enrolled pod (clsact): answered by %q, want proxy", who)
	}
	expectAccepted(t, tp.outGot, "10.200.0.1:80", "10.99.1.2")

	// restart: the filter is replaced, not duplicated
	_ = c.Close()
	load()
	tp.inNode(t, "count filters", func() error {
		n, err := clsactPrograms(tp.wh1)
		if err == nil && n != 2 {
			err = fmt.Errorf("%d weft filters on wh1 after restart, want 2 (capture_outbound, guard_to_pod)", n)
		}
		return err
	})
	kept.echo(t, "after-restart")
	if _, who := dial(t, tp.pod, "10.200.0.1:80"); who != "proxy" {
		t.Fatalf("after restart (clsact): answered by %q, want proxy", who)
	}
	expectAccepted(t, tp.outGot, "10.200.0.1:80", "10.99.1.2")

	tp.inNode(t, "detach (clsact)", func() error { return c.DetachOutbound(tp.wh1) })
	tp.inNode(t, "count filters after detach", func() error {
		n, err := clsactPrograms(tp.wh1)
		if err == nil && n != 0 {
			err = fmt.Errorf("%d weft filters on wh1 after detach, want 0", n)
		}
		return err
	})
	if _, who := dial(t, tp.pod, "10.200.0.1:80"); who != "server" {
		t.Fatalf("after detach (clsact): answered by %q, want server", who)
	}
}

// TestCaptureFailClosedNetns proves that capture fails closed: while the
// agent's listener for a direction is missing, enrolled pods' new
// connections are held back (SYN dropped), not delivered unproxied, and a
// SYN retransmission gets in once the listener is back. Unenrolled and
// draining pods, and directions disabled with port 0, are not affected.
func TestCaptureFailClosedNetns(t *testing.T) {
	tp := newTopo(t)
	podIP := netip.MustParseAddr("10.99.1.2")
	c := tp.loadCapture(t, tp.wu, tp.wh1, tp.wh2)
	if err := c.Enroll(tp.wh1, podIP); err != nil {
		t.Fatal(err)
	}
	if _, who := dial(t, tp.pod, "10.200.0.1:80"); who != "proxy" {
		t.Fatalf("enrolled pod: answered by %q, want proxy", who)
	}
	expectAccepted(t, tp.outGot, "10.200.0.1:80", "10.99.1.2")
	captured0, dropped0, err := c.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if captured0 < 1 || dropped0 != 0 {
		t.Fatalf("counters after one capture: captured %d dropped %d, want >= 1 and 0", captured0, dropped0)
	}

	// retry dials addr from nsPath while the listener is down, brings the
	// listener back with reopen and expects the same connect to get through
	// on a SYN retransmission (about 1 s later).
	retry := func(nsPath, addr, want string, reopen func(*testing.T)) {
		t.Helper()
		type result struct {
			who string
			err error
		}
		res := make(chan result, 1)
		start := time.Now()
		go func() {
			who, err := dialWho(nsPath, addr, 5*time.Second)
			res <- result{who, err}
		}()
		// The scenario, not a wait: the listener stays closed long enough
		// for the first SYN to be dropped and retransmitted.
		time.Sleep(300 * time.Millisecond)
		reopen(t)
		r := <-res
		elapsed := time.Since(start)
		if r.err != nil || r.who != want {
			t.Fatalf("dial %s across listener restart: %q %v, want %s", addr, r.who, r.err, want)
		}
		// Had the first SYN got through, the connect would have failed or
		// been answered before the listener came back.
		if elapsed < 500*time.Millisecond {
			t.Fatalf("dial %s across listener restart took %v: the first SYN was not dropped", addr, elapsed)
		}
		t.Logf("dial %s got through after %v (SYN retransmission)", addr, elapsed.Round(time.Millisecond))
	}

	t.Log("outbound listener down: enrolled pod is held back, others are not")
	tp.outLn.Close()
	expectHeldBack(t, tp.pod, "10.200.0.1:80")
	expectNone(t, tp.srvGot, "server")
	if _, who := dial(t, tp.pod2, "10.200.0.1:80"); who != "server" {
		t.Fatalf("unenrolled pod while the listener is down: answered by %q, want server", who)
	}
	<-tp.srvGot
	if err := c.Drain(tp.wh1, podIP); err != nil {
		t.Fatal(err)
	}
	if _, who := dial(t, tp.pod, "10.200.0.1:80"); who != "server" {
		t.Fatalf("draining pod while the listener is down: answered by %q, want server", who)
	}
	<-tp.srvGot
	if err := c.Enroll(tp.wh1, podIP); err != nil {
		t.Fatal(err)
	}
	t.Log("outbound port 0 (capture disabled): fail open")
	tp.inNode(t, "outbound port 0", func() error {
		return c.SetProxyPorts(0, mesh.InboundPlaintextPort, mesh.HBONEPort)
	})
	if _, who := dial(t, tp.pod, "10.200.0.1:80"); who != "server" {
		t.Fatalf("outbound capture disabled: answered by %q, want server", who)
	}
	<-tp.srvGot
	tp.inNode(t, "outbound port back", func() error {
		return c.SetProxyPorts(mesh.OutboundPort, mesh.InboundPlaintextPort, mesh.HBONEPort)
	})
	expectHeldBack(t, tp.pod, "10.200.0.1:80")
	t.Log("outbound listener back: the retransmitted SYN is captured")
	retry(tp.pod, "10.200.0.1:80", "proxy", tp.listenOutbound)
	expectAccepted(t, tp.outGot, "10.200.0.1:80", "10.99.1.2")
	expectNone(t, tp.srvGot, "server")

	t.Log("inbound plaintext listener down: held back, not delivered to the pod")
	tp.inLn.Close()
	expectHeldBack(t, tp.srv, "10.99.1.2:8080") // fail open would be "connection refused"
	t.Log("inbound plaintext listener down: same-node client held back, not delivered to the pod")
	expectHeldBack(t, tp.pod2, "10.99.1.2:9090") // fail open would be "pod-app"
	expectNone(t, tp.podAppGot, "pod-app")
	retry(tp.srv, "10.99.1.2:8080", "proxy-inbound", tp.listenInbound)
	expectAccepted(t, tp.inGot, "10.99.1.2:8080", "10.99.9.2")
	tp.inLn.Close()
	retry(tp.pod2, "10.99.1.2:9090", "proxy-inbound", tp.listenInbound)
	expectAccepted(t, tp.inGot, "10.99.1.2:9090", "10.99.2.2")
	expectNone(t, tp.podAppGot, "pod-app")

	t.Log("HBONE listener down: held back, not delivered to the pod")
	tp.hbLn.Close()
	expectHeldBack(t, tp.srv, "10.99.1.2:15008")
	expectNone(t, tp.podHbGot, "pod-hbone")
	retry(tp.srv, "10.99.1.2:15008", "hbone", tp.listenHBONE)
	expectAccepted(t, tp.hbGot, "10.99.1.2:15008", "10.99.9.2")
	expectNone(t, tp.podHbGot, "pod-hbone")

	captured, dropped, err := c.Counters()
	if err != nil {
		t.Fatal(err)
	}
	// At least: 5 held-back dials and 4 first SYNs of the retries dropped;
	// 4 retries captured.
	if dropped-dropped0 < 9 || captured-captured0 < 4 {
		t.Fatalf("counters: captured +%d dropped +%d, want >= 4 and >= 9", captured-captured0, dropped-dropped0)
	}
	t.Logf("counters: captured %d dropped %d", captured, dropped)

	t.Log("unenrolled pod IP with the listeners down: normal delivery")
	tp.inLn.Close()
	tp.hbLn.Close()
	if err := c.Unenroll(tp.wh1, podIP); err != nil {
		t.Fatal(err)
	}
	if _, who := dial(t, tp.srv, "10.99.1.2:15008"); who != "pod-hbone" {
		t.Fatalf("inbound 15008 to unenrolled pod: answered by %q, want pod-hbone", who)
	}
	if _, who := dial(t, tp.pod, "10.200.0.1:80"); who != "server" {
		t.Fatalf("unenrolled pod: answered by %q, want server", who)
	}
	if _, who := dial(t, tp.pod2, "10.99.1.2:9090"); who != "pod-app" {
		t.Fatalf("same-node client to unenrolled pod: answered by %q, want pod-app", who)
	}
	expectAccepted(t, tp.podAppGot, "10.99.1.2:9090", "10.99.2.2")
}
