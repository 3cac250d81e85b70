package server

import (
	"net"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// DefaultMaxStreamsPerSource is how many xDS streams one address may hold
// open at once. A node agent holds one, a waypoint or a proxyless gRPC
// client one or two; a node's address is shared by its host-network pods.
const DefaultMaxStreamsPerSource = 64

// streamCap caps the streams one peer address holds open on the xDS port.
// It runs before the token is reviewed, so a flood from one address costs
// neither TokenReviews nor full states beyond the cap.
type streamCap struct {
	max     int
	refused prometheus.Counter

	mu   sync.Mutex
	open map[netip.Addr]int
}

func newStreamCap(max int, reg prometheus.Registerer) *streamCap {
	if max <= 0 {
		max = DefaultMaxStreamsPerSource
	}
	c := &streamCap{max: max, open: map[netip.Addr]int{},
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_xds_streams_refused_total",
			Help: "xDS streams refused because their source address held the most streams allowed."})}
	if reg != nil {
		reg.MustRegister(c.refused)
	}
	return c
}

func (c *streamCap) intercept(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	src := sourceAddr(ss)
	if !c.acquire(src) {
		c.refused.Inc()
		return status.Errorf(codes.ResourceExhausted, "%s holds %d streams already, the most allowed", src, c.max)
	}
	defer c.release(src)
	return handler(srv, ss)
}

func (c *streamCap) acquire(src netip.Addr) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[src] >= c.max {
		return false
	}
	c.open[src]++
	return true
}

func (c *streamCap) release(src netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[src]--; c.open[src] <= 0 {
		delete(c.open, src)
	}
}

// sourceAddr is the stream's peer IP (IPv4-mapped IPv6 unmapped); the zero
// Addr, counted as one source, when it has none.
func sourceAddr(ss grpc.ServerStream) netip.Addr {
	p, ok := peer.FromContext(ss.Context())
	if !ok {
		return netip.Addr{}
	}
	if tcp, ok := p.Addr.(*net.TCPAddr); ok {
		return tcp.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}
