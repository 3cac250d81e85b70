package deploy

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
)

// attachGateway has listeners that admit routes differently: the Gateway's
// namespace (http), every namespace with a hostname (foo), namespaces
// labelled gateway=shared (sel), none for a bad selector (bad), and an
// TLS listener the status does not accept (tls).
func attachGateway() *gatewayv1.Gateway {
	from := func(f gatewayv1.FromNamespaces, sel *metav1.LabelSelector) *gatewayv1.AllowedRoutes {
		return &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: ptr.To(f), Selector: sel}}
	}
	return &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "gw", Namespace: "infra", Generation: 1},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: IngressClassName, Listeners: []gatewayv1.Listener{
			{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType},
			{Name: "foo", Port: 80, Protocol: gatewayv1.HTTPProtocolType, Hostname: ptr.To(gatewayv1.Hostname("*.example.com")),
				AllowedRoutes: from(gatewayv1.NamespacesFromAll, nil)},
			{Name: "sel", Port: 8080, Protocol: gatewayv1.HTTPProtocolType,
				AllowedRoutes: from(gatewayv1.NamespacesFromSelector, &metav1.LabelSelector{MatchLabels: map[string]string{"gateway": "shared"}})},
			{Name: "bad", Port: 8081, Protocol: gatewayv1.HTTPProtocolType, AllowedRoutes: from(gatewayv1.NamespacesFromSelector, nil)},
			{Name: "tls", Port: 443, Protocol: gatewayv1.TLSProtocolType},
		}}}
}

func attachRoute(ns, name string, hosts []gatewayv1.Hostname, refs ...gatewayv1.ParentReference) *gatewayv1.HTTPRoute {
	return &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: refs}, Hostnames: hosts}}
}

// TestAttachedRoutes: a route counts on the listeners its parentRefs name
// (sectionName, port), whose allowedRoutes admit its namespace and whose
// hostname intersects its own; not on listeners not accepted.
func TestAttachedRoutes(t *testing.T) {
	gw := attachGateway()
	infra := gatewayv1.Namespace("infra")
	ref := func(section string, port gatewayv1.PortNumber) gatewayv1.ParentReference {
		r := gatewayv1.ParentReference{Name: "gw", Namespace: &infra}
		if section != "" {
			r.SectionName = ptr.To(gatewayv1.SectionName(section))
		}
		if port != 0 {
			r.Port = &port
		}
		return r
	}
	routes := []*gatewayv1.HTTPRoute{
		// Same namespace, no hostnames: http, foo (All), and not sel
		// (infra is not labelled) nor bad nor tls.
		attachRoute("infra", "all", nil, gatewayv1.ParentReference{Name: "gw"}),
		// A hostname foo's wildcard covers; http has no hostname.
		attachRoute("infra", "bar", []gatewayv1.Hostname{"bar.example.com"}, ref("", 80)),
		// A hostname outside foo's wildcard: http only.
		attachRoute("infra", "other-host", []gatewayv1.Hostname{"example.org"}, ref("", 0)),
		// Another namespace: foo (All) and sel (labelled); not http (Same).
		attachRoute("team", "team", nil, ref("", 0)),
		// sectionName and port narrow it down.
		attachRoute("team", "team-sel", nil, ref("sel", 0)),
		attachRoute("team", "team-port", nil, ref("", 8080)),
		// Not attached: another Gateway, another kind, an unlabelled
		// namespace for sel, a missing listener.
		attachRoute("infra", "other-gw", nil, gatewayv1.ParentReference{Name: "other"}),
		attachRoute("infra", "service", nil, gatewayv1.ParentReference{Name: "gw", Kind: ptr.To(gatewayv1.Kind("Service")), Group: ptr.To(gatewayv1.Group(""))}),
		attachRoute("plain", "plain-sel", nil, ref("sel", 0)),
		attachRoute("infra", "missing", nil, ref("nope", 0)),
		nil,
	}
	nsLabels := map[string]labels.Set{"team": {"gateway": "shared"}, "infra": {}}
	got := AttachedRoutes(gw, []bool{true, true, true, true, false}, routes, nsLabels)
	// http: all, bar, other-host; foo: all, bar, team; sel: team,
	// team-sel, team-port; bad: none; tls: not accepted.
	if want := []int32{3, 3, 3, 0, 0}; !slices.Equal(got, want) {
		t.Errorf("attachedRoutes %v, want %v (http, foo, sel, bad, tls)", got, want)
	}
	// A route's parentRef without namespace means its own namespace.
	if RouteAttaches(gw, 1, attachRoute("team", "implicit", nil, gatewayv1.ParentReference{Name: "gw"}), nsLabels["team"]) {
		t.Error("a parentRef without namespace attached a route of namespace team to a Gateway of infra")
	}
}

// TestIngressReconcileCountsRoutes: the controller writes the listeners'
// attachedRoutes from the HTTPRoutes and namespaces of the cluster.
func TestIngressReconcileCountsRoutes(t *testing.T) {
	ctx := context.Background()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "gw-1", Namespace: "weft-ingress", Labels: map[string]string{"istio": "ingress"}},
		Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
	kube := fake.NewClientset(pod, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team", Labels: map[string]string{"gateway": "shared"}}})
	gw := attachGateway()
	gws := gatewayfake.NewSimpleClientset(
		attachRoute("infra", "all", nil, gatewayv1.ParentReference{Name: "gw"}),
		attachRoute("team", "team", nil, gatewayv1.ParentReference{Name: "gw", Namespace: ptr.To(gatewayv1.Namespace("infra"))}))
	if _, err := gws.GatewayV1().Gateways("infra").Create(ctx, gw, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	inf := gatewayinformers.NewSharedInformerFactory(gws, 0).Gateway().V1().Gateways().Informer()
	if err := inf.GetIndexer().Add(gw); err != nil {
		t.Fatal(err)
	}
	c := &Controller{Kube: kube, Gateway: gws, Gateways: inf, Log: quiet}
	if err := c.Reconcile(ctx, "infra/gw"); err != nil {
		t.Fatal(err)
	}
	got, err := gws.GatewayV1().Gateways("infra").Get(ctx, "gw", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	counts := map[gatewayv1.SectionName]int32{}
	for _, l := range got.Status.Listeners {
		counts[l.Name] = l.AttachedRoutes
	}
	want := map[gatewayv1.SectionName]int32{"http": 1, "foo": 2, "sel": 1, "bad": 0, "tls": 0}
	for name, n := range want {
		if counts[name] != n {
			t.Errorf("listener %s: attachedRoutes %d, want %d (all: %v)", name, counts[name], n, counts)
		}
	}
}
