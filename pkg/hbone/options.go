package hbone

import (
	"crypto/tls"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ALPN is the only application protocol HBONE speaks; there is no HTTP/1
// fallback on purpose so a misconfigured peer fails at the handshake.
const ALPN = "h2"

// Flow-control defaults. The windows are the values Istio's ztunnel uses.
// Frames are a quarter of ztunnel's 1 MiB. The choice was made when the
// client was x/net/http2's, which held a frame-sized send buffer for every
// open stream; our client holds none, and a frame now costs memory only
// while it is received and not yet read (h2recvbuf.go). Measured on the
// node agent's cross-node bulk path (BenchmarkNodeDataPath, three runs
// each, with x/net's client): 16 KiB frames 2.2-2.6 Gbit/s, 64 KiB
// 2.7-3.1, 256 KiB 3.5-4.0, 1 MiB 3.7-4.2; smaller frames cost throughput,
// because each frame is a write of its own.
const (
	DefaultStreamWindow = 4 << 20   // bytes a peer may send on one stream before we read
	DefaultConnWindow   = 16 << 20  // bytes a peer may send on the whole connection
	DefaultMaxFrameSize = 256 << 10 // largest frame we accept (SETTINGS_MAX_FRAME_SIZE)
)

// Options are the HTTP/2 knobs shared by Server and Dialer. Zero values take
// the defaults above; they are options because the benchmark compares them.
type Options struct {
	// StreamWindow is the per-stream receive window in bytes.
	StreamWindow int32
	// ConnWindow is the per-connection receive window in bytes.
	ConnWindow int32
	// MaxFrameSize is the largest DATA frame the peer may send us
	// (16 KiB .. 16 MiB - 1).
	MaxFrameSize uint32
	// MaxConcurrentStreams is advertised by the server (default 1000): one
	// pooled connection carries every stream between two nodes.
	MaxConcurrentStreams uint32
	// MaxHeaderListSize bounds a request's decoded header list (default
	// 64 KiB); the server answers a larger one with 431. It also bounds
	// how much of a CONTINUATION flood is read before the connection ends.
	MaxHeaderListSize uint32
	// IdleTimeout closes connections without streams (default 10 min).
	IdleTimeout time.Duration
	// PingInterval sends a health-check PING after this much read silence so
	// a dead peer is detected and the pool reconnects (default 30 s).
	PingInterval time.Duration
	// PingTimeout closes the connection when a PING gets no answer (default 15 s).
	PingTimeout time.Duration
	// MaxHandshakesPerSource (server only) is how many connections from one
	// source IP may be in their TLS handshake at once (default
	// DefaultMaxHandshakesPerSource); MaxHandshakes is the same for the
	// whole server (default DefaultMaxHandshakes). A connection over either
	// limit is reset before any TLS work and counted (Server.HandshakesShed);
	// while the server is full, a source holding fewer handshakes than the
	// source holding the most takes that one's oldest instead. Sources are
	// IPv4 addresses or IPv6 /64s. Negative disables the limit.
	MaxHandshakesPerSource, MaxHandshakes int
	// MaxConnectionsPerPeer (server only) is how many established
	// connections one peer identity may hold at once (default
	// DefaultMaxConnectionsPerPeer; negative: no limit). A connection over
	// it is closed once its handshake has named the peer, before any
	// stream, and counted (Server.HandshakesShed().PerPeer): a tenant
	// cannot take every slot of a listener that all tenants share.
	MaxConnectionsPerPeer int
}

func (o Options) withDefaults() Options {
	if o.StreamWindow <= 0 {
		o.StreamWindow = DefaultStreamWindow
	}
	if o.ConnWindow <= 0 {
		o.ConnWindow = DefaultConnWindow
	}
	if o.ConnWindow < o.StreamWindow {
		o.ConnWindow = o.StreamWindow
	}
	if o.MaxFrameSize == 0 {
		o.MaxFrameSize = DefaultMaxFrameSize
	}
	if o.MaxFrameSize < 16<<10 {
		o.MaxFrameSize = 16 << 10
	}
	if o.MaxFrameSize > 1<<24-1 {
		o.MaxFrameSize = 1<<24 - 1
	}
	if o.MaxConcurrentStreams == 0 {
		o.MaxConcurrentStreams = 1000
	}
	if o.MaxHeaderListSize == 0 {
		o.MaxHeaderListSize = DefaultMaxHeaderListSize
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 10 * time.Minute
	}
	if o.PingInterval == 0 {
		o.PingInterval = 30 * time.Second
	}
	if o.PingTimeout == 0 {
		o.PingTimeout = 15 * time.Second
	}
	return o
}

// ServerTLSConfig builds the listener's TLS config: mTLS with SVIDs from svid
// and trust from bundle, re-read on every handshake so rotated certificates
// take effect without restarting the listener. authorize decides which client
// identities may connect at all (nil = any identity the bundle trusts);
// per-stream policy belongs in Server.Handler.
func ServerTLSConfig(svid x509svid.Source, bundle x509bundle.Source, authorize tlsconfig.Authorizer) *tls.Config {
	if authorize == nil {
		authorize = tlsconfig.AuthorizeAny()
	}
	return hardenTLS(tlsconfig.MTLSServerConfig(svid, bundle, authorize))
}

// hardenTLS pins TLS 1.3 and ALPN h2 on a copy of c.
func hardenTLS(c *tls.Config) *tls.Config {
	c = c.Clone()
	c.MinVersion = tls.VersionTLS13
	c.NextProtos = []string{ALPN}
	return c
}
