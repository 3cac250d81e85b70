package status

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/weft-mesh/weft/control/unsupported"
)

// TestRoutesOnIngressAndGRPCRoutes: Weft reports on an HTTPRoute's Service
// parents and on its Gateway parents of class weft, not on other classes'
// Gateways; a GRPCRoute gets Accepted=False (Weft does not implement it).
func TestRoutesOnIngressAndGRPCRoutes(t *testing.T) {
	ctx := context.Background()
	ingress := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "edge", Name: "public"}, Spec: gatewayv1.GatewaySpec{GatewayClassName: "weft"}}
	other := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "other"}, Spec: gatewayv1.GatewaySpec{GatewayClassName: "istio"}}
	refs := []gatewayv1.ParentReference{{Name: "public", Namespace: ptr.To(gatewayv1.Namespace("edge"))}, {Name: "other"}, serviceParent("reviews")}
	rt := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", Generation: 1},
		Spec: gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: refs}}}
	grpc := &gatewayv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "rpc", Generation: 1},
		Spec: gatewayv1.GRPCRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: refs}}}
	client := gatewayfake.NewSimpleClientset()
	// Through the API: the fake files constructor objects under another version.
	if _, err := client.GatewayV1().HTTPRoutes("default").Create(ctx, rt, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.GatewayV1().GRPCRoutes("default").Create(ctx, grpc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w := &Writer{Gateway: client, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	w.Sync(ctx, Objects{Gateways: []*gatewayv1.Gateway{ingress, other}, HTTPRoutes: []*gatewayv1.HTTPRoute{rt},
		GRPCRoutes: []*gatewayv1.GRPCRoute{grpc}}, nil)

	gotHTTP, err := client.GatewayV1().HTTPRoutes("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantMsg := map[string]string{"public": forGateways, "reviews": forWaypoints}
	if len(gotHTTP.Status.Parents) != len(wantMsg) {
		t.Fatalf("HTTPRoute parents %+v, want entries for public and reviews only", gotHTTP.Status.Parents)
	}
	for _, p := range gotHTTP.Status.Parents {
		c := meta.FindStatusCondition(p.Conditions, "Accepted")
		if c == nil || c.Status != metav1.ConditionTrue || c.Message != wantMsg[string(p.ParentRef.Name)] {
			t.Errorf("HTTPRoute parent %s: Accepted %+v, want True %q", p.ParentRef.Name, c, wantMsg[string(p.ParentRef.Name)])
		}
	}
	gotGRPC, err := client.GatewayV1().GRPCRoutes("default").Get(ctx, "rpc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(gotGRPC.Status.Parents) != 2 {
		t.Fatalf("GRPCRoute parents %+v, want entries for public and reviews", gotGRPC.Status.Parents)
	}
	for _, p := range gotGRPC.Status.Parents {
		c := meta.FindStatusCondition(p.Conditions, "Accepted")
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "UnsupportedValue" || c.Message != unsupported.GRPCRoute.Message || c.ObservedGeneration != 1 {
			t.Errorf("GRPCRoute parent %s: Accepted %+v, want False/UnsupportedValue", p.ParentRef.Name, c)
		}
	}
}
