package deploy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// Listener statuses (status.listeners[]) of the Gateways the controller
// owns: conditions Accepted, Programmed and ResolvedRefs, supportedKinds;
// for ingress Gateways also Conflicted (ListenerConflicts) and
// attachedRoutes (AttachedRoutes).
//
// A host two Gateways both route on one port of the same gateway pods is
// settled per route host by the translation, which this controller does
// not see (the translation reports it as a problem). attachedRoutes is 0
// for waypoints: routes bind to Services, not to their listener.

// listenerCondition is one condition of a listener status, before stamps.
type listenerCondition struct {
	status  metav1.ConditionStatus
	reason  gatewayv1.ListenerConditionReason
	message string
}

func listenerTrue(reason gatewayv1.ListenerConditionReason, msg string) listenerCondition {
	return listenerCondition{metav1.ConditionTrue, reason, msg}
}

func listenerFalse(reason gatewayv1.ListenerConditionReason, msg string) listenerCondition {
	return listenerCondition{metav1.ConditionFalse, reason, msg}
}

// listenerReport is what the status says of one listener. A conflicted
// condition without status is not written (waypoints).
type listenerReport struct {
	kinds                                          []gatewayv1.RouteGroupKind
	accepted, programmed, resolvedRefs, conflicted listenerCondition
}

// served reports whether the translation serves the listener: accepted,
// and not left out for an invalid reference (its Programmed is Invalid).
func (r listenerReport) served() bool {
	return r.accepted.status == metav1.ConditionTrue && r.programmed.reason != gatewayv1.ListenerReasonInvalid
}

// rejected reports a listener that is not served, for reason.
func rejected(reason gatewayv1.ListenerConditionReason, msg string, kinds []gatewayv1.RouteGroupKind, resolvedRefs listenerCondition) listenerReport {
	return listenerReport{kinds: kinds, accepted: listenerFalse(reason, msg),
		programmed: listenerFalse(gatewayv1.ListenerReasonInvalid, msg), resolvedRefs: resolvedRefs}
}

// httpRouteKind is the route kind an HTTP listener serves.
var httpRouteKind = gatewayv1.RouteGroupKind{Group: ptr.To(gatewayv1.Group(gatewayv1.GroupName)), Kind: "HTTPRoute"}

// routeKinds are the route kinds of served that listener l allows, and its
// ResolvedRefs condition: False with InvalidRouteKinds when
// allowedRoutes.kinds names a kind not in served, as the spec requires of
// supportedKinds.
func routeKinds(l *gatewayv1.Listener, served []gatewayv1.RouteGroupKind) ([]gatewayv1.RouteGroupKind, listenerCondition) {
	ok := listenerTrue(gatewayv1.ListenerReasonResolvedRefs, "route kinds resolved")
	if l.AllowedRoutes == nil || len(l.AllowedRoutes.Kinds) == 0 {
		return append([]gatewayv1.RouteGroupKind{}, served...), ok
	}
	kinds := []gatewayv1.RouteGroupKind{}
	var invalid []string
	for _, k := range l.AllowedRoutes.Kinds {
		if slices.ContainsFunc(served, func(s gatewayv1.RouteGroupKind) bool { return sameKind(s, k) }) {
			kinds = append(kinds, k)
		} else {
			invalid = append(invalid, kindString(k))
		}
	}
	if len(invalid) == 0 {
		return kinds, ok
	}
	var want []string
	for _, s := range served {
		want = append(want, kindString(s))
	}
	return kinds, listenerFalse(gatewayv1.ListenerReasonInvalidRouteKinds,
		fmt.Sprintf("allowedRoutes.kinds %s not supported on this listener (supported: %s)", strings.Join(invalid, ", "), listOrNone(want)))
}

func sameKind(a, b gatewayv1.RouteGroupKind) bool {
	group := func(k gatewayv1.RouteGroupKind) gatewayv1.Group {
		if k.Group == nil {
			return gatewayv1.GroupName
		}
		return *k.Group
	}
	return a.Kind == b.Kind && group(a) == group(b)
}

