package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/pkg/connlimit"
)

// fairServer serves e's handler on a connection-capped listener (as the
// node agent does on 15008) with a handshake timeout far longer than the
// test, so nothing but the handshake limits frees a slot.
func fairServer(t *testing.T, e *env, maxConns int, opts Options) (*Server, string) {
	t.Helper()
	srv := &Server{TLS: e.srv.TLS, Handler: e.srv.Handler, Options: opts, HandshakeTimeout: time.Minute}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(connlimit.Capped(l.(*net.TCPListener), maxConns))
	t.Cleanup(func() { srv.Close() })
	return srv, l.Addr().String()
}

// openIdle opens n TCP connections from 127.0.0.1 to addr that never send a
// byte, and counts those the server resets.
func openIdle(t *testing.T, addr string, n int) *atomic.Int64 {
	t.Helper()
	var resets atomic.Int64
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // after the connections close (cleanups run last first)
	for range n {
		c, err := net.Dial("tcp", addr)
		if errors.Is(err, syscall.ECONNRESET) { // reset before connect returned
			resets.Add(1)
			continue
		}
		if err != nil {
			t.Fatalf("attacker dial: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := io.Copy(io.Discard, c)
			if errors.Is(err, syscall.ECONNRESET) {
				resets.Add(1)
			}
		}()
	}
	return &resets
}

// dialFrom127002 opens a tunnel through addr from source 127.0.0.2 and
// echoes over it, within a deadline far shorter than the handshake timeout.
func dialFrom127002(t *testing.T, e *env, addr string) {
	t.Helper()
	d := e.newDialer(t, clientID, Options{})
	d.DialContext = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := d.Dial(ctx, addr, tlsconfig.AuthorizeID(serverID), e.echo, nil)
	if err != nil {
		t.Fatalf("legitimate client from 127.0.0.2 got no tunnel: %v", err)
	}
	defer s.Close()
	echoOn(t, s, "still served")
}

func (s *Server) handshakePeak() int {
	s.admit.mu.Lock()
	defer s.admit.mu.Unlock()
	return s.admit.peak
}

// TestIdleHandshakesFromOneSourceDoNotStarveOthers is the attack of #13 M2:
// one source opens 1000 connections to a server whose listener holds 256
// and never starts TLS. Without per-source handshake limits they fill
// every slot for the handshake timeout and a peer from another address
// waits in the accept queue; with them, all but 64 are reset at once and
// counted, and the other peer gets its tunnel.
func TestIdleHandshakesFromOneSourceDoNotStarveOthers(t *testing.T) {
	e := newEnv(t, Options{})
	srv, addr := fairServer(t, e, 256, Options{})
	const attackers, limit = 1000, DefaultMaxHandshakesPerSource
	resets := openIdle(t, addr, attackers)
	// Queued behind the attacker's connections in the accept queue.
	dialFrom127002(t, e, addr)
	await.True(t, "the excess handshakes reset", func() bool { return resets.Load() == attackers-limit })
	await.True(t, "the kept handshakes in flight", func() bool { return srv.HandshakesInFlight() == limit })
	if got := srv.HandshakesShed(); got != (ShedStats{PerSource: attackers - limit}) {
		t.Errorf("HandshakesShed = %+v, want %d per source", got, attackers-limit)
	}
	if p := srv.handshakePeak(); p > limit+1 {
		t.Errorf("%d handshakes in flight at once, limit %d per source (+1 for the legitimate peer)", p, limit)
	}
}

// TestHandshakesCappedPerServer: the server-wide limit holds however many
// sources there are: the excess, and any connection after it, is reset.
func TestHandshakesCappedPerServer(t *testing.T) {
	e := newEnv(t, Options{})
	srv, addr := fairServer(t, e, 1024, Options{MaxHandshakes: 100, MaxHandshakesPerSource: -1})
	resets := openIdle(t, addr, 150)
	await.True(t, "the excess handshakes reset", func() bool { return resets.Load() == 50 })
	if got := srv.HandshakesShed(); got != (ShedStats{Total: 50}) {
		t.Errorf("HandshakesShed = %+v, want 50 over the total", got)
	}
	if p := srv.handshakePeak(); p != 100 {
		t.Errorf("handshake peak %d, want the limit 100", p)
	}
	one := openIdle(t, addr, 1)
	await.True(t, "one more connection over the limit reset", func() bool { return one.Load() == 1 })
	if got := srv.HandshakesShed().Total; got != 51 {
		t.Errorf("HandshakesShed().Total = %d, want 51", got)
	}
}
