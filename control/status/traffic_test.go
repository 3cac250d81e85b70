package status

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"istio.io/client-go/pkg/clientset/versioned/fake"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/weft-mesh/weft/control/waypoint/deploy"
	"github.com/weft-mesh/weft/control/workload"
)

func serviceParent(name string) gatewayv1.ParentReference {
	return gatewayv1.ParentReference{Group: ptr.To(gatewayv1.Group("")), Kind: ptr.To(gatewayv1.Kind("Service")), Name: gatewayv1.ObjectName(name)}
}

// attachAll: every Gateway parent attaches (to its first listener).
func attachAll(gatewayv1.ParentReference) deploy.Attachment {
	return deploy.Attachment{Listeners: []int{0}, Reason: gatewayv1.RouteReasonAccepted}
}

// httpParents is an HTTPRoute's parents with condition c, when no
// Gateway parent is Weft's.
func httpParents(rt *gatewayv1.HTTPRoute, c Condition, now time.Time) ([]gatewayv1.RouteParentStatus, bool) {
	return routeParents(rt.Namespace, rt.Generation, rt.Spec.ParentRefs, rt.Status.Parents, weftParents(nil),
		httpRouteConditions(c, routeResolvedRefs(rt, nil, nil), attachAll), now)
}

func TestRouteParents(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rt := &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "r", Generation: 2},
		Spec: gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{
			serviceParent("reviews"),
			{Name: "ingress"}, // a Gateway: not Weft's
		}}},
	}
	rt.Status.Parents = []gatewayv1.RouteParentStatus{{ParentRef: gatewayv1.ParentReference{Name: "ingress"}, ControllerName: "istio.io/gateway-controller",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: "True", Reason: "Accepted"}}}}

	ok := Condition{Status: "True", Reason: ReasonAccepted, Generation: 2}
	parents, changed := httpParents(rt, ok, now)
	if !changed || len(parents) != 2 || parents[0].ControllerName != "istio.io/gateway-controller" {
		t.Fatalf("parents %+v changed %v", parents, changed)
	}
	ours := parents[1]
	if ours.ControllerName != WaypointControllerName || ours.ParentRef.Name != "reviews" {
		t.Fatalf("ours %+v", ours)
	}
	if c := meta.FindStatusCondition(ours.Conditions, "Accepted"); c == nil || c.Status != "True" || c.ObservedGeneration != 2 {
		t.Errorf("Accepted %+v", c)
	}
	if meta.FindStatusCondition(ours.Conditions, "PartiallyInvalid") != nil {
		t.Error("PartiallyInvalid without problems")
	}
	rt.Status.Parents = parents
	if _, changed := httpParents(rt, ok, now.Add(time.Hour)); changed {
		t.Error("same status reported as a change")
	}
	bad := Condition{Status: "False", Reason: ReasonPartiallyInvalid, Message: "rule 0: bad regex", Generation: 2}
	parents, changed = httpParents(rt, bad, now)
	if !changed {
		t.Fatal("problem not a change")
	}
	if c := meta.FindStatusCondition(parents[1].Conditions, "PartiallyInvalid"); c == nil || c.Status != "True" || c.Reason != "UnsupportedValue" || c.Message != "rule 0: bad regex" {
		t.Errorf("PartiallyInvalid %+v", c)
	}
	// The parentRef goes away: Weft's entry goes too.
	rt.Status.Parents = parents
	rt.Spec.ParentRefs = rt.Spec.ParentRefs[1:]
	parents, changed = httpParents(rt, ok, now)
	if !changed || len(parents) != 1 || parents[0].ControllerName == WaypointControllerName {
		t.Errorf("after removal %+v %v", parents, changed)
	}
}

func TestSyncTraffic(t *testing.T) {
	ctx := context.Background()
	vsGood := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "good", Generation: 1}}
	vsBad := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "bad", Generation: 4}}
	dr := &networkingv1.DestinationRule{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "dr", Generation: 1}}
	rt := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "r", Generation: 1},
		Spec: gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{serviceParent("reviews")}}}}
	istio := fake.NewSimpleClientset(vsGood, vsBad, dr)
	gw := gatewayfake.NewSimpleClientset()
	if _, err := gw.GatewayV1().HTTPRoutes("default").Create(ctx, rt, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w := &Writer{Client: istio, Gateway: gw, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	problems := []workload.Problem{{Kind: "VirtualService", Namespace: "default", Name: "bad", Message: "http[0]: unknown subset v9"}}
	w.Sync(ctx, Objects{VirtualServices: []*networkingv1.VirtualService{vsGood, vsBad},
		DestinationRules: []*networkingv1.DestinationRule{dr}, HTTPRoutes: []*gatewayv1.HTTPRoute{rt}}, problems)

	get := func(name string) *networkingv1.VirtualService {
		vs, err := istio.NetworkingV1().VirtualServices("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return vs
	}
	if c := find(istioStatus(&get("good").Status)); c == nil || c.GetStatus() != "True" || c.GetReason() != ReasonAccepted {
		t.Errorf("good VirtualService: %v", c)
	}
	if c := find(istioStatus(&get("bad").Status)); c == nil || c.GetStatus() != "False" || c.GetMessage() != "http[0]: unknown subset v9" || c.GetObservedGeneration() != 4 {
		t.Errorf("bad VirtualService: %v", c)
	}
	d, _ := istio.NetworkingV1().DestinationRules("default").Get(ctx, "dr", metav1.GetOptions{})
	if c := find(istioStatus(&d.Status)); c == nil || c.GetStatus() != "True" {
		t.Errorf("DestinationRule: %v", c)
	}
	r, _ := gw.GatewayV1().HTTPRoutes("default").Get(ctx, "r", metav1.GetOptions{})
	if len(r.Status.Parents) != 1 || r.Status.Parents[0].ControllerName != WaypointControllerName {
		t.Errorf("HTTPRoute parents %+v", r.Status.Parents)
	}

	// Nothing changed: no writes.
	vss := []*networkingv1.VirtualService{get("good"), get("bad")}
	istio.ClearActions()
	gw.ClearActions()
	w.Sync(ctx, Objects{VirtualServices: vss, DestinationRules: []*networkingv1.DestinationRule{d}, HTTPRoutes: []*gatewayv1.HTTPRoute{r}}, problems)
	if n := len(istio.Actions()) + len(gw.Actions()); n != 0 {
		t.Errorf("%d writes without a change: %v %v", n, istio.Actions(), gw.Actions())
	}
}
