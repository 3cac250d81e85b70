//lint:file-ignore SA1019 http2.Server.ServeConn on a connection whose TLS handshake we did ourselves (SPIFFE peer checked, h2 only) has no net/http replacement; its knobs are deprecated with it.

package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
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

	w      http.ResponseWriter
	r      *http.Request
	st     *ServerStream
	mu     sync.Mutex // serialises Accept with the refusal path
	endReq chan struct{}
	wdone  chan struct{} // becomes ServerStream.done
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
	select {
	case <-r.endReq:
		return nil, errors.New("hbone: Accept after the handler gave up on the request")
	default:
	}
	r.w.WriteHeader(http.StatusOK)
	if err := http.NewResponseController(r.w).Flush(); err != nil {
		return nil, fmt.Errorf("hbone: sending 200 to %s: %w", r.RemoteAddr, err)
	}
	r.st = &ServerStream{w: r.w, body: r.r.Body, done: r.wdone}
	return r.st, nil
}

// Server terminates HBONE on accepted TCP connections.
type Server struct {
	// TLS must require client certificates (see ServerTLSConfig, or go-spiffe
	// tlsconfig.MTLSServerConfig); TLS 1.3 and ALPN h2 are forced on a copy.
	TLS *tls.Config
	// Handler decides on each stream; see Request. It runs on its own
	// goroutine per stream; ctx ends with the stream. The stream's write side
	// ends at CloseWrite/Close or when Handler returns. TLS, Handler and
	// Options are read once, when serving starts.
	Handler func(ctx context.Context, req *Request) error
	Options Options
	// HandshakeTimeout bounds the TLS handshake (default 10 s) so idle
	// garbage connections do not pile up.
	HandshakeTimeout time.Duration
	Logger           *slog.Logger

	initOnce sync.Once
	tlsConf  *tls.Config
	h2       *http2.Server
	base     *http.Server
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	lns      map[net.Listener]struct{}
	closed   bool
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
		o := s.Options.withDefaults()
		s.h2 = &http2.Server{
			MaxConcurrentStreams:         o.MaxConcurrentStreams,
			MaxReadFrameSize:             o.MaxFrameSize,
			MaxUploadBufferPerStream:     o.StreamWindow,
			MaxUploadBufferPerConnection: o.ConnWindow,
			IdleTimeout:                  o.IdleTimeout,
			ReadIdleTimeout:              o.PingInterval,
			PingTimeout:                  o.PingTimeout,
		}
		s.base = &http.Server{ErrorLog: slog.NewLogLogger(s.Logger.Handler(), slog.LevelDebug)}
		// Registers the HTTP/2 connections served by ServeConn with base, so
		// that base.Shutdown sends them GOAWAY (see Shutdown).
		if err := http2.ConfigureServer(s.base, s.h2); err != nil {
			s.Logger.Error("hbone: graceful shutdown unavailable", "err", err)
		}
		s.conns = map[net.Conn]struct{}{}
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

	tc := newTLSConn(c, false, s.tlsConf)
	ctx, cancel := context.WithTimeout(context.Background(), s.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		s.Logger.Debug("hbone handshake failed", "remote", c.RemoteAddr(), "err", err)
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
	s.h2.ServeConn(tc, &http2.ServeConnOpts{
		BaseConfig: s.base,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.serveStream(w, r, peer, c)
		}),
	})
}

func (s *Server) serveStream(w http.ResponseWriter, r *http.Request, peer spiffeid.ID, c net.Conn) {
	if !s.validConnect(w, r) {
		return
	}
	req := newRequest(w, r, peer, c)
	herr := s.runHandler(r.Context(), req)

	var err error
	select {
	case err = <-herr:
	case <-req.wdone: // CloseWrite/Close on the accepted stream
	case <-r.Context().Done(): // client reset the stream or the conn died
	}
	req.mu.Lock()
	st := req.st
	close(req.endReq) // a late Accept now fails instead of touching a dead w
	req.mu.Unlock()
	if st == nil {
		if r.Context().Err() != nil {
			return
		}
		s.refuse(w, req, err)
		return
	}
	if err == nil {
		// Accepted and the handler is still running: the response ends when
		// the write side is finished or the handler returns.
		select {
		case <-st.done:
		case <-herr:
		case <-r.Context().Done():
		}
	}
	if st.finish() {
		// Makes x/net/http2 send RST_STREAM: the TCP reset reaches the client.
		panic(http.ErrAbortHandler)
	}
}

// validConnect reports whether r is a CONNECT to an ip:port and otherwise
// answers it with an error.
func (s *Server) validConnect(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodConnect {
		w.Header().Set("Allow", http.MethodConnect)
		http.Error(w, "hbone: only CONNECT is supported", http.StatusMethodNotAllowed)
		return false
	}
	if _, _, err := net.SplitHostPort(r.Host); err != nil {
		http.Error(w, "hbone: :authority must be the destination ip:port", http.StatusBadRequest)
		return false
	}
	return true
}

