package hbone

import "strings"

// Baggage is the source workload's metadata an HBONE client sends in the
// CONNECT's Baggage header, as ztunnel does, in OpenTelemetry resource
// attribute names: "k8s.namespace.name=default,k8s.deployment.name=
// productpage-v1,service.name=productpage,service.version=v1". The
// destination labels its telemetry with it; it is a claim of the client,
// not an authenticated identity.
type Baggage struct {
	Namespace string // k8s.namespace.name
	// WorkloadType and Workload form k8s.<WorkloadType>.name=<Workload>
	// (WorkloadType "" is "pod" when encoding).
	WorkloadType, Workload string
	Service                string // service.name (also app.name)
	Version                string // service.version (also app.version)
	Cluster                string // k8s.cluster.name
}

// String encodes b for the Baggage header: cluster, namespace, workload,
// service and version, each only when set.
func (b Baggage) String() string {
	var s strings.Builder
	add := func(k, v string) {
		if v == "" {
			return
		}
		if s.Len() > 0 {
			s.WriteByte(',')
		}
		s.WriteString(k + "=" + v)
	}
	typ := b.WorkloadType
	if typ == "" {
		typ = "pod"
	}
	add("k8s.cluster.name", b.Cluster)
	add("k8s.namespace.name", b.Namespace)
	add("k8s."+typ+".name", b.Workload)
	add("service.name", b.Service)
	add("service.version", b.Version)
	return s.String()
}

// ParseBaggage reads a Baggage header (from a node agent, a gateway or
// ztunnel). Members it does not know are skipped and member properties
// (";...") dropped; the workload is the first k8s.<type>.name other than
// k8s.cluster.name and k8s.node.name, the other fields the last value seen.
func ParseBaggage(h string) Baggage {
	var b Baggage
	for _, kv := range strings.Split(h, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			continue
		}
		v, _, _ = strings.Cut(v, ";")
		switch {
		case k == "k8s.namespace.name":
			b.Namespace = v
		case k == "k8s.cluster.name":
			b.Cluster = v
		case k == "service.name" || k == "app.name":
			b.Service = v
		case k == "service.version" || k == "app.version":
			b.Version = v
		case strings.HasPrefix(k, "k8s.") && strings.HasSuffix(k, ".name") && k != "k8s.cluster.name" && k != "k8s.node.name" && b.Workload == "":
			b.WorkloadType, b.Workload = strings.TrimSuffix(strings.TrimPrefix(k, "k8s."), ".name"), v
		}
	}
	return b
}
