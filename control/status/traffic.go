package status

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/control/workload"
)

// istioGatewayKind is how the translation's problems name Istio Gateways
// (control/waypoint), apart from Gateway API ones.
const istioGatewayKind = "Gateway.networking.istio.io"

// WaypointControllerName is the controllerName of Weft's waypoints (the
// weft-waypoint GatewayClass); it names Weft's entries in route statuses.
const WaypointControllerName = "weft.io/waypoint-controller"

// Conditions computes the condition of each object of one kind from the
// problems of a translation: True/Accepted with the object's accepted
// message, or False/PartiallyInvalid with the (sorted, distinct) problem
// messages. Keys are "<namespace>/<name>". Pure.
func Conditions[T metav1.Object](kind string, objs []T, problems []workload.Problem, accepted func(T) string) map[string]Condition {
	byObj := map[string][]string{}
	for _, p := range problems {
		if p.Kind == kind {
			key := p.Namespace + "/" + p.Name
			byObj[key] = append(byObj[key], p.Message)
		}
	}
	out := make(map[string]Condition, len(objs))
	for _, o := range objs {
		key := o.GetNamespace() + "/" + o.GetName()
		c := Condition{Status: "True", Reason: ReasonAccepted, Message: accepted(o), Generation: o.GetGeneration()}
		if msgs := byObj[key]; len(msgs) > 0 {
			slices.Sort(msgs)
			c = Condition{Status: "False", Reason: ReasonPartiallyInvalid, Message: strings.Join(slices.Compact(msgs), "; "), Generation: o.GetGeneration()}
		}
		out[key] = c
	}
	return out
}

// syncTraffic sets the WeftAccepted condition on VirtualServices,
// DestinationRules and Istio Gateways, and Weft's parent entries on GAMMA
// HTTPRoutes (see RouteParents), wherever the current status differs from
// the desired one.
func (w *Writer) syncTraffic(ctx context.Context, o Objects, problems []workload.Problem) {
	vss, drs, routes := o.VirtualServices, o.DestinationRules, o.HTTPRoutes
	syncConditions(w, "VirtualService", vss, Conditions("VirtualService", vss, problems, accepted[*networkingv1.VirtualService](forWaypoints)),
		func(vs *networkingv1.VirtualService) Fields { return istioStatus(&vs.Status) },
		func(vs *networkingv1.VirtualService) error {
			_, err := w.Client.NetworkingV1().VirtualServices(vs.Namespace).UpdateStatus(ctx, vs, metav1.UpdateOptions{})
			return err
		})
	syncConditions(w, "DestinationRule", drs, Conditions("DestinationRule", drs, problems, accepted[*networkingv1.DestinationRule](forWaypoints)),
		func(dr *networkingv1.DestinationRule) Fields { return istioStatus(&dr.Status) },
		func(dr *networkingv1.DestinationRule) error {
			_, err := w.Client.NetworkingV1().DestinationRules(dr.Namespace).UpdateStatus(ctx, dr, metav1.UpdateOptions{})
			return err
		})
	syncConditions(w, istioGatewayKind, o.IstioGateways,
		Conditions(istioGatewayKind, o.IstioGateways, problems, accepted[*networkingv1.Gateway](forGateways)),
		func(gw *networkingv1.Gateway) Fields { return istioStatus(&gw.Status) },
		func(gw *networkingv1.Gateway) error {
			_, err := w.Client.NetworkingV1().Gateways(gw.Namespace).UpdateStatus(ctx, gw, metav1.UpdateOptions{})
			return err
		})
	rtWant := Conditions("HTTPRoute", routes, problems, accepted[*gatewayv1.HTTPRoute](forWaypoints))
	for _, rt := range routes {
		c := rtWant[rt.Namespace+"/"+rt.Name]
		parents, changed := RouteParents(rt, c, time.Now())
		if !changed {
			continue
		}
		updated := rt.DeepCopy()
		updated.Status.Parents = parents
		_, err := w.Gateway.GatewayV1().HTTPRoutes(rt.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
		w.logResult(err, "HTTPRoute", rt.Namespace, rt.Name, c.Reason)
	}
}

func (w *Writer) logResult(err error, kind, ns, name, reason string) {
	switch {
	case err == nil:
		w.Log.Debug("status updated", "kind", kind, "namespace", ns, "name", name, "reason", reason)
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
		// A newer version is on its way through the informer; the next sync
		// handles it.
	default:
		w.Log.Warn("status update failed", "kind", kind, "namespace", ns, "name", name, "err", err)
	}
}

// isServiceParent: a GAMMA parent (core Service).
func isServiceParent(ref gatewayv1.ParentReference) bool {
	g := ""
	if ref.Group != nil {
		g = string(*ref.Group)
	}
	return ref.Kind != nil && *ref.Kind == "Service" && (g == "" || g == "core")
}

// RouteParents computes an HTTPRoute's status.parents: for every Service
// parentRef (GAMMA) one entry of Weft's controller with condition Accepted
// (True) and, when the translation found problems, PartiallyInvalid (True,
// reason UnsupportedValue, the problems as message), as Gateway API
// defines; HTTPRoutes have no status.conditions for a WeftAccepted
// condition. Entries of other controllers are kept. changed is false when
// the status already says this (timestamps aside). Pure but for now.
func RouteParents(rt *gatewayv1.HTTPRoute, c Condition, now time.Time) (parents []gatewayv1.RouteParentStatus, changed bool) {
	old := map[string]gatewayv1.RouteParentStatus{}
	for _, p := range rt.Status.Parents {
		if p.ControllerName == WaypointControllerName {
			old[parentKey(p.ParentRef)] = p
		} else {
			parents = append(parents, p)
		}
	}
	for _, ref := range rt.Spec.ParentRefs {
		if !isServiceParent(ref) {
			continue
		}
		prev := old[parentKey(ref)]
		conds := slices.Clone(prev.Conditions)
		meta.SetStatusCondition(&conds, metav1.Condition{
			Type: string(gatewayv1.RouteConditionAccepted), Status: metav1.ConditionTrue,
			Reason: string(gatewayv1.RouteReasonAccepted), Message: forWaypoints,
			ObservedGeneration: rt.Generation, LastTransitionTime: metav1.NewTime(now),
		})
		if c.Status == "False" {
			meta.SetStatusCondition(&conds, metav1.Condition{
				Type: string(gatewayv1.RouteConditionPartiallyInvalid), Status: metav1.ConditionTrue,
				Reason: string(gatewayv1.RouteReasonUnsupportedValue), Message: truncate(c.Message, 32768),
				ObservedGeneration: rt.Generation, LastTransitionTime: metav1.NewTime(now),
			})
		} else {
			meta.RemoveStatusCondition(&conds, string(gatewayv1.RouteConditionPartiallyInvalid))
		}
		p := gatewayv1.RouteParentStatus{ParentRef: ref, ControllerName: WaypointControllerName, Conditions: conds}
		if _, ok := old[parentKey(ref)]; !ok || !sameConditions(prev.Conditions, conds) {
			changed = true
		}
		delete(old, parentKey(ref))
		parents = append(parents, p)
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

func sameConditions(a, b []metav1.Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for _, c := range a {
		d := meta.FindStatusCondition(b, c.Type)
		if d == nil || d.Status != c.Status || d.Reason != c.Reason || d.Message != c.Message || d.ObservedGeneration != c.ObservedGeneration {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
