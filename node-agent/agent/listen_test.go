package agent

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/node-agent/proxy"
)

// needRoot skips (fails under WEFT_E2E_REQUIRE=1) without root: the proxy
// sockets are IP_TRANSPARENT and marked, which needs CAP_NET_ADMIN.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		msg := "IP_TRANSPARENT listeners need CAP_NET_ADMIN (run as root)"
		if os.Getenv("WEFT_E2E_REQUIRE") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// TestListenerCapHoldsBackAStorm: beyond the cap, a new connection is not
// accepted (it waits in the kernel's queue) until an accepted one closes.
func TestListenerCapHoldsBackAStorm(t *testing.T) {
	needRoot(t)
	sock, err := proxy.BindTransparent(0, true)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := listenProxy(sock, 3, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	for range 5 {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	var held []net.Conn
	for range 3 {
		select {
		case c := <-accepted:
			held = append(held, c)
		case <-time.After(5 * time.Second):
			t.Fatal("the first 3 connections were not accepted")
		}
	}
	select {
	case <-accepted:
		t.Fatal("a 4th connection was accepted beyond the cap of 3")
	case <-time.After(300 * time.Millisecond):
	}
	held[0].Close()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("closing one connection did not admit a waiting one")
	}
}

// TestProxyListenerShedsASourceAtItsCap: a proxy listener opened with a
// per-source cap (as listen opens the outbound and plaintext ones) resets
// one source's connection beyond it and counts it, while the listener
// still has room.
func TestProxyListenerShedsASourceAtItsCap(t *testing.T) {
	needRoot(t)
	sock, err := proxy.BindTransparent(0, true)
	if err != nil {
		t.Fatal(err)
	}
	shed := make(chan struct{}, 4)
	ln, err := listenProxy(sock, 8, 1, func() { shed <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held until the listener closes
		}
	}()
	addr := "127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			defer c.Close()
		}
	}
	select {
	case <-shed:
	case <-time.After(5 * time.Second):
		t.Fatal("the second connection of one source was not shed with a cap of 1")
	}
}

// TestPerSourceCapOnPodsListeners: the outbound and plaintext listeners,
// whose sources are pods and clients, cap what one source holds; the NAT
// and HBONE ones, whose sources may be one address for many workloads (a
// masquerading node, a peer node agent), do not.
func TestPerSourceCapOnPodsListeners(t *testing.T) {
	a := &agent{cfg: Config{MaxConnectionsPerSource: 7}, sockets: &proxySockets{}}
	want := map[string]int{"outbound": 7, "inbound-plaintext": 7, "inbound-nat": 0, "hbone": 0}
	for _, l := range a.proxyListeners() {
		if l.perSource != want[l.name] {
			t.Errorf("listener %s: %d per source, want %d", l.name, l.perSource, want[l.name])
		}
		delete(want, l.name)
	}
	if len(want) != 0 {
		t.Errorf("listeners missing: %v", want)
	}
	for perSource, perPeer := range map[int]int{7: 7, 0: -1} {
		a.cfg.MaxConnectionsPerSource = perSource
		if got := a.hboneOptions().MaxConnectionsPerPeer; got != perPeer {
			t.Errorf("--max-connections-per-source %d: HBONE holds %d per peer identity, want %d", perSource, got, perPeer)
		}
	}
}

// bindReusePort is the attack on the capture's listener lookup (issue #13
// M4): a root hostNetwork process binds a proxy port with SO_REUSEPORT and
// SO_REUSEADDR, to join the agent's reuseport group and receive a share of
// the captured connections. It returns the socket, or the bind's error.
func bindReusePort(t *testing.T, addr [4]byte, port uint16) (int, error) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, opt := range []int{unix.SO_REUSEPORT, unix.SO_REUSEADDR} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(port), Addr: addr}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		return -1, err
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd, nil
}

// TestProxyListenersCannotBeJoined: no other socket can bind a proxy
// listener's address, on 127.0.0.1 (what the capture looks up) or on the
// wildcard, not even with SO_REUSEPORT and SO_REUSEADDR, from the moment
// the agent binds it (before it listens) and while it listens.
func TestProxyListenersCannotBeJoined(t *testing.T) {
	needRoot(t)
	sock, err := proxy.BindTransparent(0, true)
	if err != nil {
		t.Fatal(err)
	}
	attack := func(when string) {
		for _, addr := range [][4]byte{{127, 0, 0, 1}, {0, 0, 0, 0}} {
			if _, err := bindReusePort(t, addr, sock.Port); !errors.Is(err, unix.EADDRINUSE) {
				t.Errorf("%s: a reuseport socket bound %v:%d: %v, want EADDRINUSE", when, addr, sock.Port, err)
			}
		}
	}
	attack("bound, not listening")
	ln, err := listenProxy(sock, 0, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	attack("listening")
}

// TestProxyPortHeldElsewhere: when a configured port is held (by the agent
// this one succeeds, or by an attacker's reuseport socket), the agent binds
// another port and the capture steers there; the HBONE destination port
// stays the configured one.
func TestProxyPortHeldElsewhere(t *testing.T) {
	needRoot(t)
	held, err := proxy.BindTransparent(0, true)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	squatted, err := proxy.BindTransparent(0, true) // a free port, then an attacker's
	if err != nil {
		t.Fatal(err)
	}
	squat := squatted.Port
	squatted.Close()
	if _, err := bindReusePort(t, [4]byte{127, 0, 0, 1}, squat); err != nil {
		t.Fatal(err)
	}
	free, err := proxy.BindTransparent(0, true)
	if err != nil {
		t.Fatal(err)
	}
	freePort := free.Port
	free.Close()

	a := &agent{cfg: Config{OutboundPort: held.Port, InboundPlaintextPort: squat, HBONEPort: freePort},
		log: slog.New(slog.DiscardHandler)}
	if a.sockets, err = a.bindProxySockets(); err != nil {
		t.Fatal(err)
	}
	defer a.sockets.Close()
	got := a.captureListeners()
	if got.Outbound == held.Port || got.Outbound == 0 || got.Inbound == squat || got.Inbound == 0 || got.NAT == 0 {
		t.Errorf("capture steers to %+v: onto a held port (outbound %d, inbound %d)", got, held.Port, squat)
	}
	if got.HBONE != freePort || got.HBONEDestination != freePort {
		t.Errorf("capture steers to %+v, want HBONE on its free configured port %d", got, freePort)
	}
}
