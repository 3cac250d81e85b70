package workload

import (
	"cmp"
	"slices"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// meshService is a translated Service, kept for the pods it selects.
type meshService struct {
	name     string // resource name "<ns>/<hostname>"
	selector map[string]string
	ports    []corev1.ServicePort // TCP ports only, sorted by port
}

// translateServices emits one Service address per Service, as Istio's
// ambient Service collection does. A headless Service (clusterIP None) has
// no VIP: node agents have nothing to capture for it (clients dial its
// endpoints' IPs), but gateways and waypoints route to it by name.
// Skipped: ExternalName Services (their traffic is to an external name)
// and a Service whose ClusterIP is not allocated yet, until it is. The
// endpoints of a Service without a selector come from its EndpointSlices
// (endpointslices.go).
func (t *translator) translateServices(svcs []*corev1.Service) {
	for _, svc := range svcs {
		if svc == nil || svc.Spec.Type == corev1.ServiceTypeExternalName || svc.Spec.ClusterIP == "" {
			continue
		}
		hostname := svc.Name + "." + svc.Namespace + ".svc." + t.cfg.DomainSuffix
		ms := &meshService{
			name:     key(svc.Namespace, hostname),
			selector: svc.Spec.Selector,
			ports:    tcpPorts(svc.Spec.Ports),
		}
		out := &workloadv1.Service{
			Name:          svc.Name,
			Namespace:     svc.Namespace,
			Hostname:      hostname,
			Addresses:     t.serviceVIPs(svc),
			Ports:         make([]*workloadv1.Port, 0, len(ms.ports)),
			Waypoint:      t.serviceWaypoint(svc),
			LoadBalancing: t.loadBalancing(svc),
		}
		for _, p := range ms.ports {
			// A named target port is resolved per workload (0 here).
			out.Ports = append(out.Ports, &workloadv1.Port{
				ServicePort: uint32(p.Port),
				TargetPort:  uint32(max(p.TargetPort.IntVal, 0)),
			})
		}
		t.addresses[ms.name] = &workloadv1.Address{Type: &workloadv1.Address_Service{Service: out}}
		if len(ms.selector) > 0 {
			t.selectingServices[svc.Namespace] = append(t.selectingServices[svc.Namespace], ms)
		} else {
			t.selectorlessServices[svc.Namespace+"/"+svc.Name] = ms
		}
	}
	for _, list := range t.selectingServices {
		slices.SortFunc(list, func(a, b *meshService) int { return cmp.Compare(a.name, b.name) })
	}
}

// tcpPorts keeps the TCP ports (the node tunnel carries TCP only), sorted by
// port number and without duplicates.
func tcpPorts(ports []corev1.ServicePort) []corev1.ServicePort {
	out := make([]corev1.ServicePort, 0, len(ports))
	for _, p := range ports {
		if (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) && p.Port > 0 && p.Port <= 65535 {
			out = append(out, p)
		}
	}
	slices.SortStableFunc(out, func(a, b corev1.ServicePort) int { return cmp.Compare(a.Port, b.Port) })
	return slices.CompactFunc(out, func(a, b corev1.ServicePort) bool { return a.Port == b.Port })
}

// serviceVIPs returns the Service's cluster IPs in canonical form, none
// for a headless Service.
func (t *translator) serviceVIPs(svc *corev1.Service) []string {
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return nil
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 {
		ips = []string{svc.Spec.ClusterIP}
	}
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		addr, err := usableIP(ip)
		if err != nil {
			t.problem("Service", svc.Namespace, svc.Name, "spec.clusterIPs: %v; ignored", err)
			continue
		}
		out = append(out, addr.String())
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// loadBalancing combines the Service's balancing algorithm (Weft's
// annotation) with its locality preference (serviceLocality); nil when
// both are the defaults.
func (t *translator) loadBalancing(svc *corev1.Service) *workloadv1.LoadBalancing {
	lb := &workloadv1.LoadBalancing{}
	switch v := svc.Annotations[annotationLoadBalancing]; v {
	case "", "round-robin":
		// ROUND_ROBIN is the default
	case "least-request":
		lb.Mode = workloadv1.LoadBalancing_LEAST_REQUEST
	default:
		t.problem("Service", svc.Namespace, svc.Name,
			"annotation %s: unknown value %q (want round-robin or least-request); using round-robin", annotationLoadBalancing, v)
	}
	lb.RoutingPreference, lb.LocalityMode = t.serviceLocality(svc)
	if lb.Mode == workloadv1.LoadBalancing_ROUND_ROBIN && lb.LocalityMode == workloadv1.LoadBalancing_UNSPECIFIED_LOCALITY_MODE {
		return nil
	}
	return lb
}

// podServices returns the Services of the pod's namespace that select it,
// with the ports the pod serves each one on, and the Services without a
// selector whose EndpointSlices list it.
func (t *translator) podServices(pod *corev1.Pod) map[string]*workloadv1.PortList {
	out := t.takeSlicePodServices(pod)
	for _, ms := range t.selectingServices[pod.Namespace] {
		if !selects(ms.selector, pod.Labels) {
			continue
		}
		pl := &workloadv1.PortList{Ports: make([]*workloadv1.Port, 0, len(ms.ports))}
		for _, p := range ms.ports {
			target, ok := resolveTargetPort(pod, p)
			if !ok {
				// As in Istio: the pod does not serve this port.
				continue
			}
			pl.Ports = append(pl.Ports, &workloadv1.Port{ServicePort: uint32(p.Port), TargetPort: target})
		}
		if out == nil {
			out = make(map[string]*workloadv1.PortList)
		}
		out[ms.name] = pl
	}
	return out
}

// resolveTargetPort returns the pod port that serves a Service port: a
// numeric targetPort as is (unset means the service port, Kubernetes'
// default), a named one from the pod's TCP container ports (the first
// container port with that name wins, as in kube-proxy). ok is false when
// the pod has no port of that name.
func resolveTargetPort(pod *corev1.Pod, p corev1.ServicePort) (port uint32, ok bool) {
	if p.TargetPort.Type == intstr.String && p.TargetPort.StrVal != "" {
		for i := range pod.Spec.Containers {
			for _, cp := range pod.Spec.Containers[i].Ports {
				if cp.Name == p.TargetPort.StrVal && (cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP) {
					return uint32(cp.ContainerPort), true
				}
			}
		}
		return 0, false
	}
	if p.TargetPort.IntVal > 0 {
		return uint32(p.TargetPort.IntVal), true
	}
	return uint32(p.Port), true
}
