package workload

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
)

// A Service without a selector gets its endpoints from EndpointSlices that
// someone else writes (a user, an operator, a multi-cluster controller):
// kube-proxy routes to whatever they list, so the mesh must too. As in
// Istio ambient (endpointSlicesBuilder and the pod workloads' services from
// EndpointSlices):
//   - an endpoint naming a Pod (targetRef) adds the Service to that pod's
//     workload, which keeps the pod's identity, health and tunnel;
//   - any other endpoint becomes a workload of its own, uid
//     "<cluster>/discovery.k8s.io/EndpointSlice/<ns>/<slice>/<ip>", with
//     tunnel protocol NONE (plain TCP; a node agent prefers a mesh
//     workload at the same IP as its owner).
//
// Where Weft differs: an endpoint whose Pod is not a workload (a
// hostNetwork pod, or one that is gone) becomes an endpoint workload at
// the listed address, because that is where kube-proxy sends its traffic
// (Istio drops it); and a targetRef to a Pod in another namespace is
// refused (reported), so a slice cannot enlist another namespace's pod.
// Slices of Services with a selector are the endpoint controller's and add
// nothing: the selector already gives the pods.

// sliceEndpoint is one address an EndpointSlice lists for a Service.
type sliceEndpoint struct {
	slice   *discoveryv1.EndpointSlice
	service string // address name "<ns>/<hostname>"
	ports   *workloadv1.PortList
	ip      netip.Addr
	ready   bool
}

// translateEndpointSlices indexes the endpoints of Services without a
// selector: by pod for targetRefs (taken by podServices), as endpoint
// workloads for the rest.
func (t *translator) translateEndpointSlices(eps []*discoveryv1.EndpointSlice) {
	eps = slices.DeleteFunc(slices.Clone(eps), func(es *discoveryv1.EndpointSlice) bool { return es == nil })
	slices.SortFunc(eps, func(a, b *discoveryv1.EndpointSlice) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, es := range eps {
		ms := t.selectorlessServices[es.Namespace+"/"+es.Labels[discoveryv1.LabelServiceName]]
		if ms == nil || es.AddressType == discoveryv1.AddressTypeFQDN {
			continue // not a selectorless Service's slice; FQDN slices are deprecated
		}
		t.context.Put(es) // pods take their endpoints
		ports := slicePorts(ms, es.Ports)
		for _, ep := range es.Endpoints {
			t.addSliceEndpoint(es, ms, ports, ep)
		}
	}
}

func (t *translator) addSliceEndpoint(es *discoveryv1.EndpointSlice, ms *meshService, ports *workloadv1.PortList, ep discoveryv1.Endpoint) {
	if len(ep.Addresses) == 0 {
		return
	}
	// Kubernetes allows one address per endpoint (its other family is
	// in another slice).
	ip, err := usableIP(ep.Addresses[0])
	if err != nil {
		t.problem("EndpointSlice", es.Namespace, es.Name, "endpoint address: %v; ignored", err)
		return
	}
	se := sliceEndpoint{slice: es, service: ms.name, ports: ports, ip: ip,
		ready: ep.Conditions.Ready == nil || *ep.Conditions.Ready}
	ref := ep.TargetRef
	if ref == nil || ref.Kind != "Pod" {
		t.addSliceWorkload(se)
		return
	}
	if ref.Namespace != "" && ref.Namespace != es.Namespace {
		t.problem("EndpointSlice", es.Namespace, es.Name,
			"endpoint %s: targetRef names Pod %s/%s in another namespace; ignored", ip, ref.Namespace, ref.Name)
		return
	}
	pod := es.Namespace + "/" + ref.Name
	t.slicePods[pod] = append(t.slicePods[pod], se)
}

// slicePorts maps a slice's ports to the Service's: a slice port carries
// the Service port's name and the target port.
func slicePorts(ms *meshService, ports []discoveryv1.EndpointPort) *workloadv1.PortList {
	pl := &workloadv1.PortList{}
	for _, p := range ports {
		if p.Port == nil || *p.Port <= 0 || *p.Port > 65535 || p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			continue
		}
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		for _, sp := range ms.ports {
			if sp.Name == name {
				pl.Ports = append(pl.Ports, &workloadv1.Port{ServicePort: uint32(sp.Port), TargetPort: uint32(*p.Port)})
			}
		}
	}
	slices.SortFunc(pl.Ports, comparePorts)
	return pl
}

