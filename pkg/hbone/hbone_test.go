//lint:file-ignore SA1019 the refusal tests need a raw x/net/http2 client to send what a real HBONE peer would not.

package hbone

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"golang.org/x/net/http2"

	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/pkg/spiffetest"
)

func TestRoundTripAndHeaders(t *testing.T) {
	e := newEnv(t, Options{})
	h := http.Header{}
	SetForwarded(h, net.ParseIP("10.1.2.3"))
	h.Set("Baggage", "k8s.namespace.name=a,k8s.pod.name=x-1")
	h.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	s, err := e.dialer.Dial(context.Background(), e.addr, tlsconfig.AuthorizeID(serverID), e.echo, h)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Peer() != serverID {
		t.Errorf("client saw peer %s, want %s", s.Peer(), serverID)
	}
	for _, msg := range []string{"hello", "world", strings.Repeat("z", 100000)} {
		if _, err := s.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(s, got); err != nil || string(got) != msg {
			t.Fatalf("echo %d bytes: err=%v match=%v", len(msg), err, string(got) == msg)
		}
	}
	want := seen{clientID, e.echo, "for=10.1.2.3", "k8s.namespace.name=a,k8s.pod.name=x-1", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	if got := e.lastSeen(); got != want {
		t.Errorf("handler saw %+v\nwant %+v", got, want)
	}
	h6 := http.Header{}
	SetForwarded(h6, net.ParseIP("fd00::1"))
	if got := h6.Get("Forwarded"); got != `for="[fd00::1]"` {
		t.Errorf("IPv6 Forwarded = %s", got)
	}
}

// TestRequestHeaderBlocks: a request header that is not valid HTTP fails
// the Dial before anything is sent (an encoded but unsent block would put
// the server's HPACK table out of step, breaking every later stream on the
// connection), connection-specific fields are not sent, and a header block
// larger than the server's frames goes out as HEADERS plus CONTINUATION
// and arrives whole.
func TestRequestHeaderBlocks(t *testing.T) {
	e := newEnv(t, Options{MaxFrameSize: 16 << 10})
	echoOnce(t, e) // the pooled connection, with the server's SETTINGS
	ctx := context.Background()
	for _, bad := range []http.Header{{"X-Bad": {"line\r\nbreak"}}, {"Bad Name": {"v"}}} {
		if s, err := e.dialer.Dial(ctx, e.addr, tlsconfig.AuthorizeID(serverID), e.echo, bad); err == nil {
			s.Close()
			t.Errorf("Dial with header %q succeeded, want an error", bad)
		}
	}
	if n := e.srv.stats.resetsSent.Load(); n != 0 {
		t.Errorf("the server reset %d streams: the invalid headers were sent", n)
	}
	h := http.Header{"Connection": {"close"}, "Host": {"elsewhere"}}
	h.Set("Forwarded", "for=10.0.0.9;x="+strings.Repeat("a", 40<<10))
	s, err := e.dialer.Dial(ctx, e.addr, tlsconfig.AuthorizeID(serverID), e.echo, h)
	if err != nil {
		t.Fatalf("Dial with a 40 KiB header over 16 KiB frames: %v", err)
	}
	echoOn(t, s, "after")
	s.Close()
	if got := e.lastSeen().Forwarded; got != h.Get("Forwarded") {
		t.Errorf("server saw a Forwarded header of %d bytes, want %d", len(got), len(h.Get("Forwarded")))
	}
	if n := e.ln.count(); n != 1 {
		t.Errorf("%d tunnel connections, want the one pooled connection throughout", n)
	}
}

// Client half-closes first: the server side reads EOF, the target sees FIN,
// and the reply still flows back afterwards.
func TestHalfCloseClientFirst(t *testing.T) {
	e := newEnv(t, Options{})
	target := startTarget(t, func(c *net.TCPConn) {
		n, _ := io.Copy(io.Discard, c) // until the client's FIN arrives
		fmt.Fprintf(c, "got %d bytes", n)
		c.CloseWrite()
	})
	s := e.dial(t, target)
	defer s.Close()
	if _, err := s.Write(make([]byte, 12345)); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("x")); err == nil {
		t.Error("Write after CloseWrite succeeded")
	}
	reply, err := io.ReadAll(s)
	if err != nil || string(reply) != "got 12345 bytes" {
		t.Fatalf("reply %q err %v", reply, err)
	}
	if err := <-e.streamErr; err != nil {
		t.Errorf("server pipe: %v", err)
	}
}

