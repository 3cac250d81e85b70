//lint:file-ignore SA1019 x/net/http2 client connections over a TLS conn whose handshake (SPIFFE check) we did ourselves have no net/http replacement.

package hbone

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
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
	t2       *http2.Transport
	mu       sync.Mutex
	pool     map[poolKey][]*poolConn
}

type poolKey struct{ local, addr string }

type poolConn struct {
	ready  chan struct{} // closed when the dial finished (cc or err set)
	cc     *http2.ClientConn
	err    error
	peer   spiffeid.ID
	chains [][]*x509.Certificate
	local  net.Addr
	remote net.Addr
	conn   *tlsConn
	// streams open or opening on cc, guarded by Dialer.mu: a stream counts
	// from its slot's reservation until its ClientStream is closed.
	streams int
}

func (d *Dialer) init() {
	d.initOnce.Do(func() {
		if d.Logger == nil {
			d.Logger = slog.New(slog.DiscardHandler)
		}
		o := d.Options.withDefaults()
		// The connection-level receive window is only settable through the
		// net/http HTTP2Config of the "parent" transport.
		t1 := &http.Transport{HTTP2: &http.HTTP2Config{
			MaxReceiveBufferPerStream:     int(o.StreamWindow),
			MaxReceiveBufferPerConnection: int(o.ConnWindow),
			MaxReadFrameSize:              int(o.MaxFrameSize),
		}}
		t2, err := http2.ConfigureTransports(t1)
		if err != nil {
			panic(fmt.Sprintf("hbone: configuring http2 transport: %v", err)) // only fails if t1 is already configured
		}
		t2.MaxReadFrameSize = o.MaxFrameSize
		// Strict: a stream beyond the server's limit (possible only before
		// its SETTINGS arrive, see reserve) waits for a slot rather than
		// fails.
		t2.StrictMaxConcurrentStreams = true
		t2.ReadIdleTimeout = o.PingInterval
		t2.PingTimeout = o.PingTimeout
		t2.IdleConnTimeout = o.IdleTimeout
		t2.CountError = func(string) {}
		d.t2 = t2
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
		var re *RefusedError
		if attempt == 0 && !errors.As(err, &re) && ctx.Err() == nil && unusable(pc.cc) {
			// The pooled connection died, GOAWAYed or went idle under us
			// before the stream was established, so nothing was sent:
			// retry once on a fresh connection.
			d.drop(key, pc)
			continue
		}
		return nil, err
	}
}

// unusable reports whether cc takes no new streams: closed, GOAWAYed, or
// idle for longer than IdleTimeout, when x/net refuses new streams while
// its idle timer is about to close the connection (golang/go#70515) but
// State does not yet say Closing. With StrictMaxConcurrentStreams a full
// connection still takes new streams, so this is never about load.
func unusable(cc *http2.ClientConn) bool {
	st := cc.State()
	return st.Closed || st.Closing || !cc.CanTakeNewRequest()
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
		st := pc.cc.State()
		if st.Closed || st.Closing {
			continue
		}
		keep = append(keep, pc)
		limit := int(st.MaxConcurrentStreams)
		if limit == 0 {
			// No SETTINGS from the server yet: x/net assumes 100 until
			// then (and, strict, would hold a stream beyond that only
			// until they arrive), so do we.
			limit = 100
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
	pc.cc, pc.err = d.dial(dctx, key.addr, pc)
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

func (d *Dialer) dial(ctx context.Context, addr string, pc *poolConn) (*http2.ClientConn, error) {
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
	pc.conn = tc
	cc, err := d.t2.NewClientConn(tc)
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("hbone: starting HTTP/2 on tunnel %s: %w", addr, err)
	}
	pc.local, pc.remote = raw.LocalAddr(), raw.RemoteAddr()
	d.Logger.Debug("hbone tunnel connected", "addr", addr, "peer", pc.peer)
	return cc, nil
}

func (d *Dialer) open(ctx context.Context, pc *poolConn, target string, header http.Header) (*ClientStream, error) {
	pr, pw := io.Pipe()
	body := &requestBody{PipeReader: pr, sent: make(chan struct{})}
	// The stream must outlive ctx (a setup deadline), so it gets its own
	// context that ctx cancels only until the response headers arrive.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	if header == nil {
		header = http.Header{}
	}
	req := (&http.Request{
		Method:        http.MethodConnect,
		URL:           &url.URL{Host: target},
		Host:          target,
		Header:        header,
		Body:          body,
		ContentLength: -1,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
	}).WithContext(sctx)
	resp, err := pc.cc.RoundTrip(req)
	if !stop() {
		if err == nil {
			resp.Body.Close()
		}
		cancel()
		pw.Close()
		return nil, fmt.Errorf("hbone: CONNECT %s via %s: %w", target, pc.remote, ctx.Err())
	}
	if err != nil {
		cancel()
		pw.Close()
		if rerr := pc.conn.readErr(); rerr != nil && !errors.Is(rerr, io.EOF) && !strings.Contains(err.Error(), rerr.Error()) {
			return nil, fmt.Errorf("hbone: CONNECT %s via %s: %w (tunnel connection: %w)", target, pc.remote, err, rerr)
		}
		return nil, fmt.Errorf("hbone: CONNECT %s via %s: %w", target, pc.remote, err)
	}
	if resp.StatusCode != http.StatusOK {
		reason, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		cancel()
		pw.Close()
		return nil, &RefusedError{Status: resp.StatusCode, Reason: string(trimNL(reason))}
	}
	return &ClientStream{pw: pw, body: resp.Body, sent: body.sent, cancel: cancel, peer: pc.peer, local: pc.local, remote: pc.remote,
		release: func() { d.release(pc) }}, nil
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
			if pc.cc != nil {
				pc.cc.Close()
			}
		}
	}
	return nil
}

