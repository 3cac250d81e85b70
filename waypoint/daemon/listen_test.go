package daemon

import (
	"net"
	"testing"
	"time"

	"github.com/weft-mesh/weft/internal/await"
)

// TestTrafficListenersAreCapped: the HBONE and gateway listeners hold at
// most --max-connections connections; the next waits in the accept queue
// until one closes.
func TestTrafficListenersAreCapped(t *testing.T) {
	cfg := Config{MaxConnections: 1}
	ln, err := cfg.listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	first := <-accepted
	select {
	case <-accepted:
		t.Fatal("a second connection was accepted with --max-connections 1")
	case <-time.After(100 * time.Millisecond): // a negative: nothing to await
	}
	first.Close()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(await.Timeout):
		t.Fatal("closing the first connection did not let the second in")
	}
}
