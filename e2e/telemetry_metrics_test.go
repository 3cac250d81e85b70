package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// customizedMetrics is Istio's "Customizing Istio Metrics with Telemetry
// API" task in the waypoint's namespace: REQUEST_COUNT gets request_host and
// destination_port (its example's expressions) and loses request_protocol;
// RESPONSE_SIZE is turned off.
const customizedMetrics = `
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: namespace-metrics
  namespace: default
spec:
  metrics:
  - providers:
    - name: prometheus
    overrides:
    - match:
        metric: REQUEST_COUNT
      tagOverrides:
        destination_port:
          value: "string(destination.port)"
        request_host:
          value: "request.host"
        request_protocol:
          operation: REMOVE
    - match:
        metric: RESPONSE_SIZE
      disabled: true
`

// testMetricOverrides applies customizedMetrics while Bookinfo's traffic
// runs and queries the real Prometheus: the waypoint's istio_requests_total
// carries the new tags and not the removed one, istio_response_bytes goes
// stale, and the other metrics keep their labels. Removing the Telemetry
// brings the standard labels back.
func testMetricOverrides(t *testing.T, e *env, p *promAPI) {
	e.applyYAML(t, customizedMetrics)
	eventually(t, "Telemetry namespace-metrics accepted without problems", 60*time.Second, func() error {
		got := e.mustKubectl(t, "get", "telemetry", "namespace-metrics", "-o", istioStatusPath)
		if !strings.HasPrefix(got, "True Accepted") {
			return fmt.Errorf("status %q", got)
		}
		return nil
	})
	p.await(t, `sum by (request_host, destination_port) (istio_requests_total{reporter="waypoint",destination_workload="reviews-v1"})`,
		wantLabelValues("destination_port", "9080"))
	p.await(t, `sum by (request_host) (istio_requests_total{reporter="waypoint",destination_workload="reviews-v1"})`,
		wantLabelValues("request_host", "reviews:9080"))
	p.await(t, `count(istio_requests_total{reporter="waypoint",request_protocol!=""})`, noSeries)
	p.await(t, `count(istio_response_bytes_count{reporter="waypoint"})`, noSeries)
	p.await(t, `count by (request_protocol) (istio_request_bytes_count{reporter="waypoint"})`, wantLabelValues("request_protocol", "http"))

	e.mustKubectl(t, "delete", "telemetry", "namespace-metrics")
	p.await(t, `count by (request_protocol) (istio_requests_total{reporter="waypoint"})`, wantLabelValues("request_protocol", "http"))
	p.await(t, `count(istio_requests_total{reporter="waypoint",request_host!=""})`, noSeries)
	p.await(t, `count(istio_response_bytes_count{reporter="waypoint"})`, nonEmpty)
}

// noSeries accepts an empty result: the series are gone (stale).
func noSeries(res []promSample) error {
	if len(res) > 0 {
		return fmt.Errorf("%d series, want none: %v", len(res), res[0].Metric)
	}
	return nil
}
