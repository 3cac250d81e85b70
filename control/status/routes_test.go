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
	ingress := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "edge", Name: "public"}, Spec: gatewayv1.GatewaySpec{GatewayClassName: "weft",
		Listeners: []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType, AllowedRoutes: &gatewayv1.AllowedRoutes{
			Namespaces: &gatewayv1.RouteNamespaces{From: ptr.To(gatewayv1.NamespacesFromAll)}}}}}}
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

// TestRouteParentNotAttached: a parentRef to a Gateway of class weft that
// attaches to none of its listeners gets Accepted=False with the Gateway
// API reason (the conformance tests HTTPRouteInvalidParentRefNot*,
// HTTPRouteListenerHostnameMatching and HTTPRouteInvalidCrossNamespace*
// check these), not Accepted=True.
func TestRouteParentNotAttached(t *testing.T) {
	ctx := context.Background()
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "edge", Name: "gw"}, Spec: gatewayv1.GatewaySpec{GatewayClassName: "weft",
		Listeners: []gatewayv1.Listener{
			{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType, Hostname: ptr.To(gatewayv1.Hostname("a.example.com"))},
			{Name: "grpc-only", Port: 8080, Protocol: gatewayv1.HTTPProtocolType,
				AllowedRoutes: &gatewayv1.AllowedRoutes{Kinds: []gatewayv1.RouteGroupKind{{Kind: "GRPCRoute"}}}},
			{Name: "tls", Port: 443, Protocol: gatewayv1.TLSProtocolType},
		}}}
	ref := func(section string, port gatewayv1.PortNumber) gatewayv1.ParentReference {
		r := gatewayv1.ParentReference{Name: "gw", Namespace: ptr.To(gatewayv1.Namespace("edge"))}
		if section != "" {
			r.SectionName = ptr.To(gatewayv1.SectionName(section))
		}
		if port != 0 {
			r.Port = &port
		}
		return r
	}
	for _, c := range []struct {
		name, ns string
		hosts    []gatewayv1.Hostname
		ref      gatewayv1.ParentReference
		want     string
	}{
		{"no-such-section", "edge", nil, ref("nope", 0), "False/NoMatchingParent"},
		{"no-such-port", "edge", nil, ref("", 9999), "False/NoMatchingParent"},
		{"section-and-port-disagree", "edge", nil, ref("http", 8080), "False/NoMatchingParent"},
		{"kind-not-allowed", "edge", nil, ref("grpc-only", 0), "False/NotAllowedByListeners"},
		{"tls-listener", "edge", nil, ref("tls", 0), "False/NotAllowedByListeners"},
		{"other-namespace", "apps", nil, ref("http", 0), "False/NotAllowedByListeners"},
		{"hostname-mismatch", "edge", []gatewayv1.Hostname{"b.example.com"}, ref("http", 0), "False/NoMatchingListenerHostname"},
		{"attached", "edge", []gatewayv1.Hostname{"a.example.com"}, ref("http", 80), "True/Accepted"},
		{"attached-whole-gateway", "edge", nil, ref("", 0), "True/Accepted"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rt := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: c.name, Generation: 1},
				Spec: gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{c.ref}}, Hostnames: c.hosts}}
			client := gatewayfake.NewSimpleClientset()
			if _, err := client.GatewayV1().HTTPRoutes(c.ns).Create(ctx, rt, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			w := &Writer{Gateway: client, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			w.Sync(ctx, Objects{Gateways: []*gatewayv1.Gateway{gw}, HTTPRoutes: []*gatewayv1.HTTPRoute{rt}}, nil)
			got, err := client.GatewayV1().HTTPRoutes(c.ns).Get(ctx, c.name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Status.Parents) != 1 {
				t.Fatalf("parents %+v, want one", got.Status.Parents)
			}
			a := meta.FindStatusCondition(got.Status.Parents[0].Conditions, "Accepted")
			if a == nil || string(a.Status)+"/"+a.Reason != c.want {
				t.Fatalf("Accepted %+v, want %s", a, c.want)
			}
			if meta.FindStatusCondition(got.Status.Parents[0].Conditions, "ResolvedRefs") == nil {
				t.Errorf("no ResolvedRefs condition: %+v", got.Status.Parents[0].Conditions)
			}
		})
	}
}
