package status

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/control/unsupported"
	"github.com/weft-mesh/weft/control/waypoint/deploy"
	"github.com/weft-mesh/weft/control/workload"
)

// WaypointControllerName is the controllerName of Weft's GatewayClasses
// (waypoints and ingress); it names Weft's entries in route statuses.
const WaypointControllerName = "weft.io/waypoint-controller"

// syncRoutes writes Weft's entries in the status.parents of HTTPRoutes and
// GRPCRoutes, for the parents Weft serves (see weftParents).
func (w *Writer) syncRoutes(ctx context.Context, o Objects, problems []workload.Problem) {
	ours := weftParents(o.Gateways)
	want := Conditions("HTTPRoute", o.HTTPRoutes, problems, accepted[*gatewayv1.HTTPRoute](""))
	services := serviceSet(o.Services)
	nsLabels := map[string]labels.Set{}
	for _, ns := range o.Namespaces {
		nsLabels[ns.Name] = ns.Labels
	}
	for _, rt := range o.HTTPRoutes {
		c := want[rt.Namespace+"/"+rt.Name]
		attach := func(ref gatewayv1.ParentReference) deploy.Attachment {
			for _, gw := range o.Gateways {
				if deploy.IsIngress(gw) && deploy.NamesGateway(gw, rt.Namespace, ref) {
					return deploy.ParentAttachment(gw, rt, ref, nsLabels[rt.Namespace])
				}
			}
			// Not reached: ours reports only on Services (not asked) and
			// on Gateways of class weft.
			return deploy.Attachment{Reason: gatewayv1.RouteReasonNoMatchingParent, Message: "no Gateway of class weft by that name"}
		}
		parents, changed := routeParents(rt.Namespace, rt.Generation, rt.Spec.ParentRefs, rt.Status.Parents, ours,
			httpRouteConditions(c, routeResolvedRefs(rt, services, o.ReferenceGrants), attach), time.Now())
		if !changed {
			continue
		}
		updated := rt.DeepCopy()
		updated.Status.Parents = parents
		w.write("HTTPRoute", rt.Namespace, rt.Name, c.Reason, func() error {
			_, err := w.Gateway.GatewayV1().HTTPRoutes(rt.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
			return err
		})
	}
	for _, rt := range o.GRPCRoutes {
		parents, changed := routeParents(rt.Namespace, rt.Generation, rt.Spec.ParentRefs, rt.Status.Parents, ours, grpcRouteConditions, time.Now())
		if !changed {
			continue
		}
		updated := rt.DeepCopy()
		updated.Status.Parents = parents
		w.write("GRPCRoute", rt.Namespace, rt.Name, ReasonUnsupported, func() error {
			_, err := w.Gateway.GatewayV1().GRPCRoutes(rt.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
			return err
		})
	}
}

// ParentConditions are the conditions Weft sets on a route for one parent
// (without generation and timestamps), and those it removes.
type ParentConditions func(ref gatewayv1.ParentReference) (set []metav1.Condition, remove []string)

// httpRouteConditions: Accepted, ResolvedRefs (resolved, the same for
// every parent), and PartiallyInvalid (reason UnsupportedValue, the
// problems as message) when the translation found problems, as Gateway
// API defines; HTTPRoutes have no status.conditions for a WeftAccepted
// condition. A Gateway parent whose listeners the route does not attach
// to (attach: deploy.ParentAttachment, as the translation decides) gets
// Accepted=False with the spec's reason (NoMatchingParent,
// NotAllowedByListeners, NoMatchingListenerHostname).
func httpRouteConditions(c Condition, resolved metav1.Condition, attach func(gatewayv1.ParentReference) deploy.Attachment) ParentConditions {
	return func(ref gatewayv1.ParentReference) ([]metav1.Condition, []string) {
		msg := forWaypoints
		if !isServiceParent(ref) {
			msg = forGateways
			if a := attach(ref); len(a.Listeners) == 0 {
				return []metav1.Condition{{Type: string(gatewayv1.RouteConditionAccepted), Status: metav1.ConditionFalse,
					Reason: string(a.Reason), Message: a.Message}, resolved}, []string{string(gatewayv1.RouteConditionPartiallyInvalid)}
			}
		}
		set := []metav1.Condition{{Type: string(gatewayv1.RouteConditionAccepted), Status: metav1.ConditionTrue,
			Reason: string(gatewayv1.RouteReasonAccepted), Message: msg}, resolved}
		if c.Status != "False" {
			return set, []string{string(gatewayv1.RouteConditionPartiallyInvalid)}
		}
		return append(set, metav1.Condition{Type: string(gatewayv1.RouteConditionPartiallyInvalid), Status: metav1.ConditionTrue,
			Reason: string(gatewayv1.RouteReasonUnsupportedValue), Message: truncate(c.Message, 32768)}), nil
	}
}

func grpcRouteConditions(gatewayv1.ParentReference) ([]metav1.Condition, []string) {
	return []metav1.Condition{{Type: string(gatewayv1.RouteConditionAccepted), Status: metav1.ConditionFalse,
		Reason: string(gatewayv1.RouteReasonUnsupportedValue), Message: unsupported.GRPCRoute.Message}}, nil
}

// weftParents says which parentRefs of a route in a namespace Weft serves:
// Services (GAMMA: waypoints) and Gateways of class weft (ingress).
func weftParents(gateways []*gatewayv1.Gateway) func(ns string, ref gatewayv1.ParentReference) bool {
	ingress := map[string]bool{}
	for _, gw := range gateways {
		if string(gw.Spec.GatewayClassName) == deploy.IngressClassName {
			ingress[gw.Namespace+"/"+gw.Name] = true
		}
	}
	return func(ns string, ref gatewayv1.ParentReference) bool {
		if isServiceParent(ref) {
			return true
		}
		if ref.Namespace != nil {
			ns = string(*ref.Namespace)
		}
		return isGatewayParent(ref) && ingress[ns+"/"+string(ref.Name)]
	}
}

// isServiceParent: a GAMMA parent (core Service).
func isServiceParent(ref gatewayv1.ParentReference) bool {
	return ref.Kind != nil && *ref.Kind == "Service" && (ref.Group == nil || *ref.Group == "" || *ref.Group == "core")
}

// isGatewayParent: a Gateway API Gateway (the default kind of a parentRef).
func isGatewayParent(ref gatewayv1.ParentReference) bool {
	return (ref.Kind == nil || *ref.Kind == "Gateway") && (ref.Group == nil || *ref.Group == gatewayv1.GroupName)
}

// routeParents computes a route's status.parents: for every parentRef Weft
// serves (ours), one entry of Weft's controller with the conditions conds
// says, at generation gen. Entries of other controllers are kept; Weft's
// entries for parentRefs that are gone are dropped. changed is false when
// the status already says this (timestamps aside). Pure but for now.
func routeParents(ns string, gen int64, refs []gatewayv1.ParentReference, current []gatewayv1.RouteParentStatus,
	ours func(string, gatewayv1.ParentReference) bool, conds ParentConditions, now time.Time) (parents []gatewayv1.RouteParentStatus, changed bool) {
	old := map[string]gatewayv1.RouteParentStatus{}
	for _, p := range current {
		if p.ControllerName == WaypointControllerName {
			old[parentKey(p.ParentRef)] = p
		} else {
			parents = append(parents, p)
		}
	}
	for _, ref := range refs {
		if !ours(ns, ref) {
			continue
		}
		prev, existed := old[parentKey(ref)]
		delete(old, parentKey(ref))
		next := slices.Clone(prev.Conditions)
		set, remove := conds(ref)
		for _, c := range set {
			c.ObservedGeneration, c.LastTransitionTime = gen, metav1.NewTime(now)
			meta.SetStatusCondition(&next, c)
		}
		for _, t := range remove {
			meta.RemoveStatusCondition(&next, t)
		}
		changed = changed || !existed || !deploy.ConditionsEqual(prev.Conditions, next)
		parents = append(parents, gatewayv1.RouteParentStatus{ParentRef: ref, ControllerName: WaypointControllerName, Conditions: next})
	}
	if len(old) > 0 {
		changed = true // a parent Weft reported on is gone
	}
	if len(parents) > 32 { // the API's limit
		parents = parents[:32]
	}
	return parents, changed
}

func parentKey(r gatewayv1.ParentReference) string {
	s := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	var port string
	if r.Port != nil {
		port = strconv.Itoa(int(*r.Port))
	}
	return strings.Join([]string{s((*string)(r.Group)), s((*string)(r.Kind)), s((*string)(r.Namespace)), string(r.Name),
		s((*string)(r.SectionName)), port}, "\x00")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