// Server half-closes first (target sends a banner and FIN): the client gets
// all the data then EOF, and the client's direction stays open: what it
// sends afterwards still reaches the server (see TestServerFirstHalfClose
// for the byte-exact version).
func TestHalfCloseServerFirst(t *testing.T) {
	e := newEnv(t, Options{})
	got := make(chan string, 1)
	target := startTarget(t, func(c *net.TCPConn) {
		c.Write([]byte("banner"))
		c.CloseWrite()
		b, _ := io.ReadAll(c)
		got <- string(b)
	})
	s := e.dial(t, target)
	defer s.Close()
	b, err := io.ReadAll(s)
	if err != nil || string(b) != "banner" {
		t.Fatalf("read %q err %v", b, err)
	}
	if _, err := s.Write([]byte("after the banner")); err != nil {
		t.Fatalf("write after the server's half-close: %v", err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if g := <-got; g != "after the banner" {
		t.Fatalf("target read %q after its half-close, want %q", g, "after the banner")
	}
	if err := <-e.streamErr; err != nil {
		t.Errorf("server pipe: %v", err)
	}
}

func TestLargeTransferIntegrity(t *testing.T) {
	size := 64 << 20
	if testing.Short() {
		size = 8 << 20
	}
	e := newEnv(t, Options{})
	s := e.dial(t, e.echo)
	defer s.Close()
	src := rand.New(rand.NewPCG(1, 2))
	sent := sha256.New()
	go func() {
		buf := make([]byte, 256<<10)
		for left := size; left > 0; left -= len(buf) {
			for i := range buf {
				buf[i] = byte(src.Uint32())
			}
			sent.Write(buf)
			if _, err := s.Write(buf); err != nil {
				t.Errorf("write: %v", err)
				return
			}
		}
		s.CloseWrite()
	}()
	got := sha256.New()
	n, err := io.Copy(got, s)
	if err != nil || n != int64(size) {
		t.Fatalf("echoed %d of %d bytes: %v", n, size, err)
	}
	if !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		t.Fatal("sha256 mismatch after round trip")
	}
}

func TestConcurrentStreamsShareOneConnection(t *testing.T) {
	e := newEnv(t, Options{})
	// One stream first: until the server's SETTINGS (1000 streams) arrive
	// the client assumes 100 and would open a second connection.
	echoOnce(t, e)
	const streams = 200
	var wg sync.WaitGroup
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := e.dialer.Dial(context.Background(), e.addr, tlsconfig.AuthorizeID(serverID), e.echo, nil)
			if err != nil {
				t.Error(err)
				return
			}
			defer s.Close()
			msg := bytes.Repeat([]byte{byte(i)}, 32<<10+i)
			go func() { s.Write(msg); s.CloseWrite() }()
			got, err := io.ReadAll(s)
			if err != nil || !bytes.Equal(got, msg) {
				t.Errorf("stream %d: %d bytes, err %v", i, len(got), err)
			}
		}()
	}
	wg.Wait()
	if n := e.ln.count(); n != 1 {
		t.Errorf("%d TCP connections accepted, want 1", n)
	}
	if n := e.accepted.Load(); n != streams+1 {
		t.Errorf("server accepted %d streams, want %d", n, streams+1)
	}
}

