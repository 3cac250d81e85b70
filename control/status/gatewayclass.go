package status

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/control/waypoint/deploy"
	"github.com/weft-mesh/weft/control/workload"
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
		if deploy.ConditionsEqual(gc.Status.Conditions, next.Conditions) {
			continue
		}
		updated := gc.DeepCopy()
		updated.Status = *next
		w.write("GatewayClass", "", gc.Name, c.Reason, func() error {
			_, err := w.Gateway.GatewayV1().GatewayClasses().UpdateStatus(ctx, updated, metav1.UpdateOptions{})
			return err
		})
	}
}

// classAccepted is the Accepted condition of a class naming Weft's
// controller. Weft serves Gateways by class name (waypoints, ingress), so
// another name is refused. Weft reads no class parameters: a
// parametersRef is named as ignored rather than refused, because the
// class's Gateways are served either way.
func classAccepted(gc *gatewayv1.GatewayClass) metav1.Condition {
	var msg string
	switch {
	case workload.IsWaypointClass(gc.Name):
		msg = "Weft serves Gateways of this class as waypoints"
	case gc.Name == deploy.IngressClassName:
		msg = "Weft serves Gateways of this class with the ingress gateways of charts/gateway"
	default:
		return metav1.Condition{Type: string(gatewayv1.GatewayClassConditionStatusAccepted), Status: metav1.ConditionFalse,
			Reason: string(gatewayv1.GatewayClassReasonUnsupported), Message: fmt.Sprintf(
				"Weft serves the classes %s, %s and %s only; Gateways of this class are not served",
				workload.WaypointGatewayClass, workload.IstioWaypointGatewayClass, deploy.IngressClassName)}
	}
	if gc.Spec.ParametersRef != nil {
		msg += "; spec.parametersRef is ignored: Weft reads no GatewayClass parameters"
	}
	return metav1.Condition{Type: string(gatewayv1.GatewayClassConditionStatusAccepted), Status: metav1.ConditionTrue,
		Reason: string(gatewayv1.GatewayClassReasonAccepted), Message: msg}
}
