package dashboard

import (
	"fmt"
	"io"
	"net"
	"strconv"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
)

// Where the proxies serve Prometheus metrics (node-agent/cmd/weft-node-agent
// and waypoint/cmd/weft-waypoint, both pkg/admin.Metrics).
const (
	MetricsPort = 15020
	MetricsPath = "/metrics"
)

// Waypoint pod labels (control/waypoint/deploy).
const (
	labelAppName     = "app.kubernetes.io/name"
	labelManagedBy   = "app.kubernetes.io/managed-by"
	labelGatewayName = "gateway.networking.k8s.io/gateway-name"
	waypointApp      = "weft-waypoint"
	waypointManager  = "weft-control"
)

// Targets picks Weft's own proxies among pods: running pods of the node
// agents' service account (nodeAgentNS/nodeAgentSA) and waypoint pods
// deployed by weft-control. Nothing else is ever scraped, so the dashboard
// cannot be pointed at arbitrary pods.
func Targets(pods []*corev1.Pod, nodeAgentNS, nodeAgentSA string) []Target {
	var out []Target
	for _, p := range pods {
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil || p.Status.PodIP == "" {
			continue
		}
		t := Target{Namespace: p.Namespace, Pod: p.Name, Node: p.Spec.NodeName,
			URL: "http://" + net.JoinHostPort(p.Status.PodIP, strconv.Itoa(MetricsPort)) + MetricsPath}
		switch {
		case p.Namespace == nodeAgentNS && p.Spec.ServiceAccountName == nodeAgentSA:
			t.Kind = KindNodeAgent
		case p.Labels[labelAppName] == waypointApp && p.Labels[labelManagedBy] == waypointManager:
			t.Kind, t.Workload = KindWaypoint, p.Labels[labelGatewayName]
		default:
			continue
		}
		out = append(out, t)
	}
	return out
}

// relevant are the metrics the graph uses; the rest of a scrape is dropped.
var relevant = map[string]bool{
	metricTCPOpened: true, metricTCPClosed: true, metricTCPSent: true, metricTCPReceived: true, metricRequests: true,
}

// ParseMetrics reads Prometheus text exposition and keeps the counters the
// graph uses.
func ParseMetrics(r io.Reader) ([]Sample, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	var out []Sample
	for name, f := range fams {
		if !relevant[name] {
			continue
		}
		for _, m := range f.GetMetric() {
			v, ok := value(f.GetType(), m)
			if !ok {
				continue
			}
			labels := make(map[string]string, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			out = append(out, Sample{Metric: name, Labels: labels, Value: v})
		}
	}
	return out, nil
}

func value(t dto.MetricType, m *dto.Metric) (float64, bool) {
	switch t {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue(), true
	case dto.MetricType_UNTYPED:
		return m.GetUntyped().GetValue(), true
	}
	return 0, false
}