// TestStreamsBeyondTheServersLimitOpenAnotherConnection: long-lived streams
// beyond a connection's MaxConcurrentStreams get a connection of their own
// instead of waiting, forever, for one of the others to end (1,200
// concurrent connections across nodes hung at 1,000 before).
func TestStreamsBeyondTheServersLimitOpenAnotherConnection(t *testing.T) {
	e := newEnv(t, Options{MaxConcurrentStreams: 2})
	echoOnce(t, e) // SETTINGS: 2 streams per connection
	var open []*ClientStream
	for i := range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := e.dialer.Dial(ctx, e.addr, tlsconfig.AuthorizeID(serverID), e.echo, nil)
		cancel()
		if err != nil {
			t.Fatalf("stream %d while %d are open: %v", i, len(open), err)
		}
		echoOn(t, s, fmt.Sprintf("stream %d", i))
		open = append(open, s)
	}
	if n := e.ln.count(); n != 3 {
		t.Errorf("dialer made %d connections for 5 open streams at 2 per connection, want 3", n)
	}
	for _, s := range open {
		s.Close()
	}
	// Closed streams free their slots: the next ones reuse the pool.
	for range 4 {
		echoOnce(t, e)
	}
	if n := e.ln.count(); n != 3 {
		t.Errorf("after the streams closed, %d connections, want still 3", n)
	}
}

func echoOnce(t *testing.T, e *env) {
	t.Helper()
	s := e.dial(t, e.echo)
	defer s.Close()
	s.Write([]byte("ping"))
	s.CloseWrite()
	if got, err := io.ReadAll(s); err != nil || string(got) != "ping" {
		t.Fatalf("echo: %q %v", got, err)
	}
}

func TestPoolReconnect(t *testing.T) {
	t.Run("connection killed", func(t *testing.T) {
		e := newEnv(t, Options{})
		echoOnce(t, e)
		e.ln.killAll()
		// No sleep: the pool may still hold the dead conn and must retry.
		echoOnce(t, e)
		if n := e.ln.count(); n != 2 {
			t.Errorf("dialed %d connections, want 2", n)
		}
	})
	t.Run("GOAWAY on idle", func(t *testing.T) {
		e := newEnv(t, Options{IdleTimeout: 100 * time.Millisecond})
		echoOnce(t, e)
		await.True(t, "the idle server's GOAWAY to retire the pooled connection", func() bool { return !e.pooledUsable() })
		echoOnce(t, e)
		if n := e.ln.count(); n != 2 {
			t.Errorf("dialed %d connections, want 2", n)
		}
	})
}

// TestStreamIDsUsedUp: a connection whose stream IDs ran out (2^31-1)
// takes no more streams; the next Dial goes to a fresh connection, and the
// old one closes once its last stream ended.
func TestStreamIDsUsedUp(t *testing.T) {
	e := newEnv(t, Options{})
	old := e.dial(t, e.echo)
	pc := old.pc
	pc.h2.mu.Lock()
	pc.h2.maxStreamID = maxClientStreamID - 2
	pc.h2.mu.Unlock()
	echoOnce(t, e)
	if n := e.ln.count(); n != 2 {
		t.Fatalf("%d tunnel connections, want a second one once the first ran out of stream IDs", n)
	}
	echoOn(t, old, "still open")
	old.Close()
	await.True(t, "the used-up connection to close after its last stream", func() bool {
		pc.h2.mu.Lock()
		defer pc.h2.mu.Unlock()
		return pc.h2.closeErr != nil
	})
}

func TestCertificateRotation(t *testing.T) {
	e := newEnv(t, Options{})
	echoOnce(t, e)
	rotated := spiffeidMust("spiffe://cluster.local/ns/weft-system/sa/weft-node-v2")
	e.serverSrc.v.Store(e.ca.Issue(t, rotated))
	e.dialer.Close() // force a new handshake
	s, err := e.dialer.Dial(context.Background(), e.addr, tlsconfig.AuthorizeID(rotated), e.echo, nil)
	if err != nil {
		t.Fatalf("listener did not pick up the rotated SVID: %v", err)
	}
	s.Close()
}

