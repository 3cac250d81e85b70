package status

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
)

// TestGatewayClasses: Weft accepts its own classes once, names an ignored
// parametersRef, refuses a class name it does not serve, and leaves other
// controllers' classes alone.
func TestGatewayClasses(t *testing.T) {
	ctx := context.Background()
	client := gatewayfake.NewSimpleClientset()
	for _, gc := range []*gatewayv1.GatewayClass{
		{ObjectMeta: metav1.ObjectMeta{Name: "weft", Generation: 3}, Spec: gatewayv1.GatewayClassSpec{ControllerName: WaypointControllerName,
			ParametersRef: &gatewayv1.ParametersReference{Group: "", Kind: "ConfigMap", Name: "params"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "istio"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: "istio.io/gateway-controller"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "custom"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: WaypointControllerName}},
	} {
		if _, err := client.GatewayV1().GatewayClasses().Create(ctx, gc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	list := func() []*gatewayv1.GatewayClass {
		l, err := client.GatewayV1().GatewayClasses().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var out []*gatewayv1.GatewayClass
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
		return out
	}
	w := &Writer{Gateway: client, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	w.Sync(ctx, Objects{GatewayClasses: list()}, nil)
	for _, gc := range list() {
		c := meta.FindStatusCondition(gc.Status.Conditions, "Accepted")
		switch gc.Name {
		case "weft":
			if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != 3 || !strings.Contains(c.Message, "parametersRef is ignored") {
				t.Errorf("weft class: Accepted %+v, want True naming the ignored parametersRef", c)
			}
		case "custom": // Weft's controller, a name Weft does not serve
			if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "Unsupported" {
				t.Errorf("custom class: Accepted %+v, want False/Unsupported", c)
			}
		case "istio":
			if c != nil {
				t.Errorf("another controller's class got %+v", c)
			}
		}
	}
	client.ClearActions()
	w.Sync(ctx, Objects{GatewayClasses: list()}, nil)
	for _, a := range client.Actions() {
		if a.GetVerb() == "update" {
			t.Errorf("unchanged class rewritten: %v", a)
		}
	}
}