func kindString(k gatewayv1.RouteGroupKind) string {
	if k.Group == nil || *k.Group == gatewayv1.GroupName {
		return string(k.Kind)
	}
	return string(k.Kind) + "." + string(*k.Group)
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// ingressListener reports listener i of ingress Gateway gw as the
// translation (control/waypoint/gateway_api.go) serves it; programmed is
// the Programmed condition of a served listener, obs what the controller
// saw of the gateway pods, ReferenceGrants and Secrets.
func ingressListener(gw *gatewayv1.Gateway, i int, programmed listenerCondition, obs IngressObserved) listenerReport {
	l := &gw.Spec.Listeners[i]
	noConflict := listenerFalse(gatewayv1.ListenerReasonNoConflicts, "no conflicting listener")
	if !IngressProtocolSupported(l.Protocol) {
		// Nothing of the listener is read, its certificate references
		// included: whether they resolve is not known.
		r := rejected(gatewayv1.ListenerReasonUnsupportedProtocol, UnsupportedIngressProtocol(l.Protocol), []gatewayv1.RouteGroupKind{},
			listenerCondition{metav1.ConditionUnknown, gatewayv1.ListenerReasonUnsupportedProtocol, "listener ignored; its references are not resolved"})
		r.conflicted = noConflict
		return r
	}
	kinds, resolvedRefs := routeKinds(l, []gatewayv1.RouteGroupKind{httpRouteKind})
	if msg := ListenerConflicts(gw)[i]; msg != "" {
		r := rejected(gatewayv1.ListenerReasonPortUnavailable, msg, kinds, resolvedRefs)
		r.conflicted = listenerTrue(gatewayv1.ListenerReasonProtocolConflict, msg)
		return r
	}
	if ar := l.AllowedRoutes; ar != nil && ar.Namespaces != nil && ar.Namespaces.From != nil && *ar.Namespaces.From == gatewayv1.NamespacesFromSelector {
		if _, err := AllowedNamespaces(l); err != nil {
			// The translation still opens the port, with no route: requests get 404.
			r := rejected(gatewayv1.ListenerReasonUnsupportedValue, err.Error()+"; no routes attach", kinds, resolvedRefs)
			r.conflicted = noConflict
			return r
		}
	}
	r := listenerReport{kinds: kinds, resolvedRefs: resolvedRefs, conflicted: noConflict,
		accepted: listenerTrue(gatewayv1.ListenerReasonAccepted, string(l.Protocol)+" listener"), programmed: programmed}
	if l.Protocol == gatewayv1.HTTPSProtocolType {
		httpsListener(&r, gw, l, obs)
	}
	return r
}

// httpsListener completes report r of HTTPS listener l of gw with its
// certificate: unsupported TLS settings make it not accepted; a
// certificateRef that is not permitted (RefNotPermitted), not a Secret,
// or names a Secret the gateway cannot serve (missing, malformed, not in
// the namespaces the gateway pods read: InvalidCertificateRef) makes
// ResolvedRefs False, and the listener is not programmed (the
// translation leaves it out, or the gateway refuses its handshakes).
func httpsListener(r *listenerReport, gw *gatewayv1.Gateway, l *gatewayv1.Listener, obs IngressObserved) {
	ref, err := ListenerCredential(gw, l, obs.Grants)
	var le *ListenerError
	if err == nil {
		if serr := obs.Secrets[ref]; serr != nil {
			le = &ListenerError{gatewayv1.ListenerConditionResolvedRefs, gatewayv1.ListenerReasonInvalidCertificateRef, serr.Error()}
		}
	} else if !errors.As(err, &le) {
		le = &ListenerError{gatewayv1.ListenerConditionResolvedRefs, gatewayv1.ListenerReasonInvalidCertificateRef, err.Error()}
	}
	switch {
	case le == nil:
	case le.Condition == gatewayv1.ListenerConditionAccepted:
		conflicted := r.conflicted
		*r = rejected(le.Reason, le.Message, r.kinds, r.resolvedRefs)
		r.conflicted = conflicted
	default:
		r.resolvedRefs = listenerFalse(le.Reason, le.Message)
		r.programmed = listenerFalse(gatewayv1.ListenerReasonInvalid, le.Message)
	}
}

// ListenerConflicts says, by listener index, why a listener of ingress
// Gateway gw conflicts with another one ("": it does not): HTTP and HTTPS
// listeners on one port (one is plain text, the other TLS; the gateway
// cannot tell them apart). The translation leaves these out and the
// status reports them Conflicted (ProtocolConflict), both asking here.
// Listeners of protocols Weft does not serve are not considered. Two
// listeners with the same port, protocol and hostname cannot exist (the
// CRD's validation), so there is no hostname conflict within a Gateway.
func ListenerConflicts(gw *gatewayv1.Gateway) map[int]string {
	protocols := map[gatewayv1.PortNumber]map[gatewayv1.ProtocolType]bool{}
	for _, l := range gw.Spec.Listeners {
		if IngressProtocolSupported(l.Protocol) {
			if protocols[l.Port] == nil {
				protocols[l.Port] = map[gatewayv1.ProtocolType]bool{}
			}
			protocols[l.Port][l.Protocol] = true
		}
	}
	out := map[int]string{}
	for i, l := range gw.Spec.Listeners {
		if IngressProtocolSupported(l.Protocol) && len(protocols[l.Port]) > 1 {
			out[i] = fmt.Sprintf("port %d has both HTTP and HTTPS listeners; neither is served on it", l.Port)
		}
	}
	return out
}

// waypointListener reports listener l of a waypoint Gateway whose
// validation is v; programmed is the Programmed condition of a served
// listener. An HBONE listener serves no route kind: routes bind to the
// Services a waypoint serves (GAMMA), and Istio lists none either.
func waypointListener(l *gatewayv1.Listener, v Validation, programmed listenerCondition) listenerReport {
	kinds, resolvedRefs := routeKinds(l, nil)
	switch {
	case l.Protocol != HBONE:
		return rejected(gatewayv1.ListenerReasonUnsupportedProtocol,
			fmt.Sprintf("protocol %s is not supported; a waypoint listens with protocol %s only", l.Protocol, HBONE), kinds, resolvedRefs)
	case l.Port != mesh.HBONEPort:
		return rejected(gatewayv1.ListenerReasonPortUnavailable,
			fmt.Sprintf("port %d is not supported; a waypoint listens on port %d only", l.Port, mesh.HBONEPort), kinds, resolvedRefs)
	case !v.Accepted:
		return rejected(gatewayv1.ListenerReasonInvalid, "the Gateway is not accepted: "+v.Message, kinds, resolvedRefs)
	}
	return listenerReport{kinds: kinds, resolvedRefs: resolvedRefs,
		accepted: listenerTrue(gatewayv1.ListenerReasonAccepted, "waypoint HBONE listener"), programmed: programmed}
}

// listenerProgrammed is a served listener's Programmed condition given
// its Gateway's: the listener is ready when the Gateway is.
func listenerProgrammed(gateway *metav1.Condition) listenerCondition {
	if gateway != nil && gateway.Status == metav1.ConditionTrue {
		return listenerTrue(gatewayv1.ListenerReasonProgrammed, gateway.Message)
	}
	msg := "waiting for the Gateway"
	if gateway != nil {
		msg = gateway.Message
	}
	return listenerFalse(gatewayv1.ListenerReasonPending, msg)
}

// setListeners writes the status of every listener of gw into st, one per
// listener in spec order, from reports (same order). Conditions of other
// types already on a listener are kept; so are the transition times of
// those that do not change.
func setListeners(st *gatewayv1.GatewayStatus, gw *gatewayv1.Gateway, reports []listenerReport, now time.Time) {
	prev := st.Listeners
	st.Listeners = make([]gatewayv1.ListenerStatus, 0, len(reports))
	for i, r := range reports {
		name := gw.Spec.Listeners[i].Name
		ls := gatewayv1.ListenerStatus{Name: name, SupportedKinds: r.kinds}
		if j := slices.IndexFunc(prev, func(p gatewayv1.ListenerStatus) bool { return p.Name == name }); j >= 0 {
			ls.Conditions = slices.Clone(prev[j].Conditions)
		}
		set := func(typ gatewayv1.ListenerConditionType, c listenerCondition) {
			meta.SetStatusCondition(&ls.Conditions, metav1.Condition{Type: string(typ), Status: c.status, Reason: string(c.reason),
				Message: c.message, ObservedGeneration: gw.Generation, LastTransitionTime: metav1.NewTime(now)})
		}
		set(gatewayv1.ListenerConditionAccepted, r.accepted)
		set(gatewayv1.ListenerConditionProgrammed, r.programmed)
		set(gatewayv1.ListenerConditionResolvedRefs, r.resolvedRefs)
		if r.conflicted.status != "" {
			set(gatewayv1.ListenerConditionConflicted, r.conflicted)
		}
		st.Listeners = append(st.Listeners, ls)
	}
}

// notServed names the listeners reports does not serve (listenerReport
// served), and says why ("name (why)"), for the Gateway's conditions.
func notServed(gw *gatewayv1.Gateway, reports []listenerReport) (names, why []string) {
	for i, r := range reports {
		if !r.served() {
			name := string(gw.Spec.Listeners[i].Name)
			msg := r.accepted.message
			if r.accepted.status == metav1.ConditionTrue {
				msg = r.programmed.message
			}
			names = append(names, name)
			why = append(why, fmt.Sprintf("%s (%s)", name, msg))
		}
	}
	return names, why
}

// AllowedNamespaces is the namespace selector of listener l, whose
// allowedRoutes.namespaces.from is Selector: the routes of the namespaces
// it selects attach. The translation and the listener status both ask
// here, so they cannot disagree on a bad selector.
func AllowedNamespaces(l *gatewayv1.Listener) (labels.Selector, error) {
	var ls *metav1.LabelSelector
	if ar := l.AllowedRoutes; ar != nil && ar.Namespaces != nil {
		ls = ar.Namespaces.Selector
	}
	if ls == nil {
		return nil, fmt.Errorf("allowedRoutes.namespaces.selector: required when from is Selector")
	}
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return nil, fmt.Errorf("allowedRoutes.namespaces.selector: %w", err)
	}
	return sel, nil
}
