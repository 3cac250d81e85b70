package workload

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
)

// annotationTrafficDistribution is Istio's per-Service (or per-Namespace,
// inherited) spelling of spec.trafficDistribution, for clusters whose
// Kubernetes predates the field.
const annotationTrafficDistribution = "networking.istio.io/traffic-distribution"

// Locality preferences as istiod sends them to ztunnel
// (pilot/pkg/serviceregistry/ambient/services.go).
var (
	// preferSameZone: the client's network, then region, then zone.
	preferSameZone = []workloadv1.LoadBalancing_Scope{
		workloadv1.LoadBalancing_NETWORK, workloadv1.LoadBalancing_REGION, workloadv1.LoadBalancing_ZONE,
	}
	// preferSameNode: down to the subzone, then the node itself.
	preferSameNode = []workloadv1.LoadBalancing_Scope{
		workloadv1.LoadBalancing_NETWORK, workloadv1.LoadBalancing_REGION, workloadv1.LoadBalancing_ZONE,
		workloadv1.LoadBalancing_SUBZONE, workloadv1.LoadBalancing_NODE,
	}
	// nodeLocal: internalTrafficPolicy Local, endpoints on the client's node only.
	nodeLocal = []workloadv1.LoadBalancing_Scope{workloadv1.LoadBalancing_NODE}
)

func (t *translator) indexNodes(nodes []*corev1.Node) {
	for _, n := range nodes {
		if n != nil {
			t.nodes[n.Name] = n
		}
	}
}

// podLocality is the locality of the pod's node (its topology labels, as
// istiod's nodeLocality reads them), each field overridden by the same
// label on the pod when set. istiod ambient reads the node only; Weft
// keeps the pod labels it honoured before nodes were an input, so that a
// pod can still say which subzone it is in.
func (t *translator) podLocality(pod *corev1.Pod) *workloadv1.Locality {
	var nodeLabels map[string]string
	if n := t.nodes[pod.Spec.NodeName]; n != nil {
		nodeLabels = n.Labels
	}
	label := func(k string) string {
		if v := pod.Labels[k]; v != "" {
			return v
		}
		return nodeLabels[k]
	}
	region, zone, subzone := label(labelTopologyRegion), label(labelTopologyZone), label(labelTopologySubzone)
	if region == "" && zone == "" && subzone == "" {
		return nil
	}
	return &workloadv1.Locality{Region: region, Zone: zone, Subzone: subzone}
}

// serviceLocality maps a Service's locality settings the way istiod does:
// internalTrafficPolicy Local keeps traffic on the client's node (STRICT);
// otherwise spec.trafficDistribution, else the Service's
// networking.istio.io/traffic-distribution annotation, else its
// Namespace's, choose a FAILOVER preference. No preference: nil and
// UNSPECIFIED_LOCALITY_MODE.
func (t *translator) serviceLocality(svc *corev1.Service) ([]workloadv1.LoadBalancing_Scope, workloadv1.LoadBalancing_LocalityMode) {
	if p := svc.Spec.InternalTrafficPolicy; p != nil && *p == corev1.ServiceInternalTrafficPolicyLocal {
		return slices.Clone(nodeLocal), workloadv1.LoadBalancing_STRICT
	}
	if td := svc.Spec.TrafficDistribution; td != nil {
		if prefs, ok := trafficDistribution(*td, false); ok {
			return prefs, failoverIfAny(prefs)
		}
		t.problem("Service", svc.Namespace, svc.Name,
			"spec.trafficDistribution: unknown value %q (want PreferClose, PreferSameZone or PreferSameNode); ignored", *td)
	}
	// The annotation, the Service's own or else inherited from its
	// Namespace; an unknown value means no preference, as in istiod.
	v, kind, ns, name := svc.Annotations[annotationTrafficDistribution], "Service", svc.Namespace, svc.Name
	if nsObj := t.namespaces[svc.Namespace]; v == "" && nsObj != nil {
		v, kind, ns, name = nsObj.Annotations[annotationTrafficDistribution], "Namespace", "", svc.Namespace
	}
	if v == "" {
		return nil, workloadv1.LoadBalancing_UNSPECIFIED_LOCALITY_MODE
	}
	prefs, ok := trafficDistribution(v, true)
	if !ok {
		t.problem(kind, ns, name, "annotation %s: unknown value %q (want PreferClose, PreferSameZone or PreferSameNode); no locality preference",
			annotationTrafficDistribution, v)
	}
	return prefs, failoverIfAny(prefs)
}

// failoverIfAny is the mode of a trafficDistribution preference: FAILOVER,
// or none for no preference.
func failoverIfAny(prefs []workloadv1.LoadBalancing_Scope) workloadv1.LoadBalancing_LocalityMode {
	if len(prefs) == 0 {
		return workloadv1.LoadBalancing_UNSPECIFIED_LOCALITY_MODE
	}
	return workloadv1.LoadBalancing_FAILOVER
}

// trafficDistribution maps a trafficDistribution value to its scopes; ok
// is false for a value it does not know. PreferClose is PreferSameZone's
// original name. istiod compares the annotation without regard to case,
// the field exactly (the API server validates it).
func trafficDistribution(v string, anyCase bool) (prefs []workloadv1.LoadBalancing_Scope, ok bool) {
	is := func(name string) bool { return v == name || (anyCase && strings.EqualFold(v, name)) }
	switch {
	case is(corev1.ServiceTrafficDistributionPreferClose), is(corev1.ServiceTrafficDistributionPreferSameZone):
		return slices.Clone(preferSameZone), true
	case is(corev1.ServiceTrafficDistributionPreferSameNode):
		return slices.Clone(preferSameNode), true
	}
	return nil, false
}