func TestResetPropagates(t *testing.T) {
	t.Run("client reset reaches server", func(t *testing.T) {
		e := newEnv(t, Options{})
		arrived := make(chan struct{})
		target := startTarget(t, func(c *net.TCPConn) {
			io.ReadFull(c, make([]byte, len("partial")))
			close(arrived)
			io.Copy(io.Discard, c)
		})
		s := e.dial(t, target)
		s.Write([]byte("partial"))
		<-arrived // the stream is established end to end
		s.Close() // neither side finished: RST_STREAM
		select {
		case err := <-e.streamErr:
			if err == nil {
				t.Error("server pipe ended cleanly after a client reset")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("server pipe did not notice the reset")
		}
	})
	t.Run("server reset reaches client", func(t *testing.T) {
		e := newEnv(t, Options{})
		received := make(chan struct{})
		target := startTarget(t, func(c *net.TCPConn) {
			c.SetLinger(0) // close sends TCP RST
			c.Write([]byte("x"))
			<-received // reset only once the data went through
		})
		s := e.dial(t, target)
		defer s.Close()
		if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
			t.Fatalf("reading the target's byte: %v", err)
		}
		close(received)
		_, err := io.ReadAll(s)
		if err == nil {
			t.Error("client read EOF after the target reset; want an error")
		}
	})
}

