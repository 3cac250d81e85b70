package proxy

import (
	"hash/maphash"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weft-mesh/weft/pkg/istiolabels"
	"github.com/weft-mesh/weft/pkg/statsexpr"
)

// The standard metrics' indices in istiolabels.StandardMetrics.
var (
	metricRequests      = metricIndex("requests_total")
	metricDuration      = metricIndex("request_duration_milliseconds")
	metricRequestBytes  = metricIndex("request_bytes")
	metricResponseBytes = metricIndex("response_bytes")
	metricTCPOpened     = metricIndex("tcp_connections_opened_total")
	metricTCPClosed     = metricIndex("tcp_connections_closed_total")
	metricTCPSent       = metricIndex("tcp_sent_bytes_total")
	metricTCPReceived   = metricIndex("tcp_received_bytes_total")
)

func metricIndex(name string) int {
	i := slices.IndexFunc(istiolabels.StandardMetrics, func(m istiolabels.StandardMetric) bool { return m.Name == name })
	if i < 0 {
		panic("no standard metric " + name)
	}
	return i
}

// metricHelp is each standard metric's help text.
var metricHelp = map[string]string{
	"requests_total":                "Requests processed by the waypoint.",
	"request_duration_milliseconds": "Request duration in milliseconds.",
	"request_bytes":                 "Request sizes (headers and body) in bytes.",
	"response_bytes":                "Response sizes (headers and body) in bytes.",
	"tcp_connections_opened_total":  "TCP streams opened.",
	"tcp_connections_closed_total":  "TCP streams closed.",
	"tcp_sent_bytes_total":          "Bytes sent during response (destination to source).",
	"tcp_received_bytes_total":      "Bytes received during request (source to destination).",
}

// Istio's buckets: milliseconds for durations, powers of ten for sizes.
var (
	durationBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}
	sizeBuckets     = prometheus.ExponentialBuckets(1, 10, 9)
)

// metricSet is the collectors of one metric plan.
type metricSet struct {
	plan *metricPlan
	vecs []metricVec // by index in istiolabels.StandardMetrics
	// http finds a request's series of the four HTTP metrics; nil when
	// one of them has labels other than the standard ones (Telemetry
	// overrides), which then goes metric by metric.
	http *httpSeriesCache
}

// metricVec is one metric: a counter or a histogram, neither when dropped.
type metricVec struct {
	shape *metricShape
	c     *prometheus.CounterVec
	h     *prometheus.HistogramVec
}

func newMetricSet(plan *metricPlan) *metricSet {
	set := &metricSet{plan: plan, vecs: make([]metricVec, len(istiolabels.StandardMetrics))}
	for i, m := range istiolabels.StandardMetrics {
		v := metricVec{shape: &plan.shapes[i]}
		name, help := "istio_"+m.Name, metricHelp[m.Name]
		switch {
		case v.shape.drop:
		case strings.HasSuffix(m.Name, "_total"):
			v.c = prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, v.shape.labels)
		case m.Name == "request_duration_milliseconds":
			v.h = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: durationBuckets}, v.shape.labels)
		default:
			v.h = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: sizeBuckets}, v.shape.labels)
		}
		set.vecs[i] = v
	}
	if set.httpStandard() {
		set.http = &httpSeriesCache{series: map[uint64][]*httpSeries{}}
	}
	return set
}

// httpMetrics are the HTTP metrics, the request count last: a scrape that
// sees a request counted sees its duration and sizes too.
var httpMetrics = [...]int{metricDuration, metricRequestBytes, metricResponseBytes, metricRequests}

// httpStandard reports whether every HTTP metric is dropped or labelled
// with the standard values.
func (s *metricSet) httpStandard() bool {
	for _, i := range httpMetrics {
		if v := s.vecs[i]; !v.shape.drop && !v.shape.standard {
			return false
		}
	}
	return true
}

// collectors are the set's metrics that are not dropped.
func (s *metricSet) collectors() []prometheus.Collector {
	var out []prometheus.Collector
	for _, v := range s.vecs {
		switch {
		case v.c != nil:
			out = append(out, v.c)
		case v.h != nil:
			out = append(out, v.h)
		}
	}
	return out
}

