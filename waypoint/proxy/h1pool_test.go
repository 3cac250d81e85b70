package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-mesh/weft/internal/await"
)

// scriptedUpstream accepts on loopback and hands the n-th connection (from 0) to
// serve, which answers with raw bytes: the upstream behaviours a pool has
// to survive, written out exactly.
type scriptedUpstream struct {
	addr   string
	conns  atomic.Int32
	closed chan int // connection numbers, as serve returns (and closes them)
}

func startScriptedUpstream(t *testing.T, serve func(n int, c net.Conn, br *bufio.Reader)) *scriptedUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptedUpstream{addr: ln.Addr().String(), closed: make(chan int, 16)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(s.conns.Add(1)) - 1
			go func() {
				defer func() { c.Close(); s.closed <- n }()
				serve(n, c, bufio.NewReader(c))
			}()
		}
	}()
	return s
}

// awaitClosed returns the number of the next connection serve returned
// from (and closed), failing the test if none does within testTimeout.
func (s *scriptedUpstream) awaitClosed(t *testing.T) int {
	t.Helper()
	select {
	case n := <-s.closed:
		return n
	case <-time.After(testTimeout):
		t.Fatalf("no upstream connection closed within %v", testTimeout)
		return -1
	}
}

// answerEach reads requests on c and answers each with reply until the
// client closes.
func answerEach(c net.Conn, br *bufio.Reader, reply string) {
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		if _, err := io.WriteString(c, reply); err != nil {
			return
		}
	}
}

const okReply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

func newTestPool(t *testing.T, s *scriptedUpstream) (*h1Pool, *atomic.Int32) {
	dials := new(atomic.Int32)
	p := &h1Pool{maxIdle: 4, idleTimeout: time.Minute, dial: func(ctx context.Context, _ string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", s.addr)
	}}
	t.Cleanup(p.close)
	return p, dials
}

// send sends one request without a body through p and returns the status
// and body, or the error.
func send(ctx context.Context, p *h1Pool, method string, hdr http.Header, max int) (string, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://upstream/", nil)
	if err != nil {
		return "", err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := p.roundTrip(req, "upstream", max)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.Status + " " + string(b), err
}

func mustSend(t *testing.T, p *h1Pool, method string) string {
	t.Helper()
	got, err := send(t.Context(), p, method, nil, 0)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	return got
}

func TestH1PoolReusesAnsweredConnections(t *testing.T) {
	s := startScriptedUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) { answerEach(c, br, okReply) })
	p, dials := newTestPool(t, s)
	for range 3 {
		if got := mustSend(t, p, "GET"); got != "200 OK ok" {
			t.Fatalf("got %q", got)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("3 sequential requests dialled %d connections, want 1", n)
	}
	// A body closed before its end takes its connection with it.
	req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://upstream/", nil)
	resp, err := p.roundTrip(req, "upstream", 0)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := s.awaitClosed(t); got != 0 {
		t.Fatalf("connection %d closed, want 0", got)
	}
	mustSend(t, p, "GET")
	if n := dials.Load(); n != 2 {
		t.Fatalf("after an abandoned body: %d dials, want 2", n)
	}
}

func TestH1PoolRetiresConnections(t *testing.T) {
	for _, tc := range []struct {
		name, reply    string
		max, wantDials int
		oneShot        bool // the server closes after its answer
	}{
		{"Connection: close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 0, 4, false},
		{"HTTP/1.0 without keep-alive", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 0, 4, false},
		{"max_requests_per_connection 2", okReply, 2, 2, false},
		{"bytes beyond the body", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", 0, 4, false},
		{"body ended by the close", "HTTP/1.1 200 OK\r\n\r\nok", 0, 4, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startScriptedUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
				if !tc.oneShot {
					answerEach(c, br, tc.reply)
				} else if _, err := http.ReadRequest(br); err == nil {
					io.WriteString(c, tc.reply)
				}
			})
			p, dials := newTestPool(t, s)
			for range 4 {
				got, err := send(t.Context(), p, "GET", nil, tc.max)
				if err != nil || got != "200 OK ok" {
					t.Fatalf("got %q, %v", got, err)
				}
			}
			if n := dials.Load(); int(n) != tc.wantDials {
				t.Fatalf("4 requests dialled %d connections, want %d", n, tc.wantDials)
			}
		})
	}
}

// An upstream that closed an idle connection is not sent the next request:
// even one that could not be retried succeeds.
func TestH1PoolDropsConnectionsClosedWhileIdle(t *testing.T) {
	s := startScriptedUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err == nil {
			io.WriteString(c, okReply) // keep-alive, then close anyway
		}
	})
	p, dials := newTestPool(t, s)
	mustSend(t, p, "POST")
	s.awaitClosed(t)
	await.True(t, "the pool sees the upstream's close", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.idle["upstream"]) == 1 && !p.idle["upstream"][0].stillIdle()
	})
	if got := mustSend(t, p, "POST"); got != "200 OK ok" {
		t.Fatalf("got %q", got)
	}
	if n := dials.Load(); n != 2 {
		t.Fatalf("%d dials, want 2", n)
	}
}