// Every kind of bad input is refused cleanly and counted, and the server
// keeps serving good streams afterwards.
func TestRefusals(t *testing.T) {
	e := newEnv(t, Options{})
	otherCA := spiffetest.NewCA(t, td)
	ctx := context.Background()
	goodTLS := func(id string) *tls.Config {
		c := tlsconfig.MTLSClientConfig(e.ca.Issue(t, spiffeidMust(id)), e.ca.Bundle(), tlsconfig.AuthorizeID(serverID))
		c.NextProtos = []string{"h2"}
		return c
	}
	h2Do := func(req *http.Request) (*http.Response, error) {
		tr := &http2.Transport{DialTLSContext: func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) {
			return tls.Dial("tcp", e.addr, goodTLS(clientID.String()))
		}}
		defer tr.CloseIdleConnections()
		return tr.RoundTrip(req)
	}
	cases := []struct {
		name string
		run  func(t *testing.T) error // returns the error the client saw
		want func(error) bool
	}{
		{"untrusted client cert", func(t *testing.T) error {
			d := &Dialer{SVID: otherCA.Issue(t, clientID), Bundle: e.ca.Bundle()}
			defer d.Close()
			_, err := d.Dial(ctx, e.addr, tlsconfig.AuthorizeID(serverID), e.echo, nil)
			return err
		}, refusedCert},
		{"client trusts other CA", func(t *testing.T) error {
			d := &Dialer{SVID: e.ca.Issue(t, clientID), Bundle: otherCA.Bundle()}
			defer d.Close()
			_, err := d.Dial(ctx, e.addr, tlsconfig.AuthorizeID(serverID), e.echo, nil)
			return err
		}, func(err error) bool { return err != nil }},
		{"no client cert", func(t *testing.T) error {
			c := tlsconfig.TLSClientConfig(e.ca.Bundle(), tlsconfig.AuthorizeAny())
			c.NextProtos = []string{"h2"}
			conn, err := tls.Dial("tcp", e.addr, c)
			if err != nil {
				return err
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			// TLS 1.3: the server's rejection arrives after the client's Finished.
			_, err = conn.Read(make([]byte, 1))
			return err
		}, func(err error) bool { return err != nil }},
		{"wrong server identity", func(t *testing.T) error {
			_, err := e.dialer.Dial(ctx, e.addr, tlsconfig.AuthorizeID(otherID), e.echo, nil)
			return err
		}, func(err error) bool { return errors.Is(err, ErrUnauthorizedPeer) }},
		{"plain-text garbage", func(t *testing.T) error {
			return rawExchange(e.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		}, func(err error) bool { return err != nil }},
		{"binary garbage", func(t *testing.T) error {
			return rawExchange(e.addr, "\x16\x03\x01\x00\x05hello-not-tls")
		}, func(err error) bool { return err != nil }},
		{"HTTP/1.1 over TLS (ALPN http/1.1)", func(t *testing.T) error {
			c := goodTLS(clientID.String())
			c.NextProtos = []string{"http/1.1"}
			conn, err := tls.Dial("tcp", e.addr, c)
			if err != nil {
				return err
			}
			defer conn.Close()
			return tlsExchange(conn)
		}, func(err error) bool { return err != nil }},
		{"HTTP/1.1 over TLS (no ALPN)", func(t *testing.T) error {
			c := goodTLS(clientID.String())
			c.NextProtos = nil
			conn, err := tls.Dial("tcp", e.addr, c)
			if err != nil {
				return err
			}
			defer conn.Close()
			return tlsExchange(conn)
		}, func(err error) bool { return err != nil }},
		{"GET instead of CONNECT", func(t *testing.T) error {
			req, _ := http.NewRequest("GET", "https://"+e.addr+"/", nil)
			resp, err := h2Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			return &RefusedError{Status: resp.StatusCode}
		}, func(err error) bool { return isRefused(err, http.StatusMethodNotAllowed) }},
		{"CONNECT without port", func(t *testing.T) error {
			_, err := e.dialer.Dial(ctx, e.addr, tlsconfig.AuthorizeID(serverID), "10.0.0.1", nil)
			return err
		}, func(err error) bool { return isRefused(err, http.StatusBadRequest) }},
		{"policy refusal", func(t *testing.T) error {
			h := http.Header{"X-Test-Refuse": {"1"}}
			_, err := e.dialer.Dial(ctx, e.addr, tlsconfig.AuthorizeID(serverID), e.echo, h)
			if err != nil && !strings.Contains(err.Error(), "denied by test policy") {
				return fmt.Errorf("reason lost: %w", err)
			}
			return err
		}, func(err error) bool { return isRefused(err, http.StatusForbidden) }},
		{"unreachable destination", func(t *testing.T) error {
			l, _ := net.Listen("tcp", "127.0.0.1:0")
			dead := l.Addr().String()
			l.Close()
			_, err := e.dialer.Dial(ctx, e.addr, tlsconfig.AuthorizeID(serverID), dead, nil)
			return err
		}, func(err error) bool { return isRefused(err, http.StatusServiceUnavailable) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run(t)
			if !tc.want(err) {
				t.Fatalf("unexpected result: %v", err)
			}
			t.Logf("refused: %v", err)
			echoOnce(t, e) // the server still serves good streams
		})
	}
}

// A refused client certificate is reported as the server's TLS alert on
// every dial. In TLS 1.3 the server refuses after our handshake is done, so
// our first frames may meet its RST: a write that fails that way must not
// hide the alert already received (it did in ~5% of dials).
func TestRefusedCertificateSaysWhy(t *testing.T) {
	e := newEnv(t, Options{})
	otherCA := spiffetest.NewCA(t, td)
	for i := range 100 {
		d := &Dialer{SVID: otherCA.Issue(t, clientID), Bundle: e.ca.Bundle()}
		_, err := d.Dial(context.Background(), e.addr, tlsconfig.AuthorizeID(serverID), e.echo, nil)
		d.Close()
		if !refusedCert(err) {
			t.Fatalf("dial %d: %v, want the server's bad-certificate alert", i, err)
		}
	}
}

// rawExchange writes garbage on a plain TCP conn and expects the server to
// hang up rather than answer.
func rawExchange(addr, payload string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte(payload))
	b, err := io.ReadAll(c)
	if bytes.Contains(b, []byte("HTTP/1.1 200")) {
		return nil
	}
	if err == nil {
		err = fmt.Errorf("server hung up after %d bytes (TLS alert)", len(b))
	}
	return err
}