// newRequest is the Request the handler sees for the CONNECT r that
// arrived on the tunnel connection c from peer.
func newRequest(w http.ResponseWriter, r *http.Request, peer spiffeid.ID, c net.Conn) *Request {
	return &Request{
		Peer:        peer,
		Authority:   r.Host,
		Forwarded:   r.Header.Get("Forwarded"),
		Baggage:     r.Header.Get("Baggage"),
		Traceparent: r.Header.Get("Traceparent"),
		Header:      r.Header,
		RemoteAddr:  c.RemoteAddr(),
		LocalAddr:   c.LocalAddr(),
		w:           w,
		r:           r,
		endReq:      make(chan struct{}),
		wdone:       make(chan struct{}),
	}
}

// runHandler starts the user handler on req and returns where its result
// arrives; a panic in the handler closes the stream and refuses it with 500.
// The user handler runs on its own goroutine because x/net/http2 only sends
// END_STREAM when the net/http handler returns: CloseWrite has to be able
// to end the response while the handler keeps reading.
func (s *Server) runHandler(ctx context.Context, req *Request) <-chan error {
	herr := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				s.Logger.Error("hbone handler panicked", "authority", req.Authority, "panic", p)
				req.mu.Lock()
				if req.st != nil {
					req.st.Close()
				}
				req.mu.Unlock()
				herr <- Refuse(http.StatusInternalServerError, "handler panicked")
			}
		}()
		herr <- s.Handler(ctx, req)
	}()
	return herr
}

// refuse answers a stream the handler did not accept: with the status of
// its RefusedError, else 503 with the handler's error (if any) as reason.
func (s *Server) refuse(w http.ResponseWriter, req *Request, err error) {
	var re *RefusedError
	if !errors.As(err, &re) {
		re = &RefusedError{Status: http.StatusServiceUnavailable, Reason: "handler returned without accepting"}
		if err != nil {
			re.Reason = err.Error()
		}
	}
	s.Logger.Debug("hbone stream refused", "peer", req.Peer, "authority", req.Authority, "status", re.Status, "reason", re.Reason)
	http.Error(w, re.Reason, re.Status)
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
		s.conns[c] = struct{}{}
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
		// base tracks no connections itself: Shutdown only runs the GOAWAY
		// hooks, again on every tick for connections that finished their
		// handshake after the previous round (a connection GOAWAYs once).
		_ = s.base.Shutdown(ctx)
		s.mu.Lock()
		n := len(s.conns)
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

// ServerStream is the server side of an accepted tunnel stream.
type ServerStream struct {
	w    http.ResponseWriter
	body io.ReadCloser

	wmu       sync.Mutex // serialises Write with the end of the response
	ended     bool       // the net/http handler returned; w is dead
	ctlMu     sync.Mutex // guards w's deadline control against ended
	closeOnce sync.Once
	aborted   atomic.Bool
	done      chan struct{} // closed by CloseWrite/Close
}

// Read reads what the client sent; io.EOF means the client half-closed.
func (s *ServerStream) Read(p []byte) (int, error) { return s.body.Read(p) }

// Write sends to the client, flushing so small writes are not delayed.
func (s *ServerStream) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.ended {
		return 0, net.ErrClosed
	}
	n, err := s.w.Write(p)
	if err == nil {
		err = http.NewResponseController(s.w).Flush()
	}
	return n, err
}

// CloseWrite ends the response (END_STREAM). Limitation of x/net/http2's
// server: it follows END_STREAM with RST_STREAM(NO_ERROR) when the client has
// not finished sending, so a server-first half-close also ends the client's
// sending direction (its writes fail, no data is corrupted). Client-first
// half-close (the common case) is a true half-close.
func (s *ServerStream) CloseWrite() error {
	s.closeOnce.Do(func() { close(s.done) })
	return nil
}

// Close aborts the stream with RST_STREAM unless both directions already
// finished cleanly, in which case it is a plain close.
func (s *ServerStream) Close() error {
	s.closeOnce.Do(func() {
		s.aborted.Store(true)
		s.ctlMu.Lock()
		if !s.ended {
			// Unblocks a Write stuck on flow control by resetting the stream.
			_ = http.NewResponseController(s.w).SetWriteDeadline(time.Now().Add(-time.Second))
		}
		s.ctlMu.Unlock()
		close(s.done)
	})
	s.body.Close()
	return nil
}

// finish runs on the net/http handler goroutine before it returns and
// reports whether the stream must be reset.
func (s *ServerStream) finish() bool {
	s.ctlMu.Lock()
	s.wmu.Lock()
	s.ended = true
	s.wmu.Unlock()
	s.ctlMu.Unlock()
	return s.aborted.Load()
}
