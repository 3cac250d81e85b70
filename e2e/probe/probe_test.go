package probe

import (
	"context"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLoopbackBaseline runs every behaviour against a server on loopback:
// without any proxy each must have its baseline outcome (Behaviour.Want).
func TestLoopbackBaseline(t *testing.T) {
	s, err := Listen("127.0.0.1", Ports{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Serve()
	p := s.Ports()
	p.Closed = freePort(t)
	c := &Client{Host: "localhost", Ports: p, Sizes: Sizes{BulkBytes: 4 << 20, Conns: 200, Requests: 20, Streams: 100, Idle: 10 * time.Millisecond}}
	if err := c.Resolve(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, b := range Behaviours {
		r := c.Run(context.Background(), b.ID)
		if r.Outcome != b.Want {
			t.Errorf("%s: %q (%s), want %q", b.ID, r.Outcome, r.Detail, b.Want)
		}
		t.Logf("%s: %s in %.1f ms: %s", b.ID, r.Outcome, r.Millis, r.Detail)
	}
	if r := c.Run(context.Background(), "nonsense"); r.Outcome != "unknown behaviour" {
		t.Errorf("unknown behaviour: %+v", r)
	}
}

// freePort is a loopback port nothing listens on (it did a moment ago).
func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestGRPCRefusalIsClassified: a gRPC client reports a failed dial as a
// status; the behaviour must still say how the network refused it, as the
// STRICT column compares refusals by class.
func TestGRPCRefusalIsClassified(t *testing.T) {
	c := &Client{Host: "127.0.0.1", Ports: Ports{HTTP: freePort(t)}, Sizes: Sizes{Streams: 3}}
	if err := c.Resolve(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := c.Run(context.Background(), "grpc-streams")
	if r.Class != "refused" {
		t.Errorf("class %q (outcome %q, %s), want refused", r.Class, r.Outcome, r.Detail)
	}
}

// TestGRPCResetAfterConnectIsClassified: a STRICT destination may accept
// the connection and reset it at the client preface; the behaviour must
// report a reset, not gRPC's "Unavailable".
func TestGRPCResetAfterConnectIsClassified(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	c := &Client{Host: "127.0.0.1", Ports: Ports{HTTP: ln.Addr().(*net.TCPAddr).Port}, Sizes: Sizes{Streams: 3}}
	if err := c.Resolve(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := c.Run(context.Background(), "grpc-streams"); r.Class != "reset" {
		t.Errorf("class %q (outcome %q, %s), want reset", r.Class, r.Outcome, r.Detail)
	}
}

// TestGRPCStallFails: a path that accepts the connection and then never
// answers fails the behaviour once no stream has echoed for a hang timeout,
// and says so, rather than waiting forever.
func TestGRPCStallFails(t *testing.T) {
	old := hangTimeout
	hangTimeout = 100 * time.Millisecond
	t.Cleanup(func() { hangTimeout = old })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
			go func() { io.Copy(io.Discard, c); c.Close() }() // reads, never answers
		}
	}()
	c := &Client{Host: "127.0.0.1", Ports: Ports{HTTP: ln.Addr().(*net.TCPAddr).Port}, Sizes: Sizes{Streams: 3}}
	if err := c.Resolve(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := c.Run(context.Background(), "grpc-streams")
	if r.Outcome == OK || !strings.Contains(r.Detail, errStalled.Error()) {
		t.Errorf("outcome %q (%s), want a failure naming the stall", r.Outcome, r.Detail)
	}
}

// TestLoadRowWithoutLoadFails: a load behaviour with a zero count fails
// instead of passing without sending anything.
func TestLoadRowWithoutLoadFails(t *testing.T) {
	c := &Client{Host: "127.0.0.1", Ports: Ports{HTTP: freePort(t), Echo: freePort(t)}}
	for _, b := range []string{"concurrent", "keepalive-off", "grpc-streams"} {
		if r := c.Run(context.Background(), b); r.Outcome != "no load configured" {
			t.Errorf("%s with a zero count: %q, want %q", b, r.Outcome, "no load configured")
		}
	}
}

// TestOverHTTPUsesOnlyTheHTTPPort: the behaviours that claim to run through
// an HTTP proxy pass with every other port of the server closed, and the
// others (but closed-port, which wants a closed port) need those ports.
func TestOverHTTPUsesOnlyTheHTTPPort(t *testing.T) {
	s, err := Listen("127.0.0.1", Ports{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Serve()
	closed := freePort(t)
	p := Ports{HTTP: s.Ports().HTTP, HalfClose: closed, Banner: closed, ServerReset: closed, ClientReset: closed,
		Bulk: closed, Echo: closed, ServerHalfClose: closed, Closed: closed}
	c := &Client{Host: "127.0.0.1", Ports: p, Sizes: Sizes{BulkBytes: 1 << 20, Conns: 10, Requests: 10, Streams: 10, Idle: time.Millisecond}}
	if err := c.Resolve(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, b := range Behaviours {
		r := c.Run(context.Background(), b.ID)
		if got := r.Outcome == b.Want; got != b.OverHTTP() && b.ID != "closed-port" {
			t.Errorf("%s (over HTTP: %v) with only the HTTP port open: %q (%s)", b.ID, b.OverHTTP(), r.Outcome, r.Detail)
		}
	}
}

// TestClassifyShutdownAfterReset: a half-close of a connection the peer
// reset right after it connected fails with ENOTCONN; that is a reset, as
// the STRICT column compares refusals by class.
func TestClassifyShutdownAfterReset(t *testing.T) {
	err := &net.OpError{Op: "close", Net: "tcp", Err: os.NewSyscallError("shutdown", syscall.ENOTCONN)}
	if got := Classify(err); got != "reset" {
		t.Errorf("Classify(%v) = %q, want reset", err, got)
	}
}