func tlsExchange(conn *tls.Conn) error {
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	conn.Write([]byte("CONNECT 10.0.0.1:80 HTTP/1.1\r\nHost: 10.0.0.1:80\r\n\r\n"))
	b, err := io.ReadAll(conn)
	if err == nil {
		err = fmt.Errorf("server hung up after %d bytes", len(b))
	}
	if bytes.HasPrefix(b, []byte("HTTP/1.1 200")) {
		return nil
	}
	return err
}

// Finished streams leave no goroutines behind: an idle pooled connection
// costs only what x/net/http2 itself runs.
func TestNoGoroutineLeak(t *testing.T) {
	e := newEnv(t, Options{})
	echoOnce(t, e)
	base := settledGoroutines(t)
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() { defer wg.Done(); echoOnce(t, e) }()
	}
	wg.Wait()
	await.NoError(t, "the goroutines of 50 finished streams to end", func() error {
		if n := runtime.NumGoroutine(); n > base {
			return fmt.Errorf("%d goroutines, %d before the streams", n, base)
		}
		return nil
	})
}

// settledGoroutines is the goroutine count once the goroutines of
// finished streams have ended: the same count in ten successive polls.
func settledGoroutines(t *testing.T) int {
	n, same := runtime.NumGoroutine(), 0
	await.True(t, "the goroutine count to settle", func() bool {
		m := runtime.NumGoroutine()
		if m != n {
			n, same = m, 0
			return false
		}
		same++
		return same == 10
	})
	return n
}

// Shutdown is a handover: the stream in flight keeps flowing on the old
// server while the client, told by GOAWAY, takes its next stream to
// whichever server listens on the address now; Shutdown returns once the
// old connection's last stream ends.
func TestShutdownHandsOver(t *testing.T) {
	e := newEnv(t, Options{})
	old := e.dial(t, e.echo)
	defer old.Close()
	echoOn(t, old, "before")

	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { done <- e.srv.Shutdown(ctx) }()

	// The successor binds the address once the old listener is gone.
	var l net.Listener
	await.NoError(t, "the old listener to close", func() (err error) {
		l, err = net.Listen("tcp", e.addr)
		return err
	})
	next := &countingListener{Listener: l}
	successor := &Server{TLS: e.srv.TLS, Handler: e.srv.Handler}
	go successor.Serve(next)
	defer successor.Close()
	await.True(t, "the GOAWAY to retire the pooled connection", func() bool { return !e.pooledUsable() })

	fresh := e.dial(t, e.echo)
	defer fresh.Close()
	echoOn(t, fresh, "after")
	if next.count() != 1 {
		t.Errorf("successor accepted %d connections, want 1 (the new stream)", next.count())
	}
	echoOn(t, old, "still flowing") // the old stream is untouched
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v while a stream was open", err)
	default:
	}
	old.Close()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v, want nil once the last stream ended", err)
	}
}

// pooledUsable reports whether the dialer's pooled connection would take a
// new stream.
func (e *env) pooledUsable() bool {
	e.dialer.mu.Lock()
	defer e.dialer.mu.Unlock()
	for _, conns := range e.dialer.pool {
		for _, pc := range conns {
			select {
			case <-pc.ready:
				if pc.h2 != nil {
					if ok, _ := pc.h2.usable(); ok {
						return true
					}
				}
			default:
			}
		}
	}
	return false
}

func echoOn(t *testing.T, s *ClientStream, msg string) {
	t.Helper()
	if _, err := s.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(s, got); err != nil || string(got) != msg {
		t.Fatalf("echo %q: got %q, %v", msg, got, err)
	}
}
