package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// translationMetrics say what each push's translations cost.
type translationMetrics struct {
	duration *prometheus.HistogramVec
	pods     prometheus.Counter
	// waypoints counts waypoint translations by kind: full, or endpoints
	// (only workloads' health changed; control/waypoint's Translator).
	waypoints *prometheus.CounterVec
}

func newTranslationMetrics(reg prometheus.Registerer) translationMetrics {
	m := translationMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "weft_translation_duration_seconds",
			Help: "Time one push spent translating the cluster, by translation: workload (node agents' Addresses, Authorizations and enrolled namespaces) or waypoint (waypoints', gateways' and proxyless gRPC clients' Envoy configuration).",
			// 1 ms to ~4 s.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 13),
		}, []string{"translation"}),
		pods: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_workload_pods_translated_total",
			Help: "Pods the workload translation translated; a pod unchanged since the last push, while nothing else it reads changed, keeps its workload and is not counted.",
		}),
		waypoints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_waypoint_translations_total",
			Help: "Waypoint translations by kind: full (everything translated again) or endpoints (only workloads' health changed since the last: the load assignments they are endpoints of were made again, every other resource kept).",
		}, []string{"kind"}),
	}
	reg.MustRegister(m.duration, m.pods, m.waypoints)
	return m
}

func (m translationMetrics) observe(translation string, start time.Time) {
	m.duration.WithLabelValues(translation).Observe(time.Since(start).Seconds())
}
