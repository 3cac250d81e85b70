package connlimit

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/weft-mesh/weft/internal/await"
)

// TestCappedHoldsAtMostMax: with max connections open, the next one stays
// in the kernel's accept queue until one of them closes; the connections
// keep *net.TCPConn's methods (CloseWrite, SetLinger).
func TestCappedHoldsAtMostMax(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Capped(l.(*net.TCPListener), 2)
	defer ln.Close()
	accepted := acceptAll(ln, 3)
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	first := <-accepted
	<-accepted
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted with the cap at 2")
	case <-time.After(100 * time.Millisecond): // a negative: nothing to await
	}
	if _, ok := first.(interface{ CloseWrite() error }); !ok {
		t.Fatal("capped connection lost CloseWrite")
	}
	if _, ok := first.(interface{ SetLinger(int) error }); !ok {
		t.Fatal("capped connection lost SetLinger")
	}
	first.Close()
	first.Close() // a second Close frees nothing more
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(await.Timeout):
		t.Fatal("closing a connection did not let the waiting one in")
	}
}

// TestOneSourceCannotTakeEverySlot is the attack on a listener many
// tenants share: one source opens connection after connection. Beyond
// perSource its connections are reset at once (and counted), while
// another source still gets in; a closed connection gives its source a
// slot back.
func TestOneSourceCannotTakeEverySlot(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	shed := make(chan struct{}, 16)
	ln := CappedPerSource(l.(*net.TCPListener), 8, 2, func() { shed <- struct{}{} })
	defer ln.Close()
	accepted := acceptAll(ln, 16)
	dial := func(src string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, err
	}
	dialFrom := func(src string) net.Conn {
		t.Helper()
		c, err := dial(src)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	acceptedFrom := func(src string) net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			if got := c.RemoteAddr().(*net.TCPAddr).IP.String(); got != src {
				t.Fatalf("accepted a connection from %s, want %s", got, src)
			}
			return c
		case <-time.After(await.Timeout):
			t.Fatalf("no connection from %s accepted", src)
			return nil
		}
	}
	// refused dials from src and wants the connection shed: reset at
	// once, which the dial itself may already report (the reset can
	// arrive before connect returns).
	refused := func(src string) {
		t.Helper()
		c, err := dial(src)
		select {
		case <-shed:
		case <-time.After(await.Timeout):
			t.Fatal("a connection beyond the source's limit was not shed")
		}
		if err != nil {
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("the shed connection's dial: %v, want a reset", err)
			}
			return
		}
		c.SetReadDeadline(time.Now().Add(await.Timeout))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the shed connection reads %v, want a reset", err)
		}
	}

	dialFrom("127.0.0.2")
	first := acceptedFrom("127.0.0.2")
	dialFrom("127.0.0.2")
	acceptedFrom("127.0.0.2")
	refused("127.0.0.2")
	dialFrom("127.0.0.3")
	acceptedFrom("127.0.0.3")

	first.Close()
	dialFrom("127.0.0.2")
	acceptedFrom("127.0.0.2")
	if n := len(accepted); n != 0 {
		t.Errorf("%d more connections accepted", n)
	}
}

// acceptAll accepts ln's connections until it is closed, into a channel
// of the given room.
func acceptAll(ln net.Listener, room int) chan net.Conn {
	accepted := make(chan net.Conn, room)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	return accepted
}
