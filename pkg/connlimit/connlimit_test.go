package connlimit

import (
	"net"
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
	accepted := make(chan net.Conn, 3)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
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
