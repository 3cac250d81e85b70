package bpf

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/pkg/netns"
)

// listen6 listens on TCP addr (IPv6) in nsPath and greets with name.
func listen6(t *testing.T, nsPath, addr, name string) {
	t.Helper()
	var ln net.Listener
	err := netns.Do(nsPath, func() error {
		var err error
		ln, err = net.Listen("tcp6", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, nsPath, err)
	}
	serve(t, ln, name, nil)
}

// udpEcho6 answers every datagram to addr (IPv6) in nsPath with itself.
func udpEcho6(t *testing.T, nsPath, addr string) {
	t.Helper()
	var pc net.PacketConn
	err := netns.Do(nsPath, func() error {
		var err error
		pc, err = net.ListenPacket("udp6", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen udp %s in %s: %v", addr, nsPath, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
}

// udpRoundTrip sends one datagram from nsPath to addr and waits for the echo.
func udpRoundTrip(nsPath, addr string) error {
	var c net.Conn
	err := netns.Do(nsPath, func() error {
		var err error
		c, err = net.Dial("udp6", addr)
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "ping" {
		return errors.Join(err, errors.New("no echo"))
	}
	return nil
}

// dialHopByHop connects from nsPath with a hop-by-hop options header on
// every packet (IPV6_HOPOPTS): TCP that is not the packet's first next
// header, as an attacker would hide it from a parser that looks only there.
func dialHopByHop(nsPath, addr string, timeout time.Duration) (string, error) {
	// Next header (the kernel sets it), length 0 (8 bytes), PadN of 4.
	opts := string([]byte{0, 0, 1, 4, 0, 0, 0, 0})
	d := net.Dialer{Timeout: timeout, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.IPPROTO_IPV6, unix.IPV6_HOPOPTS, opts)
		})
		return errors.Join(err, serr)
	}}
	var c net.Conn
	err := netns.Do(nsPath, func() error {
		var err error
		c, err = d.DialContext(context.Background(), "tcp6", addr)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	who, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(who), err
}

// tfoServer listens on TCP addr (IPv6) in nsPath with TCP Fast Open on
// and no cookie required, and sends what each accepted connection says to
// the returned channel. TFO hands a SYN's data to the server at once, before
// any answer leaves the pod.
func tfoServer(t *testing.T, nsPath, addr string) <-chan string {
	t.Helper()
	said := make(chan string, 8)
	var ln net.Listener
	err := netns.Do(nsPath, func() error {
		if err := enableTFO(); err != nil {
			return err
		}
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_FASTOPEN, 16) })
			return errors.Join(err, serr)
		}}
		var err error
		ln, err = lc.Listen(context.Background(), "tcp6", addr)
		return err
	})
	if err != nil {
		t.Fatalf("TFO listener %s in %s: %v", addr, nsPath, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 64)
			n, _ := c.Read(buf)
			c.Close()
			said <- string(buf[:n])
		}
	}()
	return said
}

// enableTFO turns TCP Fast Open on for clients and servers of the calling
// thread's network namespace, without cookies (0x1 client, 0x2 server,
// 0x4 client without cookie, 0x200 server without cookie).
func enableTFO() error {
	return os.WriteFile("/proc/sys/net/ipv4/tcp_fastopen", []byte("519"), 0o644)
}

// tfoSend sends payload from nsPath to addr in the SYN of a TCP Fast Open
// connection; closing the returned socket stops its retransmissions (a
// retransmitted SYN carries no data, and would bring the payload in after
// the handshake once nothing drops it).
func tfoSend(t *testing.T, nsPath string, addr netip.AddrPort, payload string) (closeSocket func()) {
	t.Helper()
	fd := -1
	err := netns.Do(nsPath, func() error {
		if err := enableTFO(); err != nil {
			return err
		}
		var err error
		if fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		sa := &unix.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16()}
		// The kernel counts the payload sent only if it rides in the SYN.
		n, err := unix.SendmsgN(fd, []byte(payload), nil, sa, unix.MSG_FASTOPEN)
		if err == nil && n != len(payload) {
			err = fmt.Errorf("%d of %d bytes in the SYN", n, len(payload))
		}
		return err
	})
	closeSocket = func() {
		if fd >= 0 {
			unix.Close(fd)
			fd = -1
		}
	}
	t.Cleanup(closeSocket)
	if err != nil {
		t.Fatalf("TFO send to %s from %s: %v", addr, nsPath, err)
	}
	return closeSocket
}

