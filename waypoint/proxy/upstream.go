package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/weft-mesh/weft/pkg/dnsresolve"
	"github.com/weft-mesh/weft/pkg/hbone"
	"github.com/weft-mesh/weft/pkg/mesh"
)

// Upstream sends requests to cluster endpoints; it implements
// route.Upstream. Its connection pools are shared by every chain.
type Upstream struct {
	// Dialer opens HBONE streams with the waypoint's own SVID.
	Dialer *hbone.Dialer
	// TunnelPort is the HBONE port of endpoints (default mesh.HBONEPort).
	TunnelPort uint16
	// DialTCP dials NONE endpoints and original destinations without a
	// known tunnel (default net.Dialer).
	DialTCP func(ctx context.Context, network, addr string) (net.Conn, error)
	// Lookup resolves the hosts of STRICT_DNS and LOGICAL_DNS clusters
	// (default: the nameservers and search list of /etc/resolv.conf, as
	// Envoy resolves).
	Lookup dnsresolve.LookupFunc
	Log    *slog.Logger

	tcpIdleTimeout time.Duration // of upgraded streams (Options.TCPIdleTimeout)

	initOnce sync.Once
	h1pool   *h1Pool
	h1       *http.Transport
	h2       *http.Transport
	clusters atomic.Pointer[map[string]*cluster]
	byIP     atomic.Pointer[map[netip.Addr]endpointMeta]
	targets  sync.Map // "ip:port" -> dialTarget, for the transports' dialers
}

// systemLookup resolves with /etc/resolv.conf; when it cannot be read,
// every lookup fails with why, so DNS clusters fail closed and say so.
func systemLookup() dnsresolve.LookupFunc {
	c, err := dnsresolve.NewClient("/etc/resolv.conf")
	if err != nil {
		return func(context.Context, string, dnsresolve.Family) (dnsresolve.Answer, error) {
			return dnsresolve.Answer{}, err
		}
	}
	return c.Lookup
}

// lookupFunc is the resolver of DNS clusters.
func (u *Upstream) lookupFunc() dnsresolve.LookupFunc {
	u.init()
	return u.Lookup
}

// dialTarget is how to reach one address.
type dialTarget struct {
	addr netip.AddrPort
	// connect is the HBONE CONNECT's target when it is not addr (a
	// waypoint reached for the service VIP it serves).
	connect  netip.AddrPort
	hbone    bool
	identity spiffeid.ID
	timeout  time.Duration
	tls      *tls.Config // originate TLS inside the connection
	tlsID    uint64      // of the cluster settings tls came from
}

// dialError marks failures to establish the upstream connection (flag UF).
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// expectContinueTimeout is how long a request with "Expect: 100-continue"
// (kept by proxy_100_continue) waits for the upstream's 100 Continue before
// its body is sent anyway: curl's and net/http's default wait, so a
// server that ignores Expect costs what it costs without the mesh.
const expectContinueTimeout = time.Second

// Upstream HTTP/1.1 connections kept idle per endpoint, and for how long
// (net/http's Transport defaults).
const (
	maxIdlePerEndpoint = 256
	idleConnTimeout    = 90 * time.Second
)

// maxResponseHeaderBytes bounds an upstream response's head (net/http's
// Transport default).
const maxResponseHeaderBytes = 10 << 20

var errRetired = errors.New("upstream connection retired after max_requests_per_connection")

func (u *Upstream) init() {
	u.initOnce.Do(func() {
		if u.Log == nil {
			u.Log = slog.New(slog.DiscardHandler)
		}
		if u.TunnelPort == 0 {
			u.TunnelPort = mesh.HBONEPort
		}
		if u.DialTCP == nil {
			u.DialTCP = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
		}
		if u.Lookup == nil {
			u.Lookup = systemLookup()
		}
		u.h1pool = &h1Pool{dial: u.dialConn, maxIdle: maxIdlePerEndpoint, idleTimeout: idleConnTimeout}
		u.h1 = &http.Transport{
			DialContext:            u.dialTransport,
			DisableCompression:     true,
			ExpectContinueTimeout:  expectContinueTimeout,
			MaxIdleConnsPerHost:    maxIdlePerEndpoint,
			MaxResponseHeaderBytes: maxResponseHeaderBytes,
			IdleConnTimeout:        idleConnTimeout,
			WriteBufferSize:        32 << 10,
			ReadBufferSize:         32 << 10,
		}
		// h2 with prior knowledge ("h2c") inside the stream, one pooled
		// connection per endpoint multiplexing every request.
		h2c := new(http.Protocols)
		h2c.SetUnencryptedHTTP2(true)
		u.h2 = &http.Transport{
			DialContext:            u.dialTransport,
			Protocols:              h2c,
			DisableCompression:     true,
			ExpectContinueTimeout:  expectContinueTimeout,
			IdleConnTimeout:        idleConnTimeout,
			MaxResponseHeaderBytes: maxResponseHeaderBytes,
			HTTP2:                  &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
		}
		empty := map[string]*cluster{}
		u.clusters.Store(&empty)
		noIPs := map[netip.Addr]endpointMeta{}
		u.byIP.Store(&noIPs)
	})
}

