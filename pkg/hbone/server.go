package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/net/http2"

	"github.com/weft-mesh/weft/pkg/connlimit"
)

// Request is one inbound CONNECT stream awaiting a decision. The handler
// must call Accept (then drive the returned stream) or return an error,
// which refuses the stream with the error's status (see Refuse).
type Request struct {
	Peer        spiffeid.ID // verified SPIFFE ID of the tunnel client
	Authority   string      // :authority, the original destination "ip:port"
	Forwarded   string      // Forwarded header, e.g. "for=10.0.0.1"
	Baggage     string      // baggage header (source workload metadata)
	Traceparent string      // W3C traceparent header
	Header      http.Header // all request headers
	RemoteAddr  net.Addr    // tunnel peer's TCP address
	LocalAddr   net.Addr    // our tunnel TCP address

	s     *stream
	mu    sync.Mutex // serialises Accept with the end of the handler
	st    *ServerStream
	ended bool // the handler returned
}

// RefusedError is a refusal: the server answers Status with Reason instead
// of 200, and the client's Dial returns it.
type RefusedError struct {
	Status int
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("hbone: CONNECT refused: %d %s: %s", e.Status, http.StatusText(e.Status), e.Reason)
}

// Refuse returns an error that makes the server answer status with reason
// (e.g. 403 for policy denials, 503 when the destination is unreachable).
func Refuse(status int, reason string) error { return &RefusedError{Status: status, Reason: reason} }

// Accept answers 200 and returns the stream. Data flows only after this.
func (r *Request) Accept() (*ServerStream, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.st != nil {
		return r.st, nil
	}
	if r.ended {
		return nil, errors.New("hbone: Accept after the handler gave up on the request")
	}
	if err := r.s.writeHeaders(http.StatusOK, nil, false); err != nil {
		return nil, fmt.Errorf("hbone: sending 200 to %s: %w", r.RemoteAddr, err)
	}
	r.st = &ServerStream{s: r.s}
	return r.st, nil
}

// Server terminates HBONE on accepted TCP connections.
type Server struct {
	// TLS must require client certificates (see ServerTLSConfig, or go-spiffe
	// tlsconfig.MTLSServerConfig); TLS 1.3 and ALPN h2 are forced on a copy.
	TLS *tls.Config
	// Handler decides on each stream; see Request. It runs on its own
	// goroutine per stream; ctx ends when the stream fails (reset either
	// way, connection lost) or Handler returns. The stream's write side ends
	// at CloseWrite/Close or when Handler returns; when Handler returns, a
	// client still sending is told to stop (RST_STREAM(NO_ERROR)). TLS,
	// Handler and Options are read once, when serving starts.
	Handler func(ctx context.Context, req *Request) error
	Options Options
	// HandshakeTimeout bounds the TLS handshake (default 10 s) so idle
	// garbage connections do not pile up.
	HandshakeTimeout time.Duration
	Logger           *slog.Logger

	initOnce sync.Once
	tlsConf  *tls.Config
	mu       sync.Mutex
	conns    map[net.Conn]*h2Conn // nil until the TLS handshake is done
	stats    resetStats
	admit    *admission
	peers    *connlimit.PerKey[spiffeid.ID]
	peerShed atomic.Uint64
	testConn func(*h2Conn) // test hook: each connection as it starts
	lns      map[net.Listener]struct{}
	closed   bool
}

// resetStats counts stream resets, for tests that a clean end is clean.
type resetStats struct {
	resetsSent, resetsReceived atomic.Int64
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("hbone: server closed")

func (s *Server) init() {
	s.initOnce.Do(func() {
		if s.Logger == nil {
			s.Logger = slog.New(slog.DiscardHandler)
		}
		if s.HandshakeTimeout == 0 {
			s.HandshakeTimeout = 10 * time.Second
		}
		if s.TLS != nil {
			s.tlsConf = hardenTLS(s.TLS)
		}
		s.conns = map[net.Conn]*h2Conn{}
		s.admit = newAdmission(s.Options)
		s.peers = newPeerCount(s.Options.MaxConnectionsPerPeer)
		s.lns = map[net.Listener]struct{}{}
	})
}

// Serve accepts connections on ln until Close; each is served on its own
// goroutine. It returns ErrServerClosed after Close.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
	if s.TLS == nil || s.Handler == nil {
		return errors.New("hbone: Server needs TLS and Handler")
	}
	if !s.track(ln, nil, true) {
		ln.Close()
		return ErrServerClosed
	}
	defer s.track(ln, nil, false)
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Transient (e.g. EMFILE): back off instead of spinning.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.Logger.Warn("hbone accept failed, retrying", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("hbone: accept on %s: %w", ln.Addr(), err)
		}
		backoff = 0
		go s.ServeConn(c)
	}
}

// ServeConn serves one raw TCP connection (TLS is done here) and returns
// when it closes. Use it for listeners the caller accepts itself.
func (s *Server) ServeConn(c net.Conn) {
	s.init()
	if !s.track(nil, c, true) {
		c.Close()
		return
	}
	defer s.track(nil, c, false)
	defer c.Close()
	if s.tlsConf == nil || s.Handler == nil {
		s.Logger.Error("hbone server has no TLS config or Handler; dropping connection", "remote", c.RemoteAddr())
		return
	}
	tc, ok := s.handshake(c)
	if !ok {
		return
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != ALPN || len(cs.PeerCertificates) == 0 {
		// A client that offered no ALPN at all gets here (Go's server accepts
		// it); HBONE has no HTTP/1 so hang up.
		s.Logger.Debug("hbone peer did not negotiate h2 with a client certificate", "remote", c.RemoteAddr(), "alpn", cs.NegotiatedProtocol)
		return
	}
	peer, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		s.Logger.Debug("hbone peer certificate has no SPIFFE ID", "remote", c.RemoteAddr(), "err", err)
		return
	}
	if !s.peers.Take(peer) {
		s.peerShed.Add(1)
		s.Logger.Debug("hbone connection shed: its peer holds the most connections allowed", "remote", c.RemoteAddr(), "peer", peer)
		return
	}
	defer s.peers.Release(peer)
	s.serveHTTP2(tc, c, peer)
}

