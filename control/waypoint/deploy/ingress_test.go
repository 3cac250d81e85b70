package deploy

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// TestIngressStatus: an ingress Gateway is Accepted unless its selector
// annotation is invalid, and Programmed only with a ready gateway pod.
func TestIngressStatus(t *testing.T) {
	now := time.Unix(1700000000, 0)
	gw := func(annotations map[string]string) *gatewayv1.Gateway {
		return &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "bookinfo", Namespace: "default", Generation: 3, Annotations: annotations},
			Spec: gatewayv1.GatewaySpec{GatewayClassName: IngressClassName}}
	}
	for _, c := range []struct {
		name                  string
		annotations           map[string]string
		ready                 int
		accepted, programmed  metav1.ConditionStatus
		acceptedR, programmdR gatewayv1.GatewayConditionReason
	}{
		{"default selector, pod ready", nil, 1, metav1.ConditionTrue, metav1.ConditionTrue, gatewayv1.GatewayReasonAccepted, gatewayv1.GatewayReasonProgrammed},
		{"no ready pod", nil, 0, metav1.ConditionTrue, metav1.ConditionFalse, gatewayv1.GatewayReasonAccepted, gatewayv1.GatewayReasonPending},
		{"custom selector", map[string]string{AnnotationGatewaySelector: "app=edge,tier=public"}, 2, metav1.ConditionTrue, metav1.ConditionTrue, gatewayv1.GatewayReasonAccepted, gatewayv1.GatewayReasonProgrammed},
		{"bad selector", map[string]string{AnnotationGatewaySelector: "not a selector"}, 1, metav1.ConditionFalse, metav1.ConditionFalse, gatewayv1.GatewayReasonInvalidParameters, gatewayv1.GatewayReasonInvalid},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := gw(c.annotations)
			if !IsIngress(g) || IsWaypoint(g) {
				t.Fatalf("class %s: IsIngress %v IsWaypoint %v", g.Spec.GatewayClassName, IsIngress(g), IsWaypoint(g))
			}
			st := IngressStatus(g, c.ready, now)
			for typ, want := range map[gatewayv1.GatewayConditionType]struct {
				s metav1.ConditionStatus
				r gatewayv1.GatewayConditionReason
			}{gatewayv1.GatewayConditionAccepted: {c.accepted, c.acceptedR}, gatewayv1.GatewayConditionProgrammed: {c.programmed, c.programmdR}} {
				got := meta.FindStatusCondition(st.Conditions, string(typ))
				if got == nil || got.Status != want.s || got.Reason != string(want.r) || got.ObservedGeneration != 3 {
					t.Errorf("%s = %+v, want %s/%s at generation 3", typ, got, want.s, want.r)
				}
			}
		})
	}
}
