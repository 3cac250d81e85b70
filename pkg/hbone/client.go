package hbone

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/net/http2"
)

// Dialer opens HBONE streams. It pools HTTP/2 connections per (local
// identity, tunnel address) and multiplexes streams over them: a new
// connection only when every pooled one holds as many streams as its server
// allows (as ztunnel's pool does), so long-lived streams beyond the limit
// never wait behind each other; a dead or GOAWAYed connection is replaced on
// the next Dial. Safe for concurrent use.
type Dialer struct {
	// SVID is our identity (read on every handshake, so rotation just works);
	// Bundle is the trust used to verify servers.
	SVID   x509svid.Source
	Bundle x509bundle.Source
	// DialContext dials the TCP connection (default net.Dialer).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	Options     Options
	Logger      *slog.Logger

	initOnce sync.Once
	opts     Options
	stats    resetStats
	mu       sync.Mutex
	pool     map[poolKey][]*poolConn
}

type poolKey struct{ local, addr string }

type poolConn struct {
	ready  chan struct{} // closed when the dial finished (h2 or err set)
	h2     *h2Conn
	err    error
	peer   spiffeid.ID
	chains [][]*x509.Certificate
	local  net.Addr
	remote net.Addr
	// streams open or opening on h2, guarded by Dialer.mu: a stream counts
	// from its slot's reservation until its ClientStream is closed.
	streams int
}

func (d *Dialer) init() {
	d.initOnce.Do(func() {
		if d.Logger == nil {
			d.Logger = slog.New(slog.DiscardHandler)
		}
		d.opts = d.Options.withDefaults()
		d.pool = map[poolKey][]*poolConn{}
	})
}

// Authorizer decides whether the tunnel server's identity is acceptable,
// e.g. tlsconfig.AuthorizeID(expected). It runs for every stream.
type Authorizer = tlsconfig.Authorizer

// ErrUnauthorizedPeer wraps authorizer rejections of the server identity.
var ErrUnauthorizedPeer = errors.New("hbone: tunnel server identity not authorized")

// Dial opens a stream to target ("ip:port", sent as :authority) through the
// HBONE server at tunnelAddr, after authorize accepted the server's SPIFFE
// ID. header carries Forwarded/baggage/traceparent (see SetForwarded). ctx
// bounds only the setup; the stream lives until closed. A *RefusedError
// means the server answered with a non-200 status.
func (d *Dialer) Dial(ctx context.Context, tunnelAddr string, authorize Authorizer, target string, header http.Header) (*ClientStream, error) {
	d.init()
	if authorize == nil {
		return nil, errors.New("hbone: Dial needs an authorizer for the tunnel server (e.g. tlsconfig.AuthorizeID)")
	}
	svid, err := d.SVID.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("hbone: no local SVID to dial %s: %w", tunnelAddr, err)
	}
	key := poolKey{local: svid.ID.String(), addr: tunnelAddr}
	for attempt := 0; ; attempt++ {
		pc, err := d.conn(ctx, key, authorize)
		if err != nil {
			return nil, err
		}
		s, err := d.open(ctx, pc, target, header)
		if err == nil {
			return s, nil
		}
		d.release(pc)
		if attempt == 0 && ctx.Err() == nil && retryable(err, pc) {
			// Nothing was processed: the pooled connection died, GOAWAYed
			// or went idle under us, or the server refused the stream
			// unprocessed. Retry once, on another connection if need be.
			if ok, _ := pc.h2.usable(); !ok {
				d.drop(key, pc)
			}
			continue
		}
		return nil, err
	}
}

// retryable reports whether a failed open left the stream unprocessed and
// pc unusable (closed, GOAWAYed, idle), or the server said it did not
// process the stream (GOAWAY, REFUSED_STREAM).
func retryable(err error, pc *poolConn) bool {
	var re *RefusedError
	var se streamResetError
	switch {
	case errors.As(err, &re):
		return false
	case errors.Is(err, errGoneAway), errors.Is(err, errConnUnusable):
		return true
	case errors.As(err, &se):
		return se.Code == http2.ErrCodeRefusedStream
	}
	ok, _ := pc.h2.usable()
	return !ok
}