// Close drops pooled connections.
func (u *Upstream) Close() {
	u.init()
	u.h1pool.close()
	u.h1.CloseIdleConnections()
	u.h2.CloseIdleConnections()
}

func (u *Upstream) setClusters(m map[string]*cluster) {
	u.init()
	ips := map[netip.Addr]endpointMeta{}
	for _, c := range m {
		for _, e := range *c.eps.Load() {
			ips[e.addr.Addr()] = e.meta
		}
	}
	u.clusters.Store(&m)
	u.byIP.Store(&ips)
}

func (u *Upstream) cluster(name string) *cluster {
	u.init()
	return (*u.clusters.Load())[name]
}

// originalTarget is how to reach an ORIGINAL_DST address: over HBONE when
// an endpoint of any cluster has that IP and a tunnel, else plain TCP.
func (u *Upstream) originalTarget(dst netip.AddrPort, timeout time.Duration) dialTarget {
	t := dialTarget{addr: dst, timeout: timeout}
	if m, ok := (*u.byIP.Load())[dst.Addr()]; ok && m.HBONE {
		t.hbone, t.identity = true, m.Identity
	}
	return t
}

// dialTransport dials for the Transports: a connection that counts its
// requests (max_requests_per_connection).
func (u *Upstream) dialTransport(ctx context.Context, _, addr string) (net.Conn, error) {
	c, err := u.dialConn(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c}, nil
}

// dialConn connects to the target registered for addr (its pool key):
// an HBONE stream or TCP connection, with TLS when the cluster originates
// it.
func (u *Upstream) dialConn(ctx context.Context, addr string) (net.Conn, error) {
	v, ok := u.targets.Load(addr)
	if !ok {
		return nil, &dialError{fmt.Errorf("no endpoint known at %s", addr)}
	}
	t := v.(dialTarget)
	s, err := u.dialStream(ctx, t, nil)
	if err != nil {
		return nil, err
	}
	c, ok := s.(net.Conn)
	if !ok {
		cs := s.(*hbone.ClientStream)
		c = &streamConn{Stream: cs, local: cs.LocalAddr(), remote: cs.RemoteAddr()}
	}
	if t.tls != nil {
		if c, err = handshake(ctx, c, t.tls); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// dialStream connects to t: an HBONE stream to <ip>:TunnelPort verifying
// t.identity, or a TCP connection. header goes on the CONNECT.
func (u *Upstream) dialStream(ctx context.Context, t dialTarget, header http.Header) (hbone.Stream, error) {
	u.init()
	if t.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.timeout)
		defer cancel()
	}
	if t.hbone {
		tunnel := net.JoinHostPort(t.addr.Addr().String(), strconv.Itoa(int(u.TunnelPort)))
		target := t.addr
		if t.connect.IsValid() {
			target = t.connect
		}
		st, err := u.Dialer.Dial(ctx, tunnel, tlsconfig.AuthorizeID(t.identity), target.String(), header)
		if err != nil {
			return nil, &dialError{fmt.Errorf("HBONE to %s via %s (identity %s): %w", t.addr, tunnel, t.identity, err)}
		}
		return st, nil
	}
	c, err := u.DialTCP(ctx, "tcp", t.addr.String())
	if err != nil {
		return nil, &dialError{fmt.Errorf("TCP to %s: %w", t.addr, err)}
	}
	tc, ok := c.(hbone.Stream)
	if !ok {
		c.Close()
		return nil, &dialError{fmt.Errorf("TCP to %s: connection %T cannot half-close", t.addr, c)}
	}
	return tc, nil
}