// record counts x (a counter) or observes it (a histogram) with the
// labels the metric's shape makes of the standard values.
func (v *metricVec) record(std []string, attrs func() *statsexpr.Attributes, x float64) {
	switch {
	case v.c != nil:
		v.c.WithLabelValues(v.shape.values(std, attrs)...).Add(x)
	case v.h != nil:
		v.h.WithLabelValues(v.shape.values(std, attrs)...).Observe(x)
	}
}

// use makes plan's collectors the reported ones. Series of the old plan
// are gone, as Envoy's are when its stats configuration changes. Called
// by the Store, serialized.
func (m *Metrics) use(plan *metricPlan) {
	if m != nil && m.current.Load().plan != plan {
		m.current.Store(newMetricSet(plan))
	}
}

// currentMetrics collects the current metric set. It describes nothing: an
// unchecked collector, since the label names change with the plan (a
// registry keeps the names a described metric first had for good).
type currentMetrics struct{ m *Metrics }

func (currentMetrics) Describe(chan<- *prometheus.Desc) {}

func (c currentMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, col := range c.m.current.Load().collectors() {
		col.Collect(ch)
	}
}

// attributes are the request's (or TCP stream's) attributes for tag
// expressions, made once per record.
func (r *record) attributes() *statsexpr.Attributes {
	if r.attrs != nil {
		return r.attrs
	}
	rs := r.rs
	a := &statsexpr.Attributes{ResponseCode: r.code, GRPCStatus: r.grpcStatus, Source: rs.clientIP, Destination: rs.origDst,
		Upstream: rs.upstream(r.cluster).addr, Cluster: r.cluster, Route: r.route, MutualTLS: !rs.edge}
	if req := r.req; req != nil {
		scheme := "http"
		if req.TLS != nil {
			scheme = "https"
		}
		a.Request = &statsexpr.Request{Host: req.Host, Method: req.Method, Path: req.URL.RequestURI(), Scheme: scheme,
			Protocol: req.Proto, ID: r.requestID, UserAgent: req.UserAgent(), Header: req.Header}
	}
	r.attrs = a
	return a
}

// httpSeriesCache maps standard label values to their series of the four
// HTTP metrics: one hash of the values per request instead of one per
// metric (prometheus hashes and checks every value in WithLabelValues,
// ~9% of the waypoint's CPU at 1000 req/s with Istio's 25 labels, four
// times). It holds an entry per series, as the vectors do, for the
// metric set's life.
type httpSeriesCache struct {
	mu     sync.RWMutex
	series map[uint64][]*httpSeries // by hashValues
}

// httpSeries is one label set's series, by position in httpMetrics (nil:
// dropped).
type httpSeries struct {
	values []string
	obs    [len(httpMetrics)]func(float64)
}

var valuesSeed = maphash.MakeSeed()

func hashValues(values []string) uint64 {
	var h maphash.Hash
	h.SetSeed(valuesSeed)
	for _, v := range values {
		h.WriteString(v)
		h.WriteByte(0) // "a","bc" and "ab","c" differ
	}
	return h.Sum64()
}

// httpSeries returns the series of values (s.http must be set), which
// the cache keeps: the caller must not change them afterwards.
func (s *metricSet) httpSeries(values []string) *httpSeries {
	c, k := s.http, hashValues(values)
	c.mu.RLock()
	found := c.lookup(k, values)
	c.mu.RUnlock()
	if found != nil {
		return found
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if found := c.lookup(k, values); found != nil { // made meanwhile
		return found
	}
	series := &httpSeries{values: values}
	for i, m := range httpMetrics {
		switch v := s.vecs[m]; {
		case v.c != nil:
			series.obs[i] = v.c.WithLabelValues(values...).Add
		case v.h != nil:
			series.obs[i] = v.h.WithLabelValues(values...).Observe
		}
	}
	c.series[k] = append(c.series[k], series)
	return series
}

func (c *httpSeriesCache) lookup(k uint64, values []string) *httpSeries {
	for _, s := range c.series[k] {
		if slices.Equal(s.values, values) {
			return s
		}
	}
	return nil
}
