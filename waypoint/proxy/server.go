//lint:file-ignore SA1019 x/net/http2's Server.ServeConn serves h2 (prior knowledge) on one tunnel stream; net/http has no per-connection equivalent.

package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/net/http2"

	"github.com/weft-mesh/weft/pkg/admin"
	"github.com/weft-mesh/weft/pkg/dnsresolve"
	"github.com/weft-mesh/weft/pkg/hbone"
	"github.com/weft-mesh/weft/pkg/istiolabels"
)

// Options configure a Proxy.
type Options struct {
	// SVID is the waypoint's own identity (server and upstream client);
	// Bundle the mesh trust.
	SVID   x509svid.Source
	Bundle x509bundle.Source
	// Registerer gets the istio_request* metrics (nil: not registered).
	Registerer prometheus.Registerer
	// AccessLog gets one JSON line per request or TCP stream (nil: none).
	AccessLog io.Writer
	// Tracing emits spans (nil: headers are only propagated).
	Tracing *Tracing
	// TunnelPort of endpoints (default mesh.HBONEPort); DialTCP for plain endpoints
	// and HBONEDial for the TCP under HBONE tunnels (tests redirect them).
	TunnelPort uint16
	DialTCP    func(ctx context.Context, network, addr string) (net.Conn, error)
	HBONEDial  func(ctx context.Context, network, addr string) (net.Conn, error)
	// Lookup resolves the hosts of DNS clusters (default: /etc/resolv.conf).
	Lookup dnsresolve.LookupFunc
	Log    *slog.Logger
	// Certificates resolves the certificates of a gateway's TLS filter
	// chains (nil: none, such chains refuse handshakes).
	Certificates Certificates
	// IdleTimeout closes a tunnelled HTTP connection without a request in
	// flight for this long (Envoy's HCM idle_timeout; default 1 h).
	// StreamIdleTimeout ends a request that saw no byte either way, request
	// body or response, for this long (Envoy's stream_idle_timeout; default
	// 5 min): 408 before the response started, a reset after. Tests shorten
	// them; negative disables.
	IdleTimeout, StreamIdleTimeout time.Duration
	// TCPIdleTimeout closes a TCP-proxied or upgraded (WebSocket) stream
	// that moved no byte either way for this long, both ends (Envoy's
	// tcp_proxy idle_timeout; default 1 h). Tests shorten it; negative
	// disables.
	TCPIdleTimeout time.Duration
}

// Envoy's defaults for mesh streams (HttpConnectionManager).
const (
	defaultIdleTimeout       = time.Hour
	defaultStreamIdleTimeout = 5 * time.Minute
	// maxRequestHeaderBytes is max_request_headers_kb's default, 60 KiB:
	// larger request headers get 431.
	maxRequestHeaderBytes = 60 << 10
)

// Proxy is the waypoint data path.
type Proxy struct {
	Store    *Store
	Upstream *Upstream
	Metrics  *Metrics
	HBONE    *hbone.Server

	log       *slog.Logger
	accessLog *accessLog
	tracing   *Tracing
	h2        *http2.Server // HBONE streams
	h2Edge    *http2.Server // a gateway's client connections
	certs     Certificates

	idleTimeout, streamIdleTimeout time.Duration

	// draining: Drain was called. drainH2 serves nothing: both h2 servers
	// are registered with it (http2.ConfigureServer) so that its Shutdown
	// sends GOAWAY on every h2 connection.
	draining atomic.Bool
	drainH2  http.Server
}

