package status

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/control/waypoint/deploy"
)

// syncGatewayClasses sets Accepted on the GatewayClasses of Weft's
// controller, as Gateway API asks of the controller a class names.
func (w *Writer) syncGatewayClasses(ctx context.Context, classes []*gatewayv1.GatewayClass) {
	for _, gc := range classes {
		if gc.Spec.ControllerName != WaypointControllerName {
			continue
		}
		next := gc.Status.DeepCopy()
		c := classAccepted(gc)
		c.ObservedGeneration, c.LastTransitionTime = gc.Generation, metav1.NewTime(time.Now())
		meta.SetStatusCondition(&next.Conditions, c)
		if sameConditions(gc.Status.Conditions, next.Conditions) {
			continue
		}
		updated := gc.DeepCopy()
		updated.Status = *next
		_, err := w.Gateway.GatewayV1().GatewayClasses().UpdateStatus(ctx, updated, metav1.UpdateOptions{})
		w.logResult(err, "GatewayClass", "", gc.Name, c.Reason)
	}
}

// classAccepted is a Weft class's Accepted condition. Weft reads no
// class parameters: a parametersRef is named as ignored rather than
// refused, because the class's Gateways are served either way.
func classAccepted(gc *gatewayv1.GatewayClass) metav1.Condition {
	msg := "Weft serves Gateways of this class as waypoints"
	if gc.Name == deploy.IngressClassName {
		msg = "Weft serves Gateways of this class with the ingress gateways of charts/gateway"
	}
	if gc.Spec.ParametersRef != nil {
		msg += "; spec.parametersRef is ignored: Weft reads no GatewayClass parameters"
	}
	return metav1.Condition{Type: string(gatewayv1.GatewayClassConditionStatusAccepted), Status: metav1.ConditionTrue,
		Reason: string(gatewayv1.GatewayClassReasonAccepted), Message: msg}
}
