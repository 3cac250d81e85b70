package admin

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weft-mesh/weft/pkg/hbone"
)

// HBONEHandshakeMetrics are the metrics of an HBONE server's handshake
// limits, named <prefix>_hbone_handshakes_shed_total{limit="source"|"server"}
// (connections reset before their TLS handshake, see hbone.Options
// MaxHandshakesPerSource and MaxHandshakes),
// <prefix>_hbone_handshakes_in_flight and
// <prefix>_hbone_peer_connections_shed_total (connections closed after
// their handshake, hbone.Options.MaxConnectionsPerPeer).
func HBONEHandshakeMetrics(prefix string, srv *hbone.Server) []prometheus.Collector {
	shed := func(perSource bool) func() float64 {
		return func() float64 {
			s := srv.HandshakesShed()
			if perSource {
				return float64(s.PerSource)
			}
			return float64(s.Total)
		}
	}
	cs := []prometheus.Collector{prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: prefix + "_hbone_handshakes_in_flight",
		Help: "HBONE connections in their TLS handshake.",
	}, func() float64 { return float64(srv.HandshakesInFlight()) })}
	for _, limit := range []string{"source", "server"} {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        prefix + "_hbone_handshakes_shed_total",
			Help:        "HBONE connections reset before their TLS handshake completed because their source (limit=source) or the server (limit=server) had the most handshakes in flight it allows (at the server limit: the newcomer, or the oldest handshake of the source holding the most).",
			ConstLabels: prometheus.Labels{"limit": limit},
		}, shed(limit == "source")))
	}
	cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: prefix + "_hbone_peer_connections_shed_total",
		Help: "HBONE connections closed right after their TLS handshake because their peer identity held the most established connections one identity may hold.",
	}, func() float64 { return float64(srv.HandshakesShed().PerPeer) }))
	return cs
}