// RoundTrip sends req to an endpoint of cluster chosen by its lb_policy
// (hash is the route's hash_policy result when hashed). Errors wrap
// route.ErrNoHealthyUpstream, route.ErrOverflow or route.ErrConnectFailure.
func (u *Upstream) RoundTrip(req *http.Request, clusterName string, hash uint64, hashed bool) (*http.Response, error) {
	u.init()
	ctx := req.Context()
	rs := requestStateFrom(ctx)
	c := u.cluster(clusterName)
	if c == nil {
		return nil, fmt.Errorf("%w: cluster %q is not configured", errNoCluster, clusterName)
	}
	s := c.settings.Load()
	e, t, err := u.target(c, s, rs, hash, hashed)
	if err != nil {
		return nil, fmt.Errorf("%w: cluster %s: %w", errNoHealthy, clusterName, err)
	}
	if !c.acquireRequest() {
		return nil, fmt.Errorf("%w: cluster %s: %d requests outstanding (max_requests)", errOverflow, clusterName, s.maxRequests)
	}
	rel := &release{c: c, e: e}
	if e != nil {
		e.st.active.Add(1)
	}
	if rs != nil {
		rs.setUpstream(clusterName, e, t.addr)
	}
	h2 := upstreamH2(req, rs, s)
	if !h2 {
		if err := c.acquireConn(ctx); err != nil {
			rel.done()
			return nil, err
		}
		rel.conn = true
	}
	key := poolKeyOf(clusterName, e, t)
	if v, ok := u.targets.Load(key); !ok || v.(dialTarget) != t {
		u.targets.Store(key, t)
	}
	out := req.Clone(ctx)
	out.Trailer = req.Trailer // Clone copies it before the body's end fills it in
	out.RequestURI = ""
	out.URL.Scheme = "http"
	out.URL.Host = key
	if out.Host == "" {
		out.Host = req.URL.Host
	}
	var resp *http.Response
	if h2 {
		resp, err = u.h2.RoundTrip(out)
	} else {
		resp, err = u.roundTripH1(out, key, s, rel)
	}
	if err != nil {
		rel.done()
		var de *dialError
		if errors.As(err, &de) {
			c.report(e, true)
			return nil, fmt.Errorf("%w: %w", errConnectFailure, err)
		}
		if ctx.Err() == nil {
			c.report(e, true)
		}
		return nil, fmt.Errorf("upstream %s of cluster %s: %w", key, clusterName, err)
	}
	c.report(e, resp.StatusCode >= 500)
	if up, ok := resp.Body.(hbone.Stream); ok && resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body = &upgradedBody{Stream: withIdleTimeout(up, u.tcpIdleTimeout), rel: rel}
	} else {
		resp.Body = &releaseBody{ReadCloser: resp.Body, rel: rel}
	}
	return resp, nil
}

// target picks the endpoint of c to send to (none for ORIGINAL_DST: the
// request's original destination) and how to reach it.
func (u *Upstream) target(c *cluster, s *clusterSettings, rs *requestState, hash uint64, hashed bool) (*endpoint, dialTarget, error) {
	if s.originalDst {
		if rs == nil || !rs.origDst.IsValid() {
			return nil, dialTarget{}, errors.New("ORIGINAL_DST cluster without an original destination")
		}
		return nil, u.originalTarget(rs.origDst, s.connectTimeout), nil
	}
	e := c.pick(hash, hashed)
	if e == nil {
		c.stats.NoHealthy.Add(1)
		if err := c.dnsErr.Load(); err != nil {
			return nil, dialTarget{}, fmt.Errorf("no healthy endpoint: %w", *err)
		}
		return nil, dialTarget{}, errors.New("no healthy endpoint")
	}
	return e, dialTarget{addr: e.addr, connect: e.meta.TunnelTarget, hbone: e.meta.HBONE, identity: e.meta.Identity,
		timeout: s.connectTimeout, tls: s.tls, tlsID: s.tlsID}, nil
}

