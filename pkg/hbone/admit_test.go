package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
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
	return openIdleFrom(t, addr, nil, n)
}

// openIdleFrom is openIdle from source address src (nil: the kernel's
// choice, 127.0.0.1).
func openIdleFrom(t *testing.T, addr string, src net.IP, n int) *atomic.Int64 {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
	var resets atomic.Int64
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // after the connections close (cleanups run last first)
	for range n {
		c, err := d.Dial("tcp", addr)
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

// TestFewSourcesCannotFillTheServer is the attack left open by the
// per-source limit alone: a few sources, each near that limit, fill the
// server-wide limit with handshakes they never finish. A peer from another
// address still gets its tunnel, by taking the oldest handshake of the
// source holding the most; that source gets no more while it holds the most.
func TestFewSourcesCannotFillTheServer(t *testing.T) {
	e := newEnv(t, Options{})
	const perSource, total = 25, 40
	srv, addr := fairServer(t, e, 256, Options{MaxHandshakesPerSource: perSource, MaxHandshakes: total})
	a := openIdleFrom(t, addr, net.IPv4(127, 0, 0, 3), perSource)
	b := openIdleFrom(t, addr, net.IPv4(127, 0, 0, 4), total-perSource)
	await.True(t, "the attackers' handshakes fill the server", func() bool { return srv.HandshakesInFlight() == total })

	dialFrom127002(t, e, addr)
	await.True(t, "the heaviest source's oldest handshake reset for the newcomer", func() bool { return a.Load() == 1 })
	moreB := openIdleFrom(t, addr, net.IPv4(127, 0, 0, 4), 1)
	await.True(t, "the freed slot taken", func() bool { return srv.HandshakesInFlight() == total })
	moreA := openIdleFrom(t, addr, net.IPv4(127, 0, 0, 3), 1)
	await.True(t, "the source holding the most shed when full", func() bool { return moreA.Load() == 1 })
	if b.Load()+moreB.Load() != 0 {
		t.Errorf("%d handshakes of the lighter source reset", b.Load()+moreB.Load())
	}
	if got := srv.HandshakesShed(); got != (ShedStats{Total: 2}) {
		t.Errorf("HandshakesShed = %+v, want 2 at the server limit (one evicted, one refused)", got)
	}
	if p := srv.handshakePeak(); p > total {
		t.Errorf("%d handshakes in flight at once, server limit %d", p, total)
	}
}

// TestAdmissionFairShare: while full, a newcomer takes the oldest handshake
// of the source holding the most, and only when it holds fewer; IPv6
// sources count per /64.
func TestAdmissionFairShare(t *testing.T) {
	a := newAdmission(Options{MaxHandshakesPerSource: 3, MaxHandshakes: 4})
	aborted := map[string]bool{}
	admit := func(src, name string) (*ticket, bool) {
		return a.admit(netip.MustParseAddr(src), func() { aborted[name] = true })
	}
	mustAdmit := func(src, name string) *ticket {
		t.Helper()
		tk, ok := admit(src, name)
		if !ok {
			t.Fatalf("%s from %s shed", name, src)
		}
		return tk
	}
	mustAdmit("2001:db8::1", "v6-1")
	mustAdmit("2001:db8::2", "v6-2") // same /64
	if _, ok := admit("2001:db8::3", "v6-3"); !ok {
		t.Fatal("third from the /64 shed under the per-source limit of 3")
	}
	if _, ok := admit("2001:db8::ffff", "v6-4"); ok {
		t.Fatal("a fourth from the same /64 admitted: IPv6 sources must count per /64")
	}
	first := mustAdmit("10.0.0.1", "v4-1") // server now full (4)
	if _, ok := admit("10.0.0.1", "v4-2"); !ok || !aborted["v6-1"] {
		t.Fatalf("a source holding 1 did not take the oldest of the /64 holding 3 (aborted %v)", aborted)
	}
	if _, ok := admit("10.0.0.1", "v4-3"); ok {
		t.Fatal("a source holding 2 evicted one of a source holding 2")
	}
	a.done(first)
	if n := a.inFlightNow(); n != 3 {
		t.Errorf("in flight %d after one done, want 3", n)
	}
	if got := (ShedStats{PerSource: a.shedSource.Load(), Total: a.shedTotal.Load()}); got != (ShedStats{PerSource: 1, Total: 2}) {
		t.Errorf("shed %+v, want 1 per source, 2 server (one eviction, one refusal)", got)
	}
}

// TestConnectionsCappedPerPeer is the attack of #13 M2 on established
// connections: one identity opens more connections than its share (each
// from a dialer of its own, so a pool of its own) to hold the listener's
// slots. Past MaxConnectionsPerPeer its connections are closed after the
// handshake and counted; another identity still connects, and the first
// gets its share back as its connections close.
func TestConnectionsCappedPerPeer(t *testing.T) {
	e := newEnv(t, Options{MaxConnectionsPerPeer: 2})
	dial := func(d *Dialer) (*ClientStream, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return d.Dial(ctx, e.addr, tlsconfig.AuthorizeID(serverID), e.echo, nil)
	}
	var held []*Dialer
	for i := range 2 {
		d := e.newDialer(t, clientID, Options{})
		s, err := dial(d)
		if err != nil {
			t.Fatalf("connection %d of %s, within its share: %v", i+1, clientID, err)
		}
		echoOn(t, s, "held")
		held = append(held, d)
	}
	if s, err := dial(e.newDialer(t, clientID, Options{})); err == nil {
		s.Close()
		t.Fatalf("a third connection of %s got a tunnel", clientID)
	}
	if got := e.srv.HandshakesShed().PerPeer; got == 0 {
		t.Error("the refused connection was not counted (PerPeer = 0)")
	}
	other, err := dial(e.newDialer(t, spiffeid.RequireFromPath(td, "/ns/b/sa/y"), Options{}))
	if err != nil {
		t.Fatalf("another identity was refused: %v", err)
	}
	echoOn(t, other, "another tenant")
	other.Close()

	held[0].Close() // its pooled connection with it
	await.NoError(t, "a connection of "+clientID.String()+" once one of its two closed", func() error {
		s, err := dial(e.newDialer(t, clientID, Options{}))
		if err == nil {
			echoOn(t, s, "share back")
			s.Close()
		}
		return err
	})
}

// TestPeerLimitOption: MaxConnectionsPerPeer 0 is the default, negative no
// limit (PerKey then counts nothing: connlimit's tests), anything else
// itself.
func TestPeerLimitOption(t *testing.T) {
	for opt, want := range map[int]int{0: DefaultMaxConnectionsPerPeer, -1: -1, 2: 2} {
		if got := newPeerCount(opt).Limit(); got != want {
			t.Errorf("MaxConnectionsPerPeer %d: limit %d, want %d", opt, got, want)
		}
	}
}