func comparePorts(a, b *workloadv1.Port) int {
	return cmp.Or(cmp.Compare(a.ServicePort, b.ServicePort), cmp.Compare(a.TargetPort, b.TargetPort))
}

// takeSlicePodServices returns the selectorless Services whose slices list
// the pod at one of its IPs, with their ports, and marks those endpoints
// as taken. An endpoint at another address is left to become an endpoint
// workload there, where kube-proxy would send its traffic.
func (t *translator) takeSlicePodServices(pod *corev1.Pod) map[string]*workloadv1.PortList {
	if len(t.slicePods) == 0 {
		return nil
	}
	key := pod.Namespace + "/" + pod.Name
	eps := t.slicePods[key]
	if len(eps) == 0 {
		return nil
	}
	ips := t.podIPs(pod)
	var out map[string]*workloadv1.PortList
	rest := eps[:0]
	for _, se := range eps {
		if !slices.Contains(ips, se.ip.String()) {
			rest = append(rest, se)
			continue
		}
		if out == nil {
			out = make(map[string]*workloadv1.PortList, len(eps))
		}
		pl := out[se.service]
		if pl == nil {
			pl = &workloadv1.PortList{}
			out[se.service] = pl
		}
		// The pod's IPv4 and IPv6 slices list the same ports.
		pl.Ports = append(pl.Ports, se.ports.Ports...)
		slices.SortFunc(pl.Ports, comparePorts)
		pl.Ports = slices.CompactFunc(pl.Ports, func(a, b *workloadv1.Port) bool { return comparePorts(a, b) == 0 })
	}
	t.slicePods[key] = rest
	return out
}

// translateUntakenSliceEndpoints makes endpoint workloads of the
// endpoints whose Pod did not become a workload; it runs after the pods.
func (t *translator) translateUntakenSliceEndpoints() {
	for _, pod := range slices.Sorted(maps.Keys(t.slicePods)) {
		for _, se := range t.slicePods[pod] {
			t.addSliceWorkload(se)
		}
	}
}

// addSliceWorkload adds the workload of an endpoint that is not a mesh
// pod.
func (t *translator) addSliceWorkload(se sliceEndpoint) {
	es := se.slice
	uid := t.cfg.ClusterID + "/discovery.k8s.io/EndpointSlice/" + es.Namespace + "/" + es.Name + "/" + se.ip.String()
	if _, dup := t.addresses[uid]; dup {
		return // the same address listed twice
	}
	w := &workloadv1.Workload{
		Uid: uid, Name: es.Name, Namespace: es.Namespace,
		Addresses:      []string{se.ip.String()},
		TunnelProtocol: workloadv1.TunnelProtocol_NONE,
		Services:       map[string]*workloadv1.PortList{se.service: se.ports},
		WorkloadName:   es.Name,
		WorkloadType:   "endpointslice",
		Status:         workloadv1.WorkloadStatus_HEALTHY,
		ClusterId:      t.cfg.ClusterID,
	}
	if !se.ready {
		w.Status = workloadv1.WorkloadStatus_UNHEALTHY
	}
	w.CanonicalName, w.CanonicalRevision = canonicalNameRevision(es.Labels, es.Labels[discoveryv1.LabelServiceName])
	t.addresses[uid] = &workloadv1.Address{Type: &workloadv1.Address_Workload{Workload: w}}
}
