package probe

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// proxy forwards a loopback port to target, as a node agent does. A
// faithful one propagates FIN (CloseWrite) and RST (SetLinger(0)) both
// ways and resets the client when the target refuses; a lossy one has the
// bug of issue #12: the server's FIN never reaches the client (its side
// cannot CloseWrite), and errors close both sides normally.
func proxy(t *testing.T, target int, faithful bool) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go relay(c.(*net.TCPConn), target, faithful)
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func relay(client *net.TCPConn, target int, faithful bool) {
	defer client.Close()
	up, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(target)))
	if err != nil {
		if faithful {
			client.SetLinger(0)
		}
		return
	}
	server := up.(*net.TCPConn)
	defer server.Close()
	var wg sync.WaitGroup
	pipe := func(dst, src *net.TCPConn, fin bool) {
		_, err := io.Copy(dst, src)
		switch {
		case err != nil && faithful && errors.Is(err, net.ErrClosed):
		case err != nil && faithful:
			dst.SetLinger(0)
			dst.Close()
		case fin:
			dst.CloseWrite()
		}
	}
	wg.Go(func() { pipe(server, client, true) })
	wg.Go(func() { pipe(client, server, faithful) })
	wg.Wait()
}

// proxied runs every behaviour through proxies in front of a loopback
// server.
func proxied(t *testing.T, faithful bool) map[string]Result {
	// Long enough for 50 connections through the test proxies under -race
	// on a busy machine; short enough for the lossy proxy's hangs.
	hangTimeout = time.Second
	t.Cleanup(func() { hangTimeout = 3 * time.Second })
	s, err := Listen("127.0.0.1", Ports{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	s.Serve()
	p := s.Ports()
	for _, port := range p.listening() {
		*port = proxy(t, *port, faithful)
	}
	p.Closed = proxy(t, freePort(t), faithful)
	c := &Client{Host: "127.0.0.1", Ports: p, Sizes: Sizes{BulkBytes: 1 << 20, Conns: 50, Requests: 10, Streams: 50, Idle: 10 * time.Millisecond}}
	if err := c.Resolve(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := map[string]Result{}
	for _, b := range Behaviours {
		got[b.ID] = c.Run(context.Background(), b.ID)
		t.Logf("%s: %s: %s", b.ID, got[b.ID].Outcome, got[b.ID].Detail)
	}
	return got
}

// TestFaithfulProxy: a proxy that propagates FIN and RST behaves exactly
// like the baseline, a refused connection included (as a reset).
func TestFaithfulProxy(t *testing.T) {
	got := proxied(t, true)
	for _, b := range Behaviours {
		if got[b.ID].Outcome != b.Want {
			t.Errorf("%s: %q, want %q", b.ID, got[b.ID].Outcome, b.Want)
		}
	}
	if got["closed-port"].Class != "reset" {
		t.Errorf("closed port through a proxy: %s, want a reset", got["closed-port"].Class)
	}
}

// TestLossyProxy: the probe names what a proxy that loses the server's FIN
// and turns resets into closes breaks, and passes what it does not break.
func TestLossyProxy(t *testing.T) {
	got := proxied(t, false)
	want := map[string]string{
		// Both directions ended: the proxy closes, so the FIN comes late.
		"half-close": OK,
		// The server's FIN is lost: the client waits for it.
		"server-half-close": "reply, then timeout instead of EOF",
		"idle":              OK,
		"bulk":              OK,
		"server-close-raw":  "reply, then timeout instead of EOF",
		"http10":            "reply, then timeout instead of EOF",
		"connection-close":  "reply, then timeout instead of EOF",
		"keepalive-off":     "not all 2xx: reply, then timeout instead of EOF",
		"rst-from-client":   "FIN instead of RST",
		"websocket":         OK,
		"h2c":               OK,
		"sse":               OK,
		"chunked":           OK,
		"pipelining":        OK,
		"concurrent":        OK,
		"source-ip":         OK,
	}
	for id, w := range want {
		if got[id].Outcome != w {
			t.Errorf("%s: %q, want %q", id, got[id].Outcome, w)
		}
	}
	// A close races the client's byte: unread, the kernel resets instead.
	if o := got["closed-port"].Outcome; o != ConnError && o != "connected, then read: eof" {
		t.Errorf("closed-port: %q", o)
	}
	if got["rst-from-server"].Outcome == OK {
		t.Error("rst-from-server: a reset turned into a close passed")
	}
}
