package workload

import (
	"fmt"
	"strings"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/pkg/mesh"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// waypoint is a Gateway of class weft-waypoint.
type waypoint struct {
	namespace, name string
	forServices     bool
	forWorkloads    bool
	// Which namespaces may use it: the HBONE listener's allowedRoutes, as in
	// Istio (no HBONE listener or no allowedRoutes: the same namespace only).
	from     gatewayv1.FromNamespaces
	selector labels.Selector
}

// address is where node agents send traffic for the waypoint: its Service,
// named like the Gateway, which the waypoint controller creates. Weft does
// not wait for the Gateway's status addresses as Istio does: the name is
// known up front and a missing Service only delays traffic, while dropping
// the waypoint would let traffic bypass its L7 policy.
func (w *waypoint) address(domainSuffix string) *workloadv1.GatewayAddress {
	return &workloadv1.GatewayAddress{
		Destination: &workloadv1.GatewayAddress_Hostname{
			Hostname: w.namespace + "/" + w.name + "." + w.namespace + ".svc." + domainSuffix,
		},
		HboneMtlsPort: mesh.HBONEPort,
	}
}

// WaypointNamespaces are, by waypoint Gateway ("<namespace>/<name>"), the
// namespaces of the workloads and services the translation sent through
// it (addrs is an Output's Addresses): whose traffic the waypoint may
// speak about.
func WaypointNamespaces(addrs map[string]*workloadv1.Address) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	add := func(gw *workloadv1.GatewayAddress, ns string) {
		// The hostname address makes: "<ns>/<name>.<ns>.svc.<suffix>".
		wp, _, ok := strings.Cut(gw.GetHostname(), ".")
		if !ok || ns == "" {
			return
		}
		if out[wp] == nil {
			out[wp] = map[string]bool{}
		}
		out[wp][ns] = true
	}
	for _, a := range addrs {
		if w := a.GetWorkload(); w != nil {
			add(w.GetWaypoint(), w.GetNamespace())
		}
		if s := a.GetService(); s != nil {
			add(s.GetWaypoint(), s.GetNamespace())
		}
	}
	return out
}

func (t *translator) indexWaypoints(gws []*gatewayv1.Gateway) {
	for _, gw := range gws {
		if gw == nil || !IsWaypointClass(string(gw.Spec.GatewayClassName)) {
			continue
		}
		w := &waypoint{namespace: gw.Namespace, name: gw.Name, from: gatewayv1.NamespacesFromSame}
		switch v := gw.Labels[labelWaypointFor]; v {
		case "", "service":
			w.forServices = true
		case "workload":
			w.forWorkloads = true
		case "all":
			w.forServices, w.forWorkloads = true, true
		case "none":
		default:
			t.problem("Gateway", gw.Namespace, gw.Name,
				"label %s: unknown value %q (want service, workload, all or none); the waypoint serves nothing", labelWaypointFor, v)
		}
		t.setAllowedRoutes(w, gw)
		t.waypoints[key(gw.Namespace, gw.Name)] = w
	}
}

func (t *translator) setAllowedRoutes(w *waypoint, gw *gatewayv1.Gateway) {
	for _, l := range gw.Spec.Listeners {
		if l.Protocol != mesh.HBONEProtocol || l.Port != mesh.HBONEPort {
			continue
		}
		if l.AllowedRoutes == nil || l.AllowedRoutes.Namespaces == nil || l.AllowedRoutes.Namespaces.From == nil {
			return
		}
		w.from = *l.AllowedRoutes.Namespaces.From
		if w.from == gatewayv1.NamespacesFromSelector {
			sel, err := metav1.LabelSelectorAsSelector(l.AllowedRoutes.Namespaces.Selector)
			if err != nil {
				t.problem("Gateway", gw.Namespace, gw.Name,
					"listener %s: allowedRoutes.namespaces.selector: %v; only the same namespace may use the waypoint", l.Name, err)
				w.from = gatewayv1.NamespacesFromSame
				return
			}
			w.selector = sel
		}
		return
	}
}

// allows reports whether objects in namespace ns may use the waypoint.
func (w *waypoint) allows(ns string, nsLabels map[string]string) bool {
	switch w.from {
	case gatewayv1.NamespacesFromAll:
		return true
	case gatewayv1.NamespacesFromSelector:
		return w.selector != nil && w.selector.Matches(labels.Set(nsLabels))
	default:
		return w.namespace == ns
	}
}