// upstreamH2 is whether req goes upstream over HTTP/2.
func upstreamH2(req *http.Request, rs *requestState, s *clusterSettings) bool {
	h2 := req.ProtoMajor == 2
	if rs != nil {
		h2 = rs.upstreamH2(req)
	}
	if s.upstreamH2 != nil { // explicit_http_config beats the downstream protocol
		h2 = *s.upstreamH2
	}
	if s.tls != nil {
		h2 = false // originated TLS offers http/1.1 only
	}
	if _, ok := req.Header["Upgrade"]; ok {
		h2 = false // an upgrade switches an HTTP/1.1 connection (no extended CONNECT)
	}
	return h2
}

// roundTripH1 sends out over a pooled HTTP/1.1 connection to key, retiring
// the connection after max_requests_per_connection requests (0: never):
// through the h1Pool when it can, else net/http's Transport.
func (u *Upstream) roundTripH1(out *http.Request, key string, s *clusterSettings, rel *release) (*http.Response, error) {
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = nil // no Go default User-Agent
	}
	max := s.maxRequestsPerConn
	if max == 1 {
		out.Close = true
	}
	if s.tls == nil && h1Eligible(out) {
		return u.h1pool.roundTrip(out, key, max)
	}
	if max > 1 {
		out = out.WithContext(httptrace.WithClientTrace(out.Context(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) {
				if cc, ok := info.Conn.(*countedConn); ok && int(cc.n.Add(1)) >= max {
					rel.retire = cc
				}
			},
		}))
	}
	return u.h1.RoundTrip(out)
}

// release gives back what one request held, once.
type release struct {
	once   sync.Once
	c      *cluster
	e      *endpoint
	conn   bool
	retire *countedConn
}

func (r *release) done() {
	r.once.Do(func() {
		r.c.releaseRequest()
		if r.e != nil {
			r.e.st.active.Add(-1)
		}
		if r.conn {
			r.c.releaseConn()
		}
		if r.retire != nil {
			r.retire.retired.Store(true)
			r.retire.Conn.Close()
		}
	})
}

type releaseBody struct {
	io.ReadCloser
	rel *release
}

func (b *releaseBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.rel.done()
	}
	return n, err
}

func (b *releaseBody) Close() error {
	err := b.ReadCloser.Close()
	b.rel.done()
	return err
}

// upgradedBody is the switched connection of a 101 (net/http's Transport
// gives it as the body); the request keeps its circuit-breaker slots until
// it is closed.
type upgradedBody struct {
	hbone.Stream
	rel *release
}

func (b *upgradedBody) Close() error {
	err := b.Stream.Close()
	b.rel.done()
	return err
}

// countedConn counts the requests an HTTP/1.1 connection carried; once
// retired it fails writes before sending anything, which net/http treats
// as "nothing written" and retries on a fresh connection.
type countedConn struct {
	net.Conn
	n       atomic.Int32
	retired atomic.Bool
}

func (c *countedConn) Write(p []byte) (int, error) {
	if c.retired.Load() {
		return 0, errRetired
	}
	return c.Conn.Write(p)
}

// CloseWrite half-closes an upgraded connection.
func (c *countedConn) CloseWrite() error { return closeWrite(c.Conn) }

// streamConn presents an HBONE stream as a net.Conn. Read deadlines are
// the stream's (hbone.ServerStream and ClientStream have them: net/http's
// HTTP/1.1 server needs them after every request and to hijack); other
// deadlines are no-ops: net/http and x/net/http2 only need them for
// timeouts the waypoint does not configure on these connections.
type streamConn struct {
	hbone.Stream
	local, remote net.Addr
}

type readDeadliner interface{ SetReadDeadline(time.Time) error }

func (c *streamConn) LocalAddr() net.Addr              { return c.local }
func (c *streamConn) RemoteAddr() net.Addr             { return c.remote }
func (c *streamConn) SetDeadline(t time.Time) error    { return c.SetReadDeadline(t) }
func (c *streamConn) SetWriteDeadline(time.Time) error { return nil }
func (c *streamConn) SetReadDeadline(t time.Time) error {
	if d, ok := c.Stream.(readDeadliner); ok {
		return d.SetReadDeadline(t)
	}
	return nil
}

// Close ends the stream gracefully (END_STREAM, then close), so the peer
// sees a clean end rather than a reset when both sides are done.
func (c *streamConn) Close() error {
	c.Stream.CloseWrite()
	return c.Stream.Close()
}

// closeWrite half-closes c when it can (a TCP connection, an HBONE
// stream, a TLS connection), else closes it.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}
