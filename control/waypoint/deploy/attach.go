package deploy

import (
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// RouteAttaches reports whether HTTPRoute hr attaches to listener l of
// ingress Gateway gw: one of its parentRefs names gw (and l, when it gives
// a sectionName or port), l's allowedRoutes admit hr's namespace (nsLabels
// are that namespace's labels, for a Selector; a listener whose selector
// is missing or invalid admits none), and hr's hostnames intersect l's
// hostname. The translation (control/waypoint) serves exactly these
// routes on l and the listener status counts them (attachedRoutes), so
// the two cannot disagree.
func RouteAttaches(gw *gatewayv1.Gateway, l *gatewayv1.Listener, hr *gatewayv1.HTTPRoute, nsLabels labels.Set) bool {
	from := gatewayv1.NamespacesFromSame
	if ar := l.AllowedRoutes; ar != nil && ar.Namespaces != nil && ar.Namespaces.From != nil {
		from = *ar.Namespaces.From
	}
	switch from {
	case gatewayv1.NamespacesFromSame:
		if hr.Namespace != gw.Namespace {
			return false
		}
	case gatewayv1.NamespacesFromSelector:
		sel, err := AllowedNamespaces(l)
		if err != nil || !sel.Matches(nsLabels) {
			return false
		}
	}
	if !hostnamesIntersect(l.Hostname, hr.Spec.Hostnames) {
		return false
	}
	for _, pr := range hr.Spec.ParentRefs {
		if pr.Group != nil && *pr.Group != gatewayv1.GroupName || pr.Kind != nil && *pr.Kind != "Gateway" ||
			string(pr.Name) != gw.Name || pr.Namespace != nil && string(*pr.Namespace) != gw.Namespace ||
			pr.Namespace == nil && hr.Namespace != gw.Namespace ||
			pr.SectionName != nil && *pr.SectionName != l.Name || pr.Port != nil && *pr.Port != l.Port {
			continue
		}
		return true
	}
	return false
}

// hostnamesIntersect: a listener without hostname accepts every route, a
// route without hostnames every listener; otherwise one route hostname and
// the listener's must match, either one a wildcard covering the other.
func hostnamesIntersect(listener *gatewayv1.Hostname, route []gatewayv1.Hostname) bool {
	if listener == nil || *listener == "" || len(route) == 0 {
		return true
	}
	lh := strings.ToLower(string(*listener))
	for _, h := range route {
		rh := strings.ToLower(string(h))
		if hostCovers(lh, rh) || hostCovers(rh, lh) {
			return true
		}
	}
	return false
}

// hostCovers: host equals pattern, or pattern is "*.<suffix>" and host
// ends in ".<suffix>" (a wildcard matches one or more labels).
func hostCovers(pattern, host string) bool {
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return strings.HasSuffix(host, suffix) && len(host) > len(suffix)
	}
	return pattern == host
}

// AttachedRoutes counts, per listener of ingress Gateway gw, the routes
// that attach to it (RouteAttaches); a listener the status does not
// accept (accepted[i] false) has none. nsLabels are the namespaces'
// labels by name.
func AttachedRoutes(gw *gatewayv1.Gateway, accepted []bool, routes []*gatewayv1.HTTPRoute, nsLabels map[string]labels.Set) []int32 {
	out := make([]int32, len(gw.Spec.Listeners))
	for i := range gw.Spec.Listeners {
		if i >= len(accepted) || !accepted[i] {
			continue
		}
		for _, hr := range routes {
			if hr != nil && RouteAttaches(gw, &gw.Spec.Listeners[i], hr, nsLabels[hr.Namespace]) {
				out[i]++
			}
		}
	}
	return out
}
