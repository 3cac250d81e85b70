package agent

import (
	"context"
	"net"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestListenerCapHoldsBackAStorm: beyond the cap, a new connection is not
// accepted (it waits in the kernel's queue) until an accepted one closes.
func TestListenerCapHoldsBackAStorm(t *testing.T) {
	if os.Geteuid() != 0 {
		msg := "IP_TRANSPARENT listeners need CAP_NET_ADMIN (run as root)"
		if os.Getenv("WEFT_E2E_REQUIRE") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ln, err := listenProxy(context.Background(), 0, 3)
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
