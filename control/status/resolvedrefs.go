package status

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/weft-mesh/weft/control/refgrant"
)

// routeResolvedRefs is an HTTPRoute's ResolvedRefs condition, as Gateway
// API defines it, from what the translation (control/waypoint
// httproute.go backend) accepts as a backend: a Service (InvalidKind
// otherwise) of the route's namespace, or of another namespace whose
// ReferenceGrants allow it (RefNotPermitted otherwise; control/refgrant),
// that exists (BackendNotFound otherwise). The backendRefs of the rules
// and of their RequestMirror filters are checked, in order; the first
// that does not resolve gives the reason. services holds
// "<namespace>/<name>" of every Service.
func routeResolvedRefs(hr *gatewayv1.HTTPRoute, services map[string]bool, grants []*gatewayv1beta1.ReferenceGrant) metav1.Condition {
	ok := metav1.Condition{Type: string(gatewayv1.RouteConditionResolvedRefs), Status: metav1.ConditionTrue,
		Reason: string(gatewayv1.RouteReasonResolvedRefs), Message: "every backendRef resolves"}
	check := func(path string, b gatewayv1.BackendObjectReference) *metav1.Condition {
		bad := func(reason gatewayv1.RouteConditionReason, format string, args ...any) *metav1.Condition {
			return &metav1.Condition{Type: string(gatewayv1.RouteConditionResolvedRefs), Status: metav1.ConditionFalse,
				Reason: string(reason), Message: path + ": " + fmt.Sprintf(format, args...)}
		}
		if b.Group != nil && *b.Group != "" || b.Kind != nil && *b.Kind != "Service" {
			return bad(gatewayv1.RouteReasonInvalidKind, "only Services are supported as backends")
		}
		ns := hr.Namespace
		if b.Namespace != nil && *b.Namespace != "" {
			ns = string(*b.Namespace)
		}
		if !refgrant.HTTPRouteBackend(grants, hr.Namespace, ns, string(b.Name)) {
			return bad(gatewayv1.RouteReasonRefNotPermitted, "Service %s/%s: no ReferenceGrant in namespace %s allows HTTPRoutes of namespace %s to reference it",
				ns, b.Name, ns, hr.Namespace)
		}
		if !services[ns+"/"+string(b.Name)] {
			return bad(gatewayv1.RouteReasonBackendNotFound, "Service %s/%s not found", ns, b.Name)
		}
		return nil
	}
	for i, r := range hr.Spec.Rules {
		for j, b := range r.BackendRefs {
			if c := check(fmt.Sprintf("spec.rules[%d].backendRefs[%d]", i, j), b.BackendObjectReference); c != nil {
				return *c
			}
		}
		for j, f := range r.Filters {
			if f.Type == gatewayv1.HTTPRouteFilterRequestMirror && f.RequestMirror != nil {
				if c := check(fmt.Sprintf("spec.rules[%d].filters[%d].requestMirror.backendRef", i, j), f.RequestMirror.BackendRef); c != nil {
					return *c
				}
			}
		}
	}
	return ok
}

// serviceSet indexes Services by "<namespace>/<name>".
func serviceSet(svcs []*corev1.Service) map[string]bool {
	out := make(map[string]bool, len(svcs))
	for _, s := range svcs {
		if s != nil {
			out[s.Namespace+"/"+s.Name] = true
		}
	}
	return out
}