// New builds a Proxy; feed Store.Handle from xDS and Serve a listener.
func New(o Options) (*Proxy, error) {
	if o.SVID == nil || o.Bundle == nil {
		return nil, errors.New("waypoint proxy needs an SVID source and a trust bundle source")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	m, err := NewMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	up := &Upstream{
		Dialer:     &hbone.Dialer{SVID: o.SVID, Bundle: o.Bundle, DialContext: o.HBONEDial, Logger: o.Log},
		TunnelPort: o.TunnelPort, DialTCP: o.DialTCP, Lookup: o.Lookup, Log: o.Log,
		tcpIdleTimeout: orDefault(o.TCPIdleTimeout, defaultTCPIdleTimeout),
	}
	p := &Proxy{Store: NewStore(up, o.Log), Upstream: up, Metrics: m, log: o.Log, tracing: o.Tracing,
		certs:       o.Certificates,
		idleTimeout: orDefault(o.IdleTimeout, defaultIdleTimeout), streamIdleTimeout: orDefault(o.StreamIdleTimeout, defaultStreamIdleTimeout)}
	p.Store.usePlan, p.Store.certs = m.use, o.Certificates
	// x/net/http2 runs its own idle timer (net/http's IdleTimeout reaches
	// it only through ConfigureServer): one server for mesh streams, one
	// for a gateway's clients.
	p.h2 = &http2.Server{MaxConcurrentStreams: 1000, IdleTimeout: max(p.idleTimeout, 0)}
	p.h2Edge = &http2.Server{MaxConcurrentStreams: 1000, IdleTimeout: edgeIdleTimeout}
	for _, h2 := range []*http2.Server{p.h2, p.h2Edge} {
		if err := http2.ConfigureServer(&p.drainH2, h2); err != nil {
			return nil, err
		}
	}
	if o.AccessLog != nil {
		p.accessLog = newAccessLog(o.AccessLog)
	}
	// Any identity the mesh trust bundle vouches for may connect; which
	// source may do what is RBAC's job per request.
	p.HBONE = &hbone.Server{TLS: hbone.ServerTLSConfig(o.SVID, o.Bundle, nil), Handler: p.handle, Logger: o.Log}
	if o.Registerer != nil {
		// A DNS cluster's name without an address fails its requests: alert
		// on state="unresolved".
		if err := o.Registerer.Register(dnsresolve.Collector("weft_waypoint_dns_hosts",
			"Names of STRICT_DNS and LOGICAL_DNS clusters by state: resolved, stale (lookups failing, the last answer kept), unresolved (no address: requests fail with 503).",
			p.Store.dnsCounts)); err != nil {
			return nil, err
		}
		for _, c := range admin.HBONEHandshakeMetrics("weft_waypoint", p.HBONE) {
			if err := o.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

// Serve serves HBONE on ln until Close.
func (p *Proxy) Serve(ln net.Listener) error { return p.HBONE.Serve(ln) }

// Drain makes clients leave before the proxy stops: each HTTP connection
// closes once its requests in flight are answered (Connection: close on
// HTTP/1.1 responses, GOAWAY on h2), so the connections made next reach
// whatever replaces this proxy, and a rollout loses no request that a
// keep-alive connection was carrying when Close cut it (Envoy's drain).
// Idle HTTP/1.1 connections stay open until Close: closing them now would
// race a client's next request as much as closing them then.
func (p *Proxy) Drain() {
	if !p.draining.Swap(true) {
		p.drainH2.Shutdown(context.Background()) // serves nothing: returns at once
	}
}

// Draining reports whether Drain was called.
func (p *Proxy) Draining() bool { return p.draining.Load() }

// Close stops the HBONE server and drops upstream connections.
func (p *Proxy) Close() error {
	err := p.HBONE.Close()
	p.Store.stopLookups()
	p.Upstream.Close()
	p.Upstream.Dialer.Close()
	return err
}

// requestState is what the proxy knows about one downstream stream and
// request, shared with Upstream through the request context.
type requestState struct {
	h2       bool
	origDst  netip.AddrPort
	peer     spiffeid.ID
	clientIP netip.Addr
	baggage  string
	// source: the source_* telemetry labels (peer.go sourceOf).
	source istiolabels.Peer
	// edge: a gateway's plain client connection (gateway.go), not an
	// HBONE stream; peer and baggage are then the gateway itself.
	edge bool
	// tls is the TLS a gateway terminated on the connection (nil: none);
	// its requests are https (net/http sees only the wrapped conn).
	tls *tls.ConnectionState

	mu        sync.Mutex
	upstreams map[string]upstreamUse // cluster -> last endpoint used
}

type upstreamUse struct {
	e    *endpoint
	addr netip.AddrPort
}

func (rs *requestState) setUpstream(cluster string, e *endpoint, addr netip.AddrPort) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.upstreams == nil {
		rs.upstreams = map[string]upstreamUse{}
	}
	rs.upstreams[cluster] = upstreamUse{e: e, addr: addr}
}

func (rs *requestState) upstream(cluster string) upstreamUse {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.upstreams[cluster]
}

type requestStateKey struct{}

func requestStateFrom(ctx context.Context) *requestState {
	rs, _ := ctx.Value(requestStateKey{}).(*requestState)
	return rs
}

func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// handle decides on one CONNECT stream.
func (p *Proxy) handle(ctx context.Context, req *hbone.Request) error {
	dst, err := netip.ParseAddrPort(req.Authority)
	if err != nil {
		return hbone.Refuse(http.StatusBadRequest, fmt.Sprintf(":authority %q is not ip:port", req.Authority))
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	snap := p.Store.Snapshot()
	c := snap.chains.match(dst)
	if c == nil {
		p.log.Debug("no filter chain for destination", "authority", req.Authority, "peer", req.Peer)
		return hbone.Refuse(http.StatusServiceUnavailable, fmt.Sprintf("waypoint has no filter chain for %s", dst))
	}
	bag := hbone.ParseBaggage(req.Baggage)
	client, proven := p.tunnelSource(req, bag)
	rs := &requestState{origDst: dst, peer: req.Peer, clientIP: client, baggage: req.Baggage,
		source: p.sourceOf(req.Peer, proven, bag)}
	if c.isTCP() {
		if snap.chains.needsSNI(dst) {
			return p.serveSNI(ctx, req, dst, snap, rs)
		}
		return p.serveTCP(ctx, req, c, snap, rs)
	}
	st, err := req.Accept()
	if err != nil {
		return err
	}
	conn := &streamConn{Stream: st, local: req.LocalAddr, remote: req.RemoteAddr}
	p.serveHTTP(conn, c, rs)
	return nil
}

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Timeouts of a gateway's client connections.
const (
	edgeHeaderTimeout = 30 * time.Second
	edgeIdleTimeout   = 5 * time.Minute
)

// serveHTTP serves HTTP on one accepted stream until it ends: h2 when it
// starts with the h2 preface, HTTP/1.1 otherwise.
func (p *Proxy) serveHTTP(conn net.Conn, c *chain, stream *requestState) {
	br := bufio.NewReaderSize(conn, 4<<10)
	head, _ := br.Peek(len(h2Preface))
	pc := &peekedConn{Conn: conn, r: br}
	isH2 := string(head) == h2Preface
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rs := &requestState{h2: isH2, origDst: stream.origDst, peer: stream.peer, clientIP: stream.clientIP, baggage: stream.baggage, source: stream.source, edge: stream.edge, tls: stream.tls}
		if r.TLS == nil {
			r.TLS = stream.tls
		}
		// Route per request with the config in force now, as Envoy applies
		// RDS updates to new requests on existing connections: clients keep
		// connections alive for minutes. A chain that went away keeps
		// serving its streams with the config they started with.
		cur := c
		if now := p.Store.Snapshot().chains.match(stream.origDst); now != nil && !now.isTCP() {
			cur = now
		}
		p.serveRequest(w, r, cur, rs)
	})
	// Envoy's header limit: net/http reads 4 KiB beyond MaxHeaderBytes
	// (request line included) before it answers 431; x/net/http2 allows
	// MaxHeaderBytes plus 32 bytes for each of 10 fields (also 431).
	maxHeader := maxRequestHeaderBytes - 4<<10
	if isH2 {
		maxHeader = maxRequestHeaderBytes - 10*32
	}
	base := &http.Server{Handler: handler, ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		MaxHeaderBytes: maxHeader}
	if stream.edge {
		// A client's own TCP connection: its deadlines work, and a slow
		// or idle client must not hold it forever (Envoy's defaults:
		// no request header timeout, but a 1 h idle timeout; tighter here).
		base.ReadHeaderTimeout = edgeHeaderTimeout
		base.IdleTimeout = edgeIdleTimeout
	} else {
		// An HBONE stream: write deadlines are no-ops (streamConn), read
		// deadlines are the stream's (HTTP/1.1); x/net/http2
		// keeps its own idle timer. A stream without a request in flight
		// closes after the idle timeout; request headers must arrive
		// within the stream idle timeout (Envoy's stream_idle_timeout
		// covers a request from its first byte).
		base.IdleTimeout = max(p.idleTimeout, 0)
		base.ReadHeaderTimeout = max(p.streamIdleTimeout, 0)
	}
	if isH2 {
		h2 := p.h2
		if stream.edge {
			h2 = p.h2Edge
		}
		h2.ServeConn(pc, &http2.ServeConnOpts{BaseConfig: base, Handler: handler})
		pc.Close()
		return
	}
	ln := newOneConnListener(pc)
	base.Serve(ln)
	<-ln.closed
}

type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *peekedConn) CloseWrite() error          { return closeWrite(c.Conn) }

// oneConnListener hands out one connection; Accept then blocks until that
// connection is closed, so http.Server.Serve returns when it ends.
type oneConnListener struct {
	conn   net.Conn
	once   sync.Once
	closed chan struct{}
	mu     sync.Mutex
	given  bool
}

func newOneConnListener(c net.Conn) *oneConnListener {
	l := &oneConnListener{closed: make(chan struct{})}
	l.conn = &notifyConn{Conn: c, l: l}
	return l
}

type notifyConn struct {
	net.Conn
	l *oneConnListener
}

// CloseWrite half-closes a hijacked (upgraded) connection.
func (c *notifyConn) CloseWrite() error { return closeWrite(c.Conn) }

func (c *notifyConn) Close() error {
	err := c.Conn.Close()
	c.l.Close()
	return err
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if !l.given {
		l.given = true
		l.mu.Unlock()
		return l.conn, nil
	}
	l.mu.Unlock()
	<-l.closed
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

// serveTCP proxies a TcpProxy chain's stream to an endpoint of one of its
// clusters (weighted pick).
func (p *Proxy) serveTCP(ctx context.Context, req *hbone.Request, c *chain, snap *Snapshot, rs *requestState) error {
	return p.proxyTCP(ctx, c, snap, rs, req.Authority, req.Header.Get("Traceparent"),
		func() (hbone.Stream, error) { return req.Accept() })
}

// serveSNI serves a TCP stream to a service port with VirtualService tls
// routes: the stream is accepted to read the ClientHello (not answered,
// TLS is not terminated), whose SNI picks the chain; the ClientHello and
// everything after it go to the chain's cluster. A stream that sends no
// ClientHello takes the port's own chain, as Envoy's chain without
// server_names; one silent for helloTimeout (a server-first protocol on a
// port routed by SNI) is closed. L4 policy is then decided after the
// CONNECT was answered: a denied stream is closed, no byte goes upstream.
func (p *Proxy) serveSNI(ctx context.Context, req *hbone.Request, dst netip.AddrPort, snap *Snapshot, rs *requestState) error {
	st, err := req.Accept()
	if err != nil {
		return err
	}
	defer st.Close()
	silent := time.AfterFunc(helloTimeout, func() { st.Close() })
	sni, replay, err := readClientHello(&streamConn{Stream: st, local: req.LocalAddr, remote: req.RemoteAddr})
	if !silent.Stop() {
		return fmt.Errorf("no ClientHello within %s", helloTimeout)
	}
	if err != nil {
		p.log.Debug("TLS-routed port: no ClientHello, the port's own chain serves it", "dst", dst, "err", err)
	}
	c := snap.chains.matchSNI(dst, sni)
	if c == nil || !c.isTCP() {
		return fmt.Errorf("no TCP filter chain for %s and SNI %q", dst, sni)
	}
	return p.proxyTCP(ctx, c, snap, rs, req.Authority, req.Header.Get("Traceparent"),
		func() (hbone.Stream, error) { return replay, nil })
}

// proxyTCP is serveTCP for any downstream: accept is called once the
// upstream is connected; a failure before is returned as hbone.Refuse.
func (p *Proxy) proxyTCP(ctx context.Context, c *chain, snap *Snapshot, rs *requestState, authority, traceparent string,
	accept func() (hbone.Stream, error)) error {
	rec := &record{start: time.Now(), chain: c.name, logged: c.accessLog, protocol: "tcp", rs: rs, authority: authority}
	if details, ok := p.authorizeTCP(c, rs); !ok {
		// L4 policy is decided before accept: the CONNECT is refused and
		// no byte reaches an upstream.
		rec.termination = details
		p.finishTCP(rec)
		return hbone.Refuse(http.StatusForbidden, "RBAC: access denied")
	}
	name := pickWeighted(c.tcp)
	rec.cluster = name
	cl := snap.clusters[name]
	fail := func(flag string, status int, err error) error {
		rec.flags, rec.code, rec.err = flag, 0, err
		p.finishTCP(rec)
		return hbone.Refuse(status, err.Error())
	}
	if cl == nil {
		return fail("NC", http.StatusServiceUnavailable, fmt.Errorf("cluster %q is not configured", name))
	}
	s := cl.settings.Load()
	e, t, err := p.Upstream.target(cl, s, rs, 0, false)
	if err != nil {
		return fail("UH", http.StatusServiceUnavailable, fmt.Errorf("cluster %s: %w", name, err))
	}
	t.tls, t.tlsID = nil, 0 // TLS origination is for HTTP routes (the bytes here are the client's)
	rs.setUpstream(name, e, t.addr)
	if n := cl.conns.Add(1); n > s.maxConnections {
		cl.releaseConn()
		cl.stats.Overflow.Add(1)
		return fail("UO", http.StatusServiceUnavailable, fmt.Errorf("cluster %s: %d connections (max_connections)", name, s.maxConnections))
	}
	defer cl.releaseConn()
	if e != nil {
		e.st.active.Add(1)
		defer e.st.active.Add(-1)
	}
	h := http.Header{}
	if rs.clientIP.IsValid() {
		host, _, _ := serviceOf(name)
		hbone.SetForwardedHost(h, rs.clientIP.AsSlice(), host)
	}
	if rs.baggage != "" {
		h.Set("Baggage", rs.baggage)
	}
	if traceparent != "" {
		h.Set("Traceparent", traceparent)
	}
	up, err := p.Upstream.dialStream(ctx, t, h)
	if err != nil {
		cl.report(e, true)
		return fail("UF", http.StatusServiceUnavailable, err)
	}
	cl.report(e, false)
	down, err := accept()
	if err != nil {
		up.Close()
		return err
	}
	p.Metrics.openTCP(rec, p.Store.workloads.Load())
	rec.received, rec.sent, rec.err = hbone.Pipe(down, withIdleTimeout(up, p.Upstream.tcpIdleTimeout))
	rec.flags = "-"
	p.finishTCP(rec)
	return nil
}

// authorizeTCP runs the chain's network RBAC filters in order on the
// stream's authenticated peer, source and original destination.
func (p *Proxy) authorizeTCP(c *chain, rs *requestState) (details string, ok bool) {
	peer := routePeer{ID: rs.peer, Addr: rs.clientIP, Dest: rs.origDst}
	for _, r := range c.rbac {
		if ok, details := r.Allowed(peer); !ok {
			if p.Metrics != nil {
				p.Metrics.tcpDenied.WithLabelValues(c.name).Inc()
			}
			return details, false
		}
	}
	return "", true
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func pickWeighted(ws []weightedCluster) string {
	if len(ws) == 1 {
		return ws[0].name
	}
	var total uint64
	for _, w := range ws {
		total += uint64(w.weight)
	}
	n := rand.Uint64N(total)
	for _, w := range ws {
		if n < uint64(w.weight) {
			return w.name
		}
		n -= uint64(w.weight)
	}
	return ws[len(ws)-1].name
}