// The race the idle check cannot see: the upstream closes a reused
// connection as the request arrives. An idempotent request is sent again
// on a new connection; another is not (it may have been processed).
func TestH1PoolRetriesOnlyReplayableRequests(t *testing.T) {
	for _, tc := range []struct {
		method  string
		hdr     http.Header
		wantErr bool
	}{
		{"GET", nil, false},
		{"HEAD", nil, false},
		{"POST", nil, true},
		{"POST", http.Header{"Idempotency-Key": {"k1"}}, false},
	} {
		t.Run(tc.method+" "+tc.hdr.Get("Idempotency-Key"), func(t *testing.T) {
			s := startScriptedUpstream(t, func(n int, c net.Conn, br *bufio.Reader) {
				if n > 0 {
					answerEach(c, br, okReply)
					return
				}
				// The first request is answered, the second read and
				// left unanswered as the connection closes.
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
				http.ReadRequest(br)
			})
			p, _ := newTestPool(t, s)
			mustSend(t, p, tc.method)
			_, err := send(t.Context(), p, tc.method, tc.hdr, 0)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want an error: %v", err, tc.wantErr)
			}
		})
	}
}

func TestH1PoolSkipsInformationalResponses(t *testing.T) {
	s := startScriptedUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		answerEach(c, br, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"+okReply)
	})
	p, _ := newTestPool(t, s)
	for range 2 {
		if got := mustSend(t, p, "GET"); got != "200 OK ok" {
			t.Fatalf("got %q", got)
		}
	}
	flood := startScriptedUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		answerEach(c, br, strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", maxInformational+1)+okReply)
	})
	p, _ = newTestPool(t, flood)
	if _, err := send(t.Context(), p, "GET", nil, 0); err == nil {
		t.Fatal("more than maxInformational 1xx responses were accepted")
	}
}

// A header that would end the request head early is refused before
// anything is dialled or sent.
func TestH1PoolRefusesHeaderInjection(t *testing.T) {
	s := startScriptedUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) { answerEach(c, br, okReply) })
	p, dials := newTestPool(t, s)
	for _, h := range []http.Header{
		{"X-A": {"v\r\nX-Injected: 1"}},
		{"X-A\r\nX-Injected": {"1"}},
		{"X-A": {"v\n\nGET /smuggled HTTP/1.1"}},
	} {
		if _, err := send(t.Context(), p, "GET", h, 0); err == nil {
			t.Fatalf("header %q was sent", h)
		}
	}
	if n := dials.Load(); n != 0 {
		t.Fatalf("%d connections dialled for refused requests", n)
	}
}

// A request whose context ends while it waits for the answer returns, and
// its connection closes.
func TestH1PoolCancelWhileWaiting(t *testing.T) {
	read := make(chan struct{})
	s := startScriptedUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err == nil {
			close(read)
			io.Copy(io.Discard, br) // never answers; returns at the client's close
		}
	})
	p, _ := newTestPool(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := send(ctx, p, "GET", nil, 0)
		errc <- err
	}()
	select {
	case <-read:
	case err := <-errc:
		t.Fatalf("the request ended before the upstream read it: %v", err)
	}
	cancel()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("a cancelled request succeeded")
		}
	case <-time.After(testTimeout):
		t.Fatalf("a cancelled request still waits for its answer after %v", testTimeout)
	}
	s.awaitClosed(t)
}

func TestH1PoolClosesIdleConnections(t *testing.T) {
	s := startScriptedUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) { answerEach(c, br, okReply) })
	p, _ := newTestPool(t, s)
	p.idleTimeout = 10 * time.Millisecond
	mustSend(t, p, "GET")
	s.awaitClosed(t) // the idle timer closed it
	p.mu.Lock()
	n := len(p.idle)
	p.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d keys still have idle connections", n)
	}
}

func TestH1PoolClose(t *testing.T) {
	s := startScriptedUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) { answerEach(c, br, okReply) })
	p, _ := newTestPool(t, s)
	mustSend(t, p, "GET")
	p.close()
	s.awaitClosed(t)
	mustSend(t, p, "GET") // works, but keeps nothing
	s.awaitClosed(t)
}

// Through the waypoint: an upstream tunnel whose backend closed the
// connection while idle (the stand-in node agent ends the stream) is not
// sent the next request, which is a POST that could not be retried.
func TestUpstreamDropsTunnelsClosedWhileIdle(t *testing.T) {
	e := newEnv(t)
	b := startBackend(t, "a", nil)
	e.simple(nil, b)
	c := e.httpClient(vipAuthority())
	post := func() {
		t.Helper()
		resp, err := c.Post("http://"+vipAuthority()+"/", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST: status %d", resp.StatusCode)
		}
	}
	post()
	pool := e.wp.Upstream.h1pool
	idle := func() []*h1Conn {
		pool.mu.Lock()
		defer pool.mu.Unlock()
		var all []*h1Conn
		for _, conns := range pool.idle {
			all = append(all, conns...)
		}
		return all
	}
	if n := len(idle()); n != 1 {
		t.Fatalf("%d idle upstream connections after one request, want 1", n)
	}
	b.srv.SetKeepAlivesEnabled(false) // closes its idle connections
	await.True(t, "the idle tunnel ended", func() bool { return !idle()[0].stillIdle() })
	post()
	if n := b.conns.Load(); n != 2 {
		t.Fatalf("backend saw %d connections, want 2", n)
	}
}

// An upstream that never ends its response head costs a bounded read.
func TestH1PoolBoundsTheResponseHead(t *testing.T) {
	s := startScriptedUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		line := "X-Filler: " + strings.Repeat("a", 1000) + "\r\n"
		for {
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
	})
	p, _ := newTestPool(t, s)
	_, err := send(t.Context(), p, "GET", nil, 0)
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("error %v, want the head's limit", err)
	}
}
