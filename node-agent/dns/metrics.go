package dns

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the DNS proxy.
type Metrics struct {
	requests *prometheus.CounterVec
}

// NewMetrics registers the proxy's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_node_agent_dns_requests_total",
		Help: "DNS queries the node agent's DNS proxy handled, by result: answered or empty (from the mesh), forwarded, forward_failed, refused, malformed, not_implemented.",
	}, []string{"result"})}
	// Every result from the start, so rate() sees the first increment.
	for _, r := range []string{ResultAnswered, ResultEmpty, ResultForwarded, ResultForwardFailed, ResultRefused, ResultMalformed, ResultNotImplemented} {
		m.requests.WithLabelValues(r)
	}
	reg.MustRegister(m.requests)
	return m
}

func (m *Metrics) count(result string) {
	if m != nil {
		m.requests.WithLabelValues(result).Inc()
	}
}