// conn returns a pooled connection for key whose server authorize accepts,
// with a stream slot reserved for the caller (see release), dialling a new
// connection when none has a free slot. Concurrent callers share a dial.
func (d *Dialer) conn(ctx context.Context, key poolKey, authorize Authorizer) (*poolConn, error) {
	for range 16 {
		d.mu.Lock()
		pc, dialing := d.reserve(key)
		if pc == nil && dialing == nil {
			dialing = &poolConn{ready: make(chan struct{})}
			d.pool[key] = append(d.pool[key], dialing)
			d.mu.Unlock()
			d.connect(ctx, key, dialing)
		} else {
			d.mu.Unlock()
		}
		if pc != nil {
			if err := authorize(pc.peer, pc.chains); err != nil {
				d.release(pc)
				return nil, fmt.Errorf("%w: %s at %s: %w", ErrUnauthorizedPeer, pc.peer, key.addr, err)
			}
			return pc, nil
		}
		select {
		case <-dialing.ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("hbone: waiting for tunnel connection to %s: %w", key.addr, ctx.Err())
		}
		if dialing.err != nil {
			return nil, dialing.err
		}
	}
	return nil, fmt.Errorf("hbone: no stream slot on tunnel connections to %s", key.addr)
}

// reserve takes a stream slot on a usable pooled connection of key, or
// returns a dial in flight to wait for; (nil, nil) means dial another.
// Closed and GOAWAYed connections leave the pool. d.mu is held.
func (d *Dialer) reserve(key poolKey) (reserved, dialing *poolConn) {
	var keep []*poolConn
	for _, pc := range d.pool[key] {
		select {
		case <-pc.ready:
		default:
			dialing = pc
			keep = append(keep, pc)
			continue
		}
		ok, limit := pc.h2.usable()
		if !ok {
			continue
		}
		keep = append(keep, pc)
		if limit == 0 {
			limit = defaultPeerStreams // as x/net/http2 reads a server's 0
		}
		if reserved == nil && pc.streams < limit {
			pc.streams++
			reserved = pc
		}
	}
	if len(keep) == 0 {
		delete(d.pool, key)
	} else {
		d.pool[key] = keep
	}
	return reserved, dialing
}

// release gives back the stream slot that conn reserved on pc.
func (d *Dialer) release(pc *poolConn) {
	d.mu.Lock()
	pc.streams--
	d.mu.Unlock()
}

// connect dials pc for key; a failed dial leaves the pool. Dialled with a
// context detached from the caller's cancellation: others may be waiting.
func (d *Dialer) connect(ctx context.Context, key poolKey, pc *poolConn) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	pc.h2, pc.err = d.dial(dctx, key.addr, pc)
	cancel()
	if pc.err != nil {
		d.drop(key, pc)
	}
	close(pc.ready)
}

func (d *Dialer) drop(key poolKey, pc *poolConn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	conns := d.pool[key]
	for i, c := range conns {
		if c == pc {
			conns = append(conns[:i:i], conns[i+1:]...)
			break
		}
	}
	if len(conns) == 0 {
		delete(d.pool, key)
	} else {
		d.pool[key] = conns
	}
}

func (d *Dialer) dial(ctx context.Context, addr string, pc *poolConn) (*h2Conn, error) {
	dial := d.DialContext
	if dial == nil {
		dial = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
	}
	raw, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("hbone: dialing tunnel %s: %w", addr, err)
	}
	// The handshake only checks the chain against the bundle and records the
	// identity; which identity is acceptable is decided per stream, so one
	// connection serves callers with different expectations.
	record := func(id spiffeid.ID, chains [][]*x509.Certificate) error {
		pc.peer, pc.chains = id, chains
		return nil
	}
	tc := newTLSConn(raw, true, hardenTLS(tlsconfig.MTLSClientConfig(d.SVID, d.Bundle, record)))
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("hbone: TLS handshake with tunnel %s: %w", addr, err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != ALPN {
		raw.Close()
		return nil, fmt.Errorf("hbone: tunnel %s negotiated ALPN %q, want %q", addr, p, ALPN)
	}
	h2, err := newClientConn(tc, raw, pc.peer, d.opts, d.Logger, &d.stats)
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("hbone: starting HTTP/2 on tunnel %s: %w", addr, err)
	}
	pc.local, pc.remote = raw.LocalAddr(), raw.RemoteAddr()
	d.Logger.Debug("hbone tunnel connected", "addr", addr, "peer", pc.peer)
	return h2, nil
}