// expectSaid waits for what a TFO client's SYN carried to reach the server
// (want != "") or for nothing to (want == "").
func expectSaid(t *testing.T, said <-chan string, want, phase string) {
	t.Helper()
	select {
	case got := <-said:
		if got != want {
			t.Fatalf("%s: the pod's TFO server got %q, want %q", phase, got, want)
		}
	case <-time.After(time.Second):
		if want != "" {
			t.Fatalf("%s: the pod's TFO server got nothing, want %q", phase, want)
		}
	}
}

// TestCaptureIPv6FailsClosedNetns: only IPv4 is steered to the proxy, so an
// enrolled pod's IPv6 TCP must not get through at all (the issue's
// "dual-stack pods are not captured, yet report as enrolled"): neither the
// pod's own connections, nor connections to it (its answers leave through
// the same program), nor the data of a TCP Fast Open SYN, which a server
// takes before any answer (guard_to_pod stops it on the way in), nor TCP
// behind a hop-by-hop header. ICMPv6 (neighbour discovery) and UDP still
// work, as they do over IPv4; the drops are counted; once unenrolled the
// pod's IPv6 works again.
func TestCaptureIPv6FailsClosedNetns(t *testing.T) {
	tp := newTopo(t)
	nodeName := strings.TrimPrefix(tp.node, "/run/netns/")
	podName := strings.TrimPrefix(tp.pod, "/run/netns/")
	run(t, "ip", "-n", nodeName, "addr", "add", "fd99:1::1/64", "dev", "wh1", "nodad")
	run(t, "ip", "-n", podName, "addr", "add", "fd99:1::2/64", "dev", "eth0", "nodad")
	listen6(t, tp.node, "[fd99:1::1]:8080", "node-v6")
	udpEcho6(t, tp.node, "[fd99:1::1]:8081")
	listen6(t, tp.pod, "[fd99:1::2]:9091", "pod-v6")
	said := tfoServer(t, tp.pod, "[fd99:1::2]:9092")
	tfoTarget := netip.MustParseAddrPort("[fd99:1::2]:9092")
	c := tp.loadCapture(t, 0, tp.wh1)
	const podIP = "10.99.1.2"

	expectIPv6 := func(phase string) {
		t.Helper()
		if who, err := dialWho(tp.pod, "[fd99:1::1]:8080", 3*time.Second); err != nil || who != "node-v6" {
			t.Fatalf("%s: pod -> node over IPv6: %q %v, want node-v6", phase, who, err)
		}
		if who, err := dialWho(tp.node, "[fd99:1::2]:9091", 3*time.Second); err != nil || who != "pod-v6" {
			t.Fatalf("%s: node -> pod over IPv6: %q %v, want pod-v6", phase, who, err)
		}
	}
	expectIPv6("not enrolled")
	closeSocket := tfoSend(t, tp.node, tfoTarget, "before")
	expectSaid(t, said, "before", "not enrolled")
	closeSocket()

	tp.inNode(t, "enroll", func() error { return c.Enroll(tp.wh1, netip.MustParseAddr(podIP)) })
	if err := udpRoundTrip(tp.pod, "[fd99:1::1]:8081"); err != nil {
		t.Fatalf("enrolled: IPv6 UDP (and neighbour discovery) broken: %v", err)
	}
	expectHeldBack(t, tp.pod, "[fd99:1::1]:8080")
	expectHeldBack(t, tp.node, "[fd99:1::2]:9091")
	if who, err := dialHopByHop(tp.pod, "[fd99:1::1]:8080", 300*time.Millisecond); err == nil {
		t.Fatalf("enrolled: TCP behind a hop-by-hop header got through to %q", who)
	}
	// A SYN's own data would reach the server before the pod's answer is
	// dropped on its way out: it must not get in at all.
	closeSocket = tfoSend(t, tp.node, tfoTarget, "bypass")
	expectSaid(t, said, "", "enrolled")
	closeSocket()
	var dropped uint64
	tp.inNode(t, "read counter", func() (err error) { dropped, err = c.IPv6Dropped(); return err })
	if dropped < 3 {
		t.Fatalf("IPv6Dropped = %d after three refused connections, want at least 3", dropped)
	}

	tp.inNode(t, "unenroll", func() error { return c.Unenroll(tp.wh1, netip.MustParseAddr(podIP)) })
	expectIPv6("unenrolled")
	tfoSend(t, tp.node, tfoTarget, "after")
	expectSaid(t, said, "after", "unenrolled")
}