// ClientStream is the client side of a tunnel stream.
type ClientStream struct {
	pw        *io.PipeWriter
	body      io.ReadCloser
	sent      <-chan struct{} // x/net is done sending our direction
	cancel    context.CancelFunc
	peer      spiffeid.ID
	local     net.Addr
	remote    net.Addr
	release   func() // frees the stream's slot in the pool
	readEOF   atomic.Bool
	wclosed   atomic.Bool
	closeOnce sync.Once
}

// Peer is the tunnel server's verified SPIFFE ID.
func (s *ClientStream) Peer() spiffeid.ID { return s.peer }

// LocalAddr and RemoteAddr are the tunnel connection's TCP addresses.
func (s *ClientStream) LocalAddr() net.Addr  { return s.local }
func (s *ClientStream) RemoteAddr() net.Addr { return s.remote }

// Read reads what the server sent; io.EOF means it half-closed.
func (s *ClientStream) Read(p []byte) (int, error) {
	n, err := s.body.Read(p)
	if err == io.EOF {
		s.readEOF.Store(true)
	}
	return n, err
}

// Write blocks until x/net/http2 took p (flow control applies).
func (s *ClientStream) Write(p []byte) (int, error) { return s.pw.Write(p) }

// CloseWrite half-closes: the server reads EOF and can still send.
func (s *ClientStream) CloseWrite() error {
	s.wclosed.Store(true)
	return s.pw.Close()
}

// Close ends the stream. If both directions already finished it is a clean
// close; otherwise the stream is reset (RST_STREAM), which the server side
// sees as an error, like a TCP RST.
//
// After CloseWrite, x/net may still be sending what Write handed it, then
// END_STREAM: closing the response now would reset the stream and lose
// that data. So when both directions are done, the stream is torn down
// once x/net finished sending (at once if it has), in the background, the
// way TCP sends out a closed socket's data, for at most closeLinger.
func (s *ClientStream) Close() error {
	s.closeOnce.Do(func() {
		if !s.wclosed.Load() {
			s.pw.CloseWithError(net.ErrClosed)
		}
		if !s.wclosed.Load() || !s.readEOF.Load() {
			s.teardown()
			return
		}
		select {
		case <-s.sent:
			s.teardown()
		default:
			go func() {
				t := time.NewTimer(closeLinger)
				defer t.Stop()
				select {
				case <-s.sent:
				case <-t.C:
				}
				s.teardown()
			}()
		}
	})
	return nil
}

// closeLinger bounds how long a closed stream waits for x/net to send the
// rest of its direction (a server that stopped reading).
const closeLinger = 30 * time.Second

func (s *ClientStream) teardown() {
	s.body.Close()
	s.cancel()
	s.release()
}

// requestBody is the stream's sending direction as x/net reads it; x/net
// closes it when it is done writing the request (END_STREAM sent, or the
// stream aborted).
type requestBody struct {
	*io.PipeReader
	once sync.Once
	sent chan struct{}
}

func (b *requestBody) Close() error {
	err := b.PipeReader.Close()
	b.once.Do(func() { close(b.sent) })
	return err
}