// open sends the CONNECT on pc and waits for its answer.
func (d *Dialer) open(ctx context.Context, pc *poolConn, target string, header http.Header) (*ClientStream, error) {
	if err := checkRequestHeader(header); err != nil {
		return nil, err
	}
	st, err := pc.h2.openStream(target, header)
	if err == nil {
		err = st.awaitResponse(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("hbone: CONNECT %s via %s: %w", target, pc.remote, err)
	}
	if st.status != http.StatusOK {
		return nil, &RefusedError{Status: st.status, Reason: st.readRefusal(ctx)}
	}
	return &ClientStream{s: st, d: d, pc: pc}, nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// Close closes every pooled connection; streams on them are reset.
func (d *Dialer) Close() error {
	d.init()
	d.mu.Lock()
	pool := d.pool
	d.pool = map[poolKey][]*poolConn{}
	d.mu.Unlock()
	for _, conns := range pool {
		for _, pc := range conns {
			<-pc.ready
			if pc.h2 != nil {
				pc.h2.close(nil)
			}
		}
	}
	return nil
}

// ClientStream is the client side of a tunnel stream. Each direction ends
// on its own, as a TCP half-close: Read returns io.EOF after the server's
// END_STREAM while Write goes on, and CloseWrite sends our END_STREAM while
// Read goes on.
type ClientStream struct {
	s     *stream
	d     *Dialer
	pc    *poolConn
	close sync.Once
}

// Peer is the tunnel server's verified SPIFFE ID.
func (s *ClientStream) Peer() spiffeid.ID { return s.pc.peer }

// LocalAddr and RemoteAddr are the tunnel connection's TCP addresses.
func (s *ClientStream) LocalAddr() net.Addr  { return s.pc.local }
func (s *ClientStream) RemoteAddr() net.Addr { return s.pc.remote }

// Read reads what the server sent; io.EOF means it half-closed. An error
// other than EOF means the stream was reset (by the server, by Close, or
// with the tunnel connection) and is to be passed on as a TCP reset.
func (s *ClientStream) Read(p []byte) (int, error) { return s.s.read(p) }

// Write sends p to the server, waiting for flow-control window as the
// server reads; p is on its way when Write returns.
func (s *ClientStream) Write(p []byte) (int, error) { return s.s.write(p, false) }

// Pending reports whether Read would return without waiting for the
// server: data or its END_STREAM unread, or the stream reset or closed.
// A pool of idle HTTP/1.1 connections uses it to drop those the upstream
// closed or wrote to while idle, without a read.
func (s *ClientStream) Pending() bool { return s.s.pending() }

// SetReadDeadline is net.Conn's; see ServerStream.SetReadDeadline.
func (s *ClientStream) SetReadDeadline(t time.Time) error {
	s.s.setReadDeadline(t)
	return nil
}

// CloseWrite half-closes (END_STREAM): the server reads EOF and can still
// send, which Read still returns.
func (s *ClientStream) CloseWrite() error {
	_, err := s.s.write(nil, true)
	if errors.Is(err, errWriteAfterEnd) {
		return nil
	}
	return err
}

// Close ends the stream: a plain close if both directions already ended,
// otherwise a reset (RST_STREAM(CANCEL)) that the server sees as a TCP
// reset. Blocked Reads and Writes return; the stream's slot in the pool is
// free again.
func (s *ClientStream) Close() error {
	s.close.Do(func() {
		s.s.close(http2.ErrCodeCancel, net.ErrClosed)
		s.d.release(s.pc)
	})
	return nil
}