// useWaypoint reads istio.io/use-waypoint from a label set. none is true for
// the explicit opt-out value "none" (Istio reserves that name).
func useWaypoint(lbls map[string]string, defaultNamespace string) (ref string, none, ok bool) {
	name, ok := lbls[labelUseWaypoint]
	if !ok || name == "" {
		return "", false, false
	}
	if name == "none" {
		return "", true, true
	}
	ns := defaultNamespace
	if v := lbls[labelUseWaypointNamespace]; v != "" {
		ns = v
	}
	return key(ns, name), false, true
}

// serviceWaypoint returns the waypoint for a Service, nil for none. A
// waypoint's own Service never uses a waypoint.
func (t *translator) serviceWaypoint(svc *corev1.Service) *workloadv1.GatewayAddress {
	if t.waypoints[key(svc.Namespace, svc.Name)] != nil || svc.Labels[labelGatewayName] != "" {
		return nil
	}
	return t.waypointFor("Service", &svc.ObjectMeta, true)
}

// workloadWaypoint returns the waypoint for a pod, nil for none. A waypoint's
// own pods never use a waypoint.
func (t *translator) workloadWaypoint(pod *corev1.Pod) *workloadv1.GatewayAddress {
	if pod.Labels[labelGatewayName] != "" {
		return nil
	}
	return t.waypointFor("Pod", &pod.ObjectMeta, false)
}

// waypointFor resolves istio.io/use-waypoint as Istio does
// (fetchWaypointForTarget): the object's own label wins over its
// namespace's, "none" on the object opts out, and a label naming a missing
// or unusable waypoint gives no waypoint at all (no fallback to the
// namespace's: don't guess) plus a Problem on the labelled object. A
// waypoint-for mismatch is only a Problem when the object asked for that
// waypoint itself; inheriting a service-only namespace waypoint is the normal
// case for pods.
func (t *translator) waypointFor(kind string, meta *metav1.ObjectMeta, forService bool) *workloadv1.GatewayAddress {
	var w *waypoint
	if ref, none, ok := useWaypoint(meta.Labels, meta.Namespace); ok {
		if none {
			return nil
		}
		w = t.resolveWaypoint(ref, meta.Namespace, kind, meta.Namespace, meta.Name)
		if w != nil && !w.serves(forService) {
			t.problem(kind, meta.Namespace, meta.Name, "label %s: waypoint %s is not for %s (%s); no waypoint is used",
				labelUseWaypoint, key(w.namespace, w.name), trafficName(forService), waypointForValue(w))
			return nil
		}
	} else {
		w = t.namespaceWaypoint(meta.Namespace)
	}
	if w == nil || !w.serves(forService) {
		return nil
	}
	return w.address(t.cfg.DomainSuffix)
}

// namespaceWaypoint is the waypoint a namespace's label names, resolved once
// per namespace.
func (t *translator) namespaceWaypoint(ns string) *waypoint {
	if w, ok := t.nsWaypoints[ns]; ok {
		return w
	}
	var w *waypoint
	if ref, none, ok := useWaypoint(t.namespaceLabels(ns), ns); ok && !none {
		w = t.resolveWaypoint(ref, ns, "Namespace", "", ns)
	}
	t.nsWaypoints[ns] = w
	return w
}

// resolveWaypoint returns the waypoint ref ("<ns>/<name>") if it exists and
// accepts objects of namespace ns; otherwise nil and a Problem on the
// labelled object.
func (t *translator) resolveWaypoint(ref, ns, kind, objNS, objName string) *waypoint {
	w := t.waypoints[ref]
	if w == nil {
		t.problem(kind, objNS, objName, "label %s: waypoint %s does not exist (no Gateway of class %s); no waypoint is used",
			labelUseWaypoint, ref, WaypointGatewayClass)
		return nil
	}
	if !w.allows(ns, t.namespaceLabels(ns)) {
		t.problem(kind, objNS, objName, "label %s: waypoint %s does not allow namespace %s (HBONE listener allowedRoutes); no waypoint is used",
			labelUseWaypoint, ref, ns)
		return nil
	}
	return w
}

func (w *waypoint) serves(forService bool) bool {
	if forService {
		return w.forServices
	}
	return w.forWorkloads
}

func trafficName(forService bool) string {
	if forService {
		return "services"
	}
	return "workloads"
}

func waypointForValue(w *waypoint) string {
	v := "none"
	switch {
	case w.forServices && w.forWorkloads:
		v = "all"
	case w.forServices:
		v = "service"
	case w.forWorkloads:
		v = "workload"
	}
	return fmt.Sprintf("%s=%s", labelWaypointFor, v)
}
