package deploy

import (
	"fmt"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Status computes the Gateway's status from what is observed: the
// validation, the waypoint's Deployment and Service (nil when missing),
// and applyErr, the error applying them (nil when it worked or was not
// tried). Conditions Accepted and Programmed (observedGeneration = the
// Gateway's generation), addresses = the Service's ClusterIP, as Istio
// does, and the status of every listener. Other conditions are kept. Pure
// except for now, which stamps conditions whose status changes.
func Status(gw *gatewayv1.Gateway, v Validation, dep *appsv1.Deployment, svc *corev1.Service, applyErr error, now time.Time) gatewayv1.GatewayStatus {
	st := *gw.Status.DeepCopy()
	gen := gw.Generation
	set := func(typ gatewayv1.GatewayConditionType, ok bool, reason gatewayv1.GatewayConditionReason, msg string) {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: string(typ), Status: s, Reason: string(reason), Message: msg,
			ObservedGeneration: gen, LastTransitionTime: metav1.NewTime(now),
		})
	}
	set(gatewayv1.GatewayConditionAccepted, v.Accepted, v.Reason, v.Message)

	st.Addresses = nil
	if svc != nil && svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 {
			ips = []string{svc.Spec.ClusterIP}
		}
		for _, ip := range ips {
			st.Addresses = append(st.Addresses, gatewayv1.GatewayStatusAddress{
				Type: ptr.To(gatewayv1.IPAddressType), Value: ip,
			})
		}
	}

	switch {
	case !v.Accepted:
		set(gatewayv1.GatewayConditionProgrammed, false, gatewayv1.GatewayReasonInvalid, "not accepted: "+v.Message)
	case applyErr != nil:
		set(gatewayv1.GatewayConditionProgrammed, false, gatewayv1.GatewayReasonNoResources, "creating the waypoint's objects failed: "+applyErr.Error())
	case dep == nil:
		set(gatewayv1.GatewayConditionProgrammed, false, gatewayv1.GatewayReasonPending, "waiting for the Deployment")
	case v.Replicas == 0:
		set(gatewayv1.GatewayConditionProgrammed, false, gatewayv1.GatewayReasonPending,
			fmt.Sprintf("scaled to zero (annotation %s)", AnnotationReplicas))
	case dep.Status.AvailableReplicas < 1:
		set(gatewayv1.GatewayConditionProgrammed, false, gatewayv1.GatewayReasonPending,
			fmt.Sprintf("no available waypoint replica yet (%d/%d ready)", dep.Status.ReadyReplicas, v.Replicas))
	case len(st.Addresses) == 0:
		set(gatewayv1.GatewayConditionProgrammed, false, gatewayv1.GatewayReasonAddressNotAssigned, "the waypoint Service has no ClusterIP yet")
	default:
		set(gatewayv1.GatewayConditionProgrammed, true, gatewayv1.GatewayReasonProgrammed,
			fmt.Sprintf("%d/%d waypoint replicas available", dep.Status.AvailableReplicas, v.Replicas))
	}
	programmed := listenerProgrammed(meta.FindStatusCondition(st.Conditions, string(gatewayv1.GatewayConditionProgrammed)))
	reports := make([]listenerReport, len(gw.Spec.Listeners))
	for i := range gw.Spec.Listeners {
		reports[i] = waypointListener(&gw.Spec.Listeners[i], v, programmed)
	}
	setListeners(&st, gw, reports, now)
	return st
}

// StatusEqual compares statuses ignoring condition timestamps.
func StatusEqual(a, b gatewayv1.GatewayStatus) bool {
	return slices.EqualFunc(a.Addresses, b.Addresses, func(x, y gatewayv1.GatewayStatusAddress) bool {
		return x.Value == y.Value && addrType(x) == addrType(y)
	}) && ConditionsEqual(a.Conditions, b.Conditions) && slices.EqualFunc(a.Listeners, b.Listeners, listenerStatusEqual)
}

func listenerStatusEqual(a, b gatewayv1.ListenerStatus) bool {
	return a.Name == b.Name && a.AttachedRoutes == b.AttachedRoutes && ConditionsEqual(a.Conditions, b.Conditions) &&
		slices.EqualFunc(a.SupportedKinds, b.SupportedKinds, func(x, y gatewayv1.RouteGroupKind) bool {
			return sameKind(x, y)
		})
}

// ConditionsEqual compares condition sets, in any order, ignoring
// timestamps (control/status uses it for route and class statuses too).
func ConditionsEqual(a, b []metav1.Condition) bool {
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

func addrType(a gatewayv1.GatewayStatusAddress) gatewayv1.AddressType {
	if a.Type == nil {
		return gatewayv1.IPAddressType
	}
	return *a.Type
}
