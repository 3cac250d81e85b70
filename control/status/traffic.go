package status

import (
	"context"
	"slices"
	"strings"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/control/workload"
)

// istioGatewayKind is how the translation's problems name Istio Gateways
// (control/waypoint), apart from Gateway API ones.
const istioGatewayKind = "Gateway.networking.istio.io"

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
// DestinationRules and Istio Gateways, and Weft's parent entries on routes
// (see syncRoutes), wherever the current status differs from the desired
// one.
func (w *Writer) syncTraffic(ctx context.Context, o Objects, problems []workload.Problem) {
	vss, drs := o.VirtualServices, o.DestinationRules
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
	w.syncRoutes(ctx, o, problems)
}

func (w *Writer) logResult(err error, kind, ns, name, reason string) {
	if err != nil {
		w.failed.Add(1)
	}
	switch {
	case err == nil:
		w.Log.Debug("status updated", "kind", kind, "namespace", ns, "name", name, "reason", reason)
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
		// A newer version is on its way through the informer; Sync says
		// to retry.
	default:
		w.Log.Warn("status update failed", "kind", kind, "namespace", ns, "name", name, "err", err)
	}
}