// handshake runs the TLS handshake on c if its source and the server are
// under their handshake limits (Options.MaxHandshakesPerSource and
// MaxHandshakes, shared fairly among sources: see admission.admit);
// otherwise it resets c at once.
func (s *Server) handshake(c net.Conn) (*tlsConn, bool) {
	t, ok := s.admit.admit(sourceOf(c), func() { shed(c) })
	if !ok {
		s.Logger.Debug("hbone handshake shed: too many in flight", "remote", c.RemoteAddr())
		shed(c)
		return nil, false
	}
	defer s.admit.done(t)
	tc := newTLSConn(c, false, s.tlsConf)
	ctx, cancel := context.WithTimeout(context.Background(), s.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		s.Logger.Debug("hbone handshake failed", "remote", c.RemoteAddr(), "err", err)
		return nil, false
	}
	return tc, true
}

// HandshakesShed counts the connections reset unhandshaken because of the
// handshake limits (Options.MaxHandshakesPerSource, MaxHandshakes), and
// those closed after it because of Options.MaxConnectionsPerPeer.
func (s *Server) HandshakesShed() ShedStats {
	s.init()
	return ShedStats{PerSource: s.admit.shedSource.Load(), Total: s.admit.shedTotal.Load(), PerPeer: s.peerShed.Load()}
}

// HandshakesInFlight is how many connections are in their TLS handshake.
func (s *Server) HandshakesInFlight() int {
	s.init()
	return s.admit.inFlightNow()
}

// serveHTTP2 runs HBONE's HTTP/2 on conn, established (TLS done) with the
// client peer over the TCP connection raw, until it ends.
func (s *Server) serveHTTP2(conn, raw net.Conn, peer spiffeid.ID) {
	sc := newServerConn(s, conn, raw, peer)
	if s.testConn != nil {
		s.testConn(sc)
	}
	s.mu.Lock()
	s.conns[raw] = sc
	draining := s.closed
	s.mu.Unlock()
	if draining {
		sc.goAway() // Shutdown began during the handshake
	}
	sc.serve()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) track(ln net.Listener, c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add && s.closed {
		return false
	}
	switch {
	case ln != nil && add:
		s.lns[ln] = struct{}{}
	case ln != nil:
		delete(s.lns, ln)
	case add:
		s.conns[c] = nil
	default:
		delete(s.conns, c)
	}
	return true
}

// Close stops all listeners and closes every connection; in-flight streams
// are reset.
func (s *Server) Close() error {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	return nil
}

// Shutdown hands the server's work over gracefully: it stops the listeners,
// sends GOAWAY on every tunnel connection (clients open new streams on new
// connections, which reach whoever listens now, while the streams in flight
// here run to their end) and waits for the connections to close. When ctx
// ends first, the rest is closed as by Close and ctx's error returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	s.closed = true
	for ln := range s.lns {
		ln.Close()
	}
	s.mu.Unlock()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		// Again on every tick for connections that finished their handshake
		// after the previous round (a connection GOAWAYs once).
		s.mu.Lock()
		n := len(s.conns)
		for _, sc := range s.conns {
			if sc != nil {
				sc.goAway()
			}
		}
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// ServerStream is the server side of an accepted tunnel stream. Each
// direction ends on its own, as a TCP half-close: Read returns io.EOF after
// the client's END_STREAM while Write goes on, and CloseWrite sends our
// END_STREAM while Read goes on.
type ServerStream struct{ s *stream }

// Read reads what the client sent; io.EOF means the client half-closed. An
// error other than EOF means the stream was reset (by the client, by Close,
// or with the tunnel connection) and is to be passed on as a TCP reset.
func (s *ServerStream) Read(p []byte) (int, error) { return s.s.read(p) }

// Write sends p to the client, waiting for flow-control window as the
// client reads; p is on its way when Write returns.
func (s *ServerStream) Write(p []byte) (int, error) { return s.s.write(p, false) }

// SetReadDeadline is net.Conn's: a Read waiting at t, or starting after it,
// fails with os.ErrDeadlineExceeded (the stream goes on: a later Read,
// after the deadline moved, returns what arrived); a zero t means none.
// net/http's HTTP/1.1 server interrupts its background read this way after
// every request and to hijack a connection.
func (s *ServerStream) SetReadDeadline(t time.Time) error {
	s.s.setReadDeadline(t)
	return nil
}

// CloseWrite ends our direction (END_STREAM, a TCP half-close): the client
// reads EOF and may go on sending, which Read still returns. The stream is
// done when both directions ended.
func (s *ServerStream) CloseWrite() error {
	_, err := s.s.write(nil, true)
	if errors.Is(err, errWriteAfterEnd) {
		return nil
	}
	return err
}

// Close ends the stream: a plain close if both directions already ended,
// otherwise a reset (RST_STREAM(CANCEL)) that the client sees as a TCP
// reset. Blocked Reads and Writes return.
func (s *ServerStream) Close() error {
	s.s.close(http2.ErrCodeCancel, net.ErrClosed)
	return nil
}
