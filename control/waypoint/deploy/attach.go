package deploy

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Attachment is what one parentRef of an HTTPRoute gets from an ingress
// Gateway: the listeners (indexes) it attaches to, or, when none, the
// Gateway API reason of its Accepted=False condition and why.
type Attachment struct {
	Listeners []int
	Reason    gatewayv1.RouteConditionReason
	Message   string
}

// NamesGateway reports whether parentRef pr of a route in namespace ns
// names Gateway gw (group, kind, namespace and name; not the listener).
func NamesGateway(gw *gatewayv1.Gateway, ns string, pr gatewayv1.ParentReference) bool {
	if pr.Namespace != nil {
		ns = string(*pr.Namespace)
	}
	return (pr.Group == nil || *pr.Group == gatewayv1.GroupName) && (pr.Kind == nil || *pr.Kind == "Gateway") &&
		string(pr.Name) == gw.Name && ns == gw.Namespace
}

// ParentAttachment is the attachment of parentRef pr of HTTPRoute hr to
// ingress Gateway gw, which pr names (NamesGateway), as the Gateway API
// route status defines it, narrowing down the listeners in order:
//   - those pr selects (sectionName, port); none: NoMatchingParent;
//   - whose allowedRoutes admit hr (namespaces: nsLabels are the labels of
//     hr's namespace, for a Selector, and a listener whose selector is
//     missing or invalid admits none; kinds: HTTPRoute, on a listener
//     whose protocol serves it, HTTP or HTTPS); none: NotAllowedByListeners;
//   - whose hostname intersects hr's hostnames; none:
//     NoMatchingListenerHostname.
//
// Whether a listener is valid does not matter (the spec's attachment is
// parentRefs and allowedRoutes only).
func ParentAttachment(gw *gatewayv1.Gateway, hr *gatewayv1.HTTPRoute, pr gatewayv1.ParentReference, nsLabels labels.Set) Attachment {
	var selected, allowed, out []int
	for i := range gw.Spec.Listeners {
		l := &gw.Spec.Listeners[i]
		if (pr.SectionName == nil || *pr.SectionName == l.Name) && (pr.Port == nil || *pr.Port == l.Port) {
			selected = append(selected, i)
		}
	}
	if len(selected) == 0 {
		return Attachment{Reason: gatewayv1.RouteReasonNoMatchingParent, Message: "no listener of Gateway " + gw.Namespace + "/" + gw.Name + " matches " + refSection(pr)}
	}
	for _, i := range selected {
		if admits(gw, &gw.Spec.Listeners[i], hr.Namespace, nsLabels) {
			allowed = append(allowed, i)
		}
	}
	if len(allowed) == 0 {
		return Attachment{Reason: gatewayv1.RouteReasonNotAllowedByListeners,
			Message: fmt.Sprintf("the allowedRoutes of the listeners matching %s do not admit HTTPRoutes of namespace %s", refSection(pr), hr.Namespace)}
	}
	for _, i := range allowed {
		if hostnamesIntersect(gw.Spec.Listeners[i].Hostname, hr.Spec.Hostnames) {
			out = append(out, i)
		}
	}
	if len(out) == 0 {
		return Attachment{Reason: gatewayv1.RouteReasonNoMatchingListenerHostname,
			Message: "no hostname of the route intersects the hostname of a listener matching " + refSection(pr)}
	}
	return Attachment{Listeners: out, Reason: gatewayv1.RouteReasonAccepted}
}

// refSection describes the listeners a parentRef selects, for messages.
func refSection(pr gatewayv1.ParentReference) string {
	var parts []string
	if pr.SectionName != nil {
		parts = append(parts, fmt.Sprintf("sectionName %q", *pr.SectionName))
	}
	if pr.Port != nil {
		parts = append(parts, fmt.Sprintf("port %d", *pr.Port))
	}
	if len(parts) == 0 {
		return "the parentRef"
	}
	return strings.Join(parts, " and ")
}

// admits reports whether listener l of gw admits HTTPRoutes of namespace
// ns (labels nsLabels) by its allowedRoutes and protocol.
func admits(gw *gatewayv1.Gateway, l *gatewayv1.Listener, ns string, nsLabels labels.Set) bool {
	if l.Protocol != gatewayv1.HTTPProtocolType && l.Protocol != gatewayv1.HTTPSProtocolType {
		return false
	}
	if ar := l.AllowedRoutes; ar != nil && len(ar.Kinds) > 0 {
		ok := false
		for _, k := range ar.Kinds {
			ok = ok || sameKind(k, httpRouteKind)
		}
		if !ok {
			return false
		}
	}
	from := gatewayv1.NamespacesFromSame
	if ar := l.AllowedRoutes; ar != nil && ar.Namespaces != nil && ar.Namespaces.From != nil {
		from = *ar.Namespaces.From
	}
	switch from {
	case gatewayv1.NamespacesFromSame:
		return ns == gw.Namespace
	case gatewayv1.NamespacesFromSelector:
		sel, err := AllowedNamespaces(l)
		return err == nil && sel.Matches(nsLabels)
	case gatewayv1.NamespacesFromAll:
		return true
	}
	return false // None, or a value this version does not know
}

// RouteAttaches reports whether HTTPRoute hr attaches to listener l (index
// i) of ingress Gateway gw through one of its parentRefs
// (ParentAttachment; nsLabels are the labels of hr's namespace). The
// translation (control/waypoint) serves exactly these routes on l, the
// listener status counts them (attachedRoutes) and the route status
// reports them (control/status), so the three cannot disagree.
func RouteAttaches(gw *gatewayv1.Gateway, i int, hr *gatewayv1.HTTPRoute, nsLabels labels.Set) bool {
	for _, pr := range hr.Spec.ParentRefs {
		if NamesGateway(gw, hr.Namespace, pr) && slices.Contains(ParentAttachment(gw, hr, pr, nsLabels).Listeners, i) {
			return true
		}
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
			if hr != nil && RouteAttaches(gw, i, hr, nsLabels[hr.Namespace]) {
				out[i]++
			}
		}
	}
	return out
}
