package server

import (
	"net"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/weft-mesh/weft/pkg/connlimit"
)

// DefaultMaxStreamsPerSource is how many xDS streams one address may hold
// open at once. A node agent holds one, a waypoint or a proxyless gRPC
// client one or two; a node's address is shared by its host-network pods.
const DefaultMaxStreamsPerSource = 64

// streamCap caps the streams one peer address holds open on the xDS port.
// It runs before the token is reviewed, so a flood from one address costs
// neither TokenReviews nor full states beyond the cap.
type streamCap struct {
	perSource *connlimit.PerKey[netip.Addr]
	refused   prometheus.Counter
}

func newStreamCap(max int, reg prometheus.Registerer) *streamCap {
	if max <= 0 {
		max = DefaultMaxStreamsPerSource
	}
	c := &streamCap{perSource: connlimit.NewPerKey[netip.Addr](max),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_xds_streams_refused_total",
			Help: "xDS streams refused because their source address held the most streams allowed."})}
	if reg != nil {
		reg.MustRegister(c.refused)
	}
	return c
}

func (c *streamCap) intercept(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	src := sourceAddr(ss)
	if !c.perSource.Take(src) {
		c.refused.Inc()
		return status.Errorf(codes.ResourceExhausted, "%s holds %d streams already, the most allowed", src, c.perSource.Limit())
	}
	defer c.perSource.Release(src)
	return handler(srv, ss)
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
