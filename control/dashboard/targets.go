package dashboard

import (
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"strconv"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	appslisters "k8s.io/client-go/listers/apps/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewaylisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"

	"github.com/weft-mesh/weft/control/waypoint/deploy"
	"github.com/weft-mesh/weft/pkg/mesh"
)

// Where the proxies serve Prometheus metrics (node-agent/cmd/weft-node-agent
// and waypoint/cmd/weft-waypoint, both pkg/admin.Metrics).
const (
	MetricsPath = "/metrics"
)

// Owners are the control plane's listers of the objects a proxy pod's
// ownership runs through. Gateways is nil without the Gateway API: then no
// pod is a waypoint.
type Owners struct {
	ReplicaSets appslisters.ReplicaSetLister
	Deployments appslisters.DeploymentLister
	Gateways    gatewaylisters.GatewayLister
	// Served are, by waypoint ("<namespace>/<name>"), the other
	// namespaces the control plane sends through it
	// (workload.WaypointNamespaces); nil: none.
	Served func() map[string]map[string]bool
}

// Targets picks Weft's own proxies among pods by who owns them, never by
// labels alone (a tenant puts any label on its pods):
//   - node agents: pods of the node agents' namespace and service account
//     (nodeAgentNS/nodeAgentSA) controlled by a DaemonSet;
//   - waypoints: pods controlled by a ReplicaSet, controlled by a
//     Deployment, controlled by a Gateway of a waypoint class whose name it
//     bears: what weft-control's deployment controller creates
//     (control/waypoint/deploy). Every link is checked against the live
//     object's UID.
//
// Nothing else is ever scraped, so the dashboard cannot be pointed at
// arbitrary pods.
func Targets(pods []*corev1.Pod, nodeAgentNS, nodeAgentSA string, owners Owners) []Target {
	var out []Target
	var served map[string]map[string]bool
	if owners.Served != nil {
		served = owners.Served()
	}
	for _, p := range pods {
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil || p.Status.PodIP == "" {
			continue
		}
		t := Target{Namespace: p.Namespace, Pod: p.Name, Node: p.Spec.NodeName,
			URL: "http://" + net.JoinHostPort(p.Status.PodIP, strconv.Itoa(mesh.MetricsPort)) + MetricsPath}
		if p.Namespace == nodeAgentNS && p.Spec.ServiceAccountName == nodeAgentSA && controllerIs(p, appsv1.GroupName, "DaemonSet") {
			t.Kind = KindNodeAgent
		} else if gw, ok := owners.waypointOf(p); ok {
			t.Kind, t.Workload = KindWaypoint, gw
			t.Speaks = map[string]bool{p.Namespace: true}
			maps.Copy(t.Speaks, served[p.Namespace+"/"+gw])
		} else {
			continue
		}
		out = append(out, t)
	}
	return out
}

// waypointOf is the name of the waypoint Gateway that owns pod p through
// the Deployment weft-control made for it, or false.
func (o Owners) waypointOf(p *corev1.Pod) (string, bool) {
	if o.Gateways == nil || o.ReplicaSets == nil || o.Deployments == nil {
		return "", false
	}
	rs, ok := controller(p, appsv1.GroupName, "ReplicaSet", o.ReplicaSets.ReplicaSets(p.Namespace).Get)
	if !ok {
		return "", false
	}
	dep, ok := controller(rs, appsv1.GroupName, "Deployment", o.Deployments.Deployments(p.Namespace).Get)
	if !ok {
		return "", false
	}
	gw, ok := controller(dep, gatewayv1.GroupName, "Gateway", o.Gateways.Gateways(p.Namespace).Get)
	if !ok || !deploy.IsWaypoint(gw) || dep.Name != gw.Name {
		return "", false
	}
	return gw.Name, true
}

// controller is the object that m's controller reference names, when the
// reference has the group and kind given and get finds an object of that
// name with the referenced UID (a reference to a deleted and recreated, or
// made-up, object does not count).
func controller[T metav1.Object](m metav1.Object, group, kind string, get func(name string) (T, error)) (T, bool) {
	var zero T
	ref := metav1.GetControllerOfNoCopy(m)
	if ref == nil || !refIs(ref, group, kind) {
		return zero, false
	}
	obj, err := get(ref.Name)
	if err != nil || obj.GetUID() != ref.UID {
		return zero, false
	}
	return obj, true
}

func controllerIs(m metav1.Object, group, kind string) bool {
	ref := metav1.GetControllerOfNoCopy(m)
	return ref != nil && refIs(ref, group, kind)
}

func refIs(ref *metav1.OwnerReference, group, kind string) bool {
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	return err == nil && gv.Group == group && ref.Kind == kind
}

// relevant are the metrics the graph uses; the rest of a scrape is dropped.
var relevant = map[string]bool{
	metricTCPOpened: true, metricTCPClosed: true, metricTCPSent: true, metricTCPReceived: true, metricRequests: true,
	metricDuration: true,
}

// ParseMetrics reads Prometheus text exposition and keeps the counters the
// graph uses, and the request duration histogram as one sample per bucket
// (metric istio_request_duration_milliseconds_bucket, label le, +Inf
// included) as Prometheus stores it.
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
			labels := make(map[string]string, len(m.GetLabel())+1)
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if f.GetType() == dto.MetricType_HISTOGRAM {
				out = appendBuckets(out, name, labels, m.GetHistogram())
				continue
			}
			if v, ok := value(f.GetType(), m); ok {
				out = append(out, Sample{Metric: name, Labels: labels, Value: v})
			}
		}
	}
	return out, nil
}

func appendBuckets(out []Sample, name string, labels map[string]string, h *dto.Histogram) []Sample {
	bucket := func(le float64, count uint64) Sample {
		l := maps.Clone(labels)
		l[model.BucketLabel] = strconv.FormatFloat(le, 'g', -1, 64)
		return Sample{Metric: name + "_bucket", Labels: l, Value: float64(count)}
	}
	for _, b := range h.GetBucket() {
		if !math.IsInf(b.GetUpperBound(), 1) {
			out = append(out, bucket(b.GetUpperBound(), b.GetCumulativeCount()))
		}
	}
	return append(out, bucket(math.Inf(1), h.GetSampleCount()))
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
