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

	"github.com/weft-mesh/weft/pkg/hbone"
)

// DefaultTunnelPort is where node agents (and waypoints) terminate HBONE.
const DefaultTunnelPort = 15008

// Upstream sends requests to cluster endpoints; it implements
// route.Upstream. Its connection pools are shared by every chain.
type Upstream struct {
	// Dialer opens HBONE streams with the waypoint's own SVID.
	Dialer *hbone.Dialer
	// TunnelPort is the HBONE port of endpoints (default 15008).
	TunnelPort uint16
	// DialTCP dials NONE endpoints and original destinations without a
	// known tunnel (default net.Dialer).
	DialTCP func(ctx context.Context, network, addr string) (net.Conn, error)
	Log     *slog.Logger

	initOnce sync.Once
	h1       *http.Transport
	h2       *http.Transport
	clusters atomic.Pointer[map[string]*cluster]
	byIP     atomic.Pointer[map[netip.Addr]endpointMeta]
	targets  sync.Map // "ip:port" -> dialTarget, for the transports' dialers
}

// dialTarget is how to reach one address.
type dialTarget struct {
	addr     netip.AddrPort
	hbone    bool
	identity spiffeid.ID
	timeout  time.Duration
	tls      *tls.Config // originate TLS inside the connection
}

// dialError marks failures to establish the upstream connection (flag UF).
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

var errRetired = errors.New("upstream connection retired after max_requests_per_connection")

func (u *Upstream) init() {
	u.initOnce.Do(func() {
		if u.Log == nil {
			u.Log = slog.New(slog.DiscardHandler)
		}
		if u.TunnelPort == 0 {
			u.TunnelPort = DefaultTunnelPort
		}
		if u.DialTCP == nil {
			u.DialTCP = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
		}
		u.h1 = &http.Transport{
			DialContext:         u.dialTransport,
			DisableCompression:  true,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
			WriteBufferSize:     32 << 10,
			ReadBufferSize:      32 << 10,
		}
		// h2 with prior knowledge ("h2c") inside the stream, one pooled
		// connection per endpoint multiplexing every request.
		h2c := new(http.Protocols)
		h2c.SetUnencryptedHTTP2(true)
		u.h2 = &http.Transport{
			DialContext:        u.dialTransport,
			Protocols:          h2c,
			DisableCompression: true,
			IdleConnTimeout:    90 * time.Second,
			HTTP2:              &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
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

func (u *Upstream) dialTransport(ctx context.Context, _, addr string) (net.Conn, error) {
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
	return &countedConn{Conn: c}, nil
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
		st, err := u.Dialer.Dial(ctx, tunnel, tlsconfig.AuthorizeID(t.identity), t.addr.String(), header)
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

// Hop-by-hop headers a proxy must not forward (RFC 9110 7.6.1).
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHopHeaders(h http.Header, keepTrailersTE bool) {
	for _, f := range h.Values("Connection") {
		for _, name := range splitComma(f) {
			h.Del(name)
		}
	}
	te := h.Get("Te")
	for _, k := range hopHeaders {
		h.Del(k)
	}
	if keepTrailersTE && te == "trailers" {
		h.Set("Te", "trailers")
	}
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			f := trimSpace(s[start:i])
			if f != "" {
				out = append(out, f)
			}
			start = i + 1
		}
	}
	return out
}

func trimSpace(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
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
	var e *endpoint
	var t dialTarget
	if s.originalDst {
		if rs == nil || !rs.origDst.IsValid() {
			return nil, fmt.Errorf("%w: ORIGINAL_DST cluster %s without an original destination", errNoHealthy, clusterName)
		}
		t = u.originalTarget(rs.origDst, s.connectTimeout)
	} else {
		if e = c.pick(hash, hashed); e == nil {
			c.stats.NoHealthy.Add(1)
			return nil, fmt.Errorf("%w: cluster %s has no healthy endpoint", errNoHealthy, clusterName)
		}
		t = dialTarget{addr: e.addr, hbone: e.meta.HBONE, identity: e.meta.Identity, timeout: s.connectTimeout, tls: s.tls}
	}
	if !c.acquireRequest() {
		return nil, fmt.Errorf("%w: cluster %s: %d requests outstanding (max_requests)", errOverflow, clusterName, s.maxRequests)
	}
	rel := &release{c: c, e: e}
	if e != nil {
		e.st.active.Add(1)
	}
	h2 := req.ProtoMajor == 2
	if rs != nil {
		h2 = rs.upstreamH2(req)
		rs.setUpstream(clusterName, e, t.addr)
	}
	if s.upstreamH2 != nil { // explicit_http_config beats the downstream protocol
		h2 = *s.upstreamH2
	}
	if s.tls != nil {
		h2 = false // originated TLS offers http/1.1 only
	}
	if !h2 {
		if err := c.acquireConn(ctx); err != nil {
			rel.done()
			return nil, err
		}
		rel.conn = true
	}
	key := t.addr.String()
	if t.tls != nil {
		key = tlsPoolKey(clusterName, t.addr)
	}
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
	removeHopHeaders(out.Header, h2)
	var resp *http.Response
	var err error
	if h2 {
		resp, err = u.h2.RoundTrip(out)
	} else {
		if _, ok := out.Header["User-Agent"]; !ok {
			out.Header["User-Agent"] = nil // no Go default User-Agent
		}
		switch max := s.maxRequestsPerConn; {
		case max == 1:
			out.Close = true
		case max > 1:
			out = out.WithContext(httptrace.WithClientTrace(out.Context(), &httptrace.ClientTrace{
				GotConn: func(info httptrace.GotConnInfo) {
					if cc, ok := info.Conn.(*countedConn); ok && int(cc.n.Add(1)) >= max {
						rel.retire = cc
					}
				},
			}))
		}
		resp, err = u.h1.RoundTrip(out)
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
	removeHopHeaders(resp.Header, false)
	resp.Body = &releaseBody{ReadCloser: resp.Body, rel: rel}
	return resp, nil
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

// streamConn presents an HBONE stream as a net.Conn. Deadlines are not
// supported (no-ops): net/http and x/net/http2 only need them for
// timeouts the waypoint does not configure on these connections.
type streamConn struct {
	hbone.Stream
	local, remote net.Addr
}

func (c *streamConn) LocalAddr() net.Addr              { return c.local }
func (c *streamConn) RemoteAddr() net.Addr             { return c.remote }
func (c *streamConn) SetDeadline(time.Time) error      { return nil }
func (c *streamConn) SetReadDeadline(time.Time) error  { return nil }
func (c *streamConn) SetWriteDeadline(time.Time) error { return nil }

// Close ends the stream gracefully (END_STREAM, then close), so the peer
// sees a clean end rather than a reset when both sides are done.
func (c *streamConn) Close() error {
	c.Stream.CloseWrite()
	return c.Stream.Close()
}
