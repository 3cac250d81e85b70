package deploy

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
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

// listenerCond is condition typ of listener name as status/reason/generation.
func listenerCond(st gatewayv1.GatewayStatus, name gatewayv1.SectionName, typ gatewayv1.ListenerConditionType) string {
	for _, l := range st.Listeners {
		if l.Name == name {
			return cond(gatewayv1.GatewayStatus{Conditions: l.Conditions}, gatewayv1.GatewayConditionType(typ))
		}
	}
	return "no listener"
}

func listenerKinds(st gatewayv1.GatewayStatus, name gatewayv1.SectionName) string {
	for _, l := range st.Listeners {
		if l.Name == name {
			var kinds []string
			for _, k := range l.SupportedKinds {
				kinds = append(kinds, kindString(k))
			}
			return strings.Join(kinds, ",")
		}
	}
	return "no listener"
}

// TestIngressListenerStatus: every listener gets Accepted, Programmed and
// ResolvedRefs; a listener the translation ignores (or whose namespace
// selector is missing or invalid) is not accepted, and
// the Gateway says which listeners it does not serve.
func TestIngressListenerStatus(t *testing.T) {
	now := time.Unix(1700000000, 0)
	http := gatewayv1.Listener{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}
	https := gatewayv1.Listener{Name: "https", Port: 443, Protocol: gatewayv1.HTTPSProtocolType}
	selector := gatewayv1.Listener{Name: "sel", Port: 8080, Protocol: gatewayv1.HTTPProtocolType, AllowedRoutes: &gatewayv1.AllowedRoutes{
		Namespaces: &gatewayv1.RouteNamespaces{From: ptr.To(gatewayv1.NamespacesFromSelector)}}}
	// With a selector: the routes of the namespaces it selects attach
	// (control/waypoint); without one (or a bad one) none can.
	selected := gatewayv1.Listener{Name: "selected", Port: 8082, Protocol: gatewayv1.HTTPProtocolType, AllowedRoutes: &gatewayv1.AllowedRoutes{
		Namespaces: &gatewayv1.RouteNamespaces{From: ptr.To(gatewayv1.NamespacesFromSelector),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"gateway": "shared"}}}}}
	badSelector := gatewayv1.Listener{Name: "bad", Port: 8083, Protocol: gatewayv1.HTTPProtocolType, AllowedRoutes: &gatewayv1.AllowedRoutes{
		Namespaces: &gatewayv1.RouteNamespaces{From: ptr.To(gatewayv1.NamespacesFromSelector),
			Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "gateway", Operator: "Near"}}}}}}
	grpcKinds := gatewayv1.Listener{Name: "kinds", Port: 8081, Protocol: gatewayv1.HTTPProtocolType, AllowedRoutes: &gatewayv1.AllowedRoutes{
		Kinds: []gatewayv1.RouteGroupKind{{Kind: "GRPCRoute"}, {Kind: "HTTPRoute"}}}}
	type want struct{ accepted, programmed, resolvedRefs, kinds string }
	for _, c := range []struct {
		name                 string
		annotations          map[string]string
		listeners            []gatewayv1.Listener
		ready                int
		accepted, programmed string
		programmedMsg        string // a substring of the Gateway's Programmed message
		want                 map[gatewayv1.SectionName]want
	}{
		{"HTTP only", nil, []gatewayv1.Listener{http}, 1, "True/Accepted/3", "True/Programmed/3", "served by 1",
			map[gatewayv1.SectionName]want{"http": {"True/Accepted/3", "True/Programmed/3", "True/ResolvedRefs/3", "HTTPRoute"}}},
		{"HTTP and HTTPS", nil, []gatewayv1.Listener{http, https}, 1, "True/ListenersNotValid/3", "True/Programmed/3", "listeners not served: https",
			map[gatewayv1.SectionName]want{
				"http":  {"True/Accepted/3", "True/Programmed/3", "True/ResolvedRefs/3", "HTTPRoute"},
				"https": {"False/UnsupportedProtocol/3", "False/Invalid/3", "Unknown/UnsupportedProtocol/3", ""}}},
		{"HTTPS only", nil, []gatewayv1.Listener{https}, 1, "False/ListenersNotValid/3", "False/Invalid/3", "no listener can be served",
			map[gatewayv1.SectionName]want{"https": {"False/UnsupportedProtocol/3", "False/Invalid/3", "Unknown/UnsupportedProtocol/3", ""}}},
		{"no ready pod", nil, []gatewayv1.Listener{http, https}, 0, "True/ListenersNotValid/3", "False/Pending/3", "no ready gateway pod",
			map[gatewayv1.SectionName]want{
				"http":  {"True/Accepted/3", "False/Pending/3", "True/ResolvedRefs/3", "HTTPRoute"},
				"https": {"False/UnsupportedProtocol/3", "False/Invalid/3", "Unknown/UnsupportedProtocol/3", ""}}},
		{"namespace selector, unsupported route kind", nil, []gatewayv1.Listener{http, selector, grpcKinds}, 1, "True/ListenersNotValid/3", "True/Programmed/3", "listeners not served: sel",
			map[gatewayv1.SectionName]want{
				"http":  {"True/Accepted/3", "True/Programmed/3", "True/ResolvedRefs/3", "HTTPRoute"},
				"sel":   {"False/UnsupportedValue/3", "False/Invalid/3", "True/ResolvedRefs/3", "HTTPRoute"},
				"kinds": {"True/Accepted/3", "True/Programmed/3", "False/InvalidRouteKinds/3", "HTTPRoute"}}},
		{"namespace selectors", nil, []gatewayv1.Listener{http, selected, badSelector}, 1, "True/ListenersNotValid/3", "True/Programmed/3", "listeners not served: bad",
			map[gatewayv1.SectionName]want{
				"selected": {"True/Accepted/3", "True/Programmed/3", "True/ResolvedRefs/3", "HTTPRoute"},
				"bad":      {"False/UnsupportedValue/3", "False/Invalid/3", "True/ResolvedRefs/3", "HTTPRoute"}}},
		{"bad selector annotation", map[string]string{AnnotationGatewaySelector: "not a selector"}, []gatewayv1.Listener{http}, 1,
			"False/InvalidParameters/3", "False/Invalid/3", "not accepted",
			map[gatewayv1.SectionName]want{"http": {"False/Invalid/3", "False/Invalid/3", "True/ResolvedRefs/3", "HTTPRoute"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "bookinfo", Namespace: "default", Generation: 3, Annotations: c.annotations},
				Spec: gatewayv1.GatewaySpec{GatewayClassName: IngressClassName, Listeners: c.listeners}}
			st := IngressStatus(gw, c.ready, now)
			if a, p := cond(st, gatewayv1.GatewayConditionAccepted), cond(st, gatewayv1.GatewayConditionProgrammed); a != c.accepted || p != c.programmed {
				t.Errorf("Accepted %s Programmed %s, want %s %s", a, p, c.accepted, c.programmed)
			}
			if p := meta.FindStatusCondition(st.Conditions, "Programmed"); p == nil || !strings.Contains(p.Message, c.programmedMsg) {
				t.Errorf("Programmed %+v, want a message with %q", p, c.programmedMsg)
			}
			if len(st.Listeners) != len(c.listeners) {
				t.Fatalf("listener statuses %+v, want one per listener", st.Listeners)
			}
			for name, w := range c.want {
				got := want{listenerCond(st, name, gatewayv1.ListenerConditionAccepted), listenerCond(st, name, gatewayv1.ListenerConditionProgrammed),
					listenerCond(st, name, gatewayv1.ListenerConditionResolvedRefs), listenerKinds(st, name)}
				if got != w {
					t.Errorf("listener %s: %+v, want %+v", name, got, w)
				}
			}

			// Recomputed from what was written: no change, timestamps kept.
			gw.Status = st
			again := IngressStatus(gw, c.ready, now.Add(time.Hour))
			if !StatusEqual(st, again) {
				t.Errorf("status not stable:\n%+v\n%+v", st, again)
			}
			if l := again.Listeners[0].Conditions[0]; !l.LastTransitionTime.Time.Equal(now) {
				t.Errorf("listener condition %s moved to %v", l.Type, l.LastTransitionTime)
			}
		})
	}
}

// TestIngressReconcileWithFakeClients: the controller writes an ingress
// Gateway's listener statuses, and writes again only on change.
func TestIngressReconcileWithFakeClients(t *testing.T) {
	ctx := context.Background()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "gw-1", Namespace: "istio-ingress", Labels: map[string]string{"istio": "ingress"}},
		Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "gw", Namespace: "istio-ingress"},
		Spec:   corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"istio": "ingress"}, ClusterIP: "10.96.0.20"},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "127.112.0.1"}}}}}
	kube := fake.NewClientset(pod, svc)
	gws := gatewayfake.NewSimpleClientset()
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "bookinfo", Namespace: "default", Generation: 3},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: IngressClassName, Listeners: []gatewayv1.Listener{
			{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType},
			{Name: "https", Port: 443, Protocol: gatewayv1.HTTPSProtocolType}}}}
	if _, err := gws.GatewayV1().Gateways("default").Create(ctx, gw, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The informer is not started: the test puts what it would see in its cache.
	inf := gatewayinformers.NewSharedInformerFactory(gws, 0).Gateway().V1().Gateways().Informer()
	c := &Controller{Kube: kube, Gateway: gws, Gateways: inf, Log: quiet}
	reconcile := func() *gatewayv1.Gateway {
		t.Helper()
		cur, err := gws.GatewayV1().Gateways("default").Get(ctx, "bookinfo", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := inf.GetIndexer().Update(cur); err != nil {
			t.Fatal(err)
		}
		if err := c.Reconcile(ctx, "default/bookinfo"); err != nil {
			t.Fatal(err)
		}
		got, _ := gws.GatewayV1().Gateways("default").Get(ctx, "bookinfo", metav1.GetOptions{})
		return got
	}

	got := reconcile()
	if a, p := cond(got.Status, "Accepted"), cond(got.Status, "Programmed"); a != "True/ListenersNotValid/3" || p != "True/Programmed/3" {
		t.Errorf("Accepted %s Programmed %s", a, p)
	}
	if a, p := listenerCond(got.Status, "http", "Accepted"), listenerCond(got.Status, "http", "Programmed"); a != "True/Accepted/3" || p != "True/Programmed/3" {
		t.Errorf("http listener: Accepted %s Programmed %s", a, p)
	}
	if a, p := listenerCond(got.Status, "https", "Accepted"), listenerCond(got.Status, "https", "Programmed"); a != "False/UnsupportedProtocol/3" || p != "False/Invalid/3" {
		t.Errorf("https listener: Accepted %s Programmed %s", a, p)
	}
	if a := got.Status.Addresses; len(a) != 1 || a[0].Value != "127.112.0.1" {
		t.Errorf("addresses %+v, want the gateway Service's load balancer address", a)
	}

	reconcile()
	updates := 0
	for _, a := range gws.Actions() {
		if a.GetVerb() == "update" && a.GetSubresource() == "status" {
			updates++
		}
	}
	if updates != 1 {
		t.Errorf("%d status updates, want 1 (the second reconcile changes nothing)", updates)
	}
}

// TestIngressAddresses: an ingress Gateway's addresses are those of the
// Services selecting its ready pods: a LoadBalancer's ingress (none until
// assigned), another Service's ClusterIPs; not Services in other
// namespaces or selecting other pods, nor headless ones.
func TestIngressAddresses(t *testing.T) {
	pod := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "gw-1", Namespace: "weft-ingress", Labels: map[string]string{"istio": "ingress", "app": "weft-ingress"}}}
	svc := func(ns, name string, typ corev1.ServiceType, sel map[string]string, clusterIP string, lb ...corev1.LoadBalancerIngress) corev1.Service {
		return corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec:   corev1.ServiceSpec{Type: typ, Selector: sel, ClusterIP: clusterIP},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: lb}}}
	}
	gwSel := map[string]string{"istio": "ingress"}
	str := func(as []gatewayv1.GatewayStatusAddress) string {
		var out []string
		for _, a := range as {
			out = append(out, string(*a.Type)+"="+a.Value)
		}
		return strings.Join(out, ",")
	}
	for _, c := range []struct {
		name string
		pods []corev1.Pod
		svcs []corev1.Service
		want string
	}{
		{"load balancer assigned", []corev1.Pod{pod}, []corev1.Service{
			svc("weft-ingress", "weft-ingress", corev1.ServiceTypeLoadBalancer, gwSel, "10.96.0.20", corev1.LoadBalancerIngress{IP: "127.112.0.1"}, corev1.LoadBalancerIngress{Hostname: "gw.example.com"})},
			"Hostname=gw.example.com,IPAddress=127.112.0.1"},
		{"load balancer pending: no address", []corev1.Pod{pod}, []corev1.Service{
			svc("weft-ingress", "weft-ingress", corev1.ServiceTypeLoadBalancer, gwSel, "10.96.0.20")}, ""},
		{"ClusterIP Service, two selecting the same pods", []corev1.Pod{pod}, []corev1.Service{
			svc("weft-ingress", "b", corev1.ServiceTypeClusterIP, gwSel, "10.96.0.21"),
			svc("weft-ingress", "a", corev1.ServiceTypeNodePort, map[string]string{"app": "weft-ingress"}, "10.96.0.20"),
			svc("weft-ingress", "c", corev1.ServiceTypeClusterIP, gwSel, "10.96.0.20")},
			"IPAddress=10.96.0.20,IPAddress=10.96.0.21"},
		{"other namespace, other pods, headless, no selector", []corev1.Pod{pod}, []corev1.Service{
			svc("default", "elsewhere", corev1.ServiceTypeClusterIP, gwSel, "10.96.0.30"),
			svc("weft-ingress", "other", corev1.ServiceTypeClusterIP, map[string]string{"istio": "egress"}, "10.96.0.31"),
			svc("weft-ingress", "headless", corev1.ServiceTypeClusterIP, gwSel, corev1.ClusterIPNone),
			svc("weft-ingress", "manual", corev1.ServiceTypeClusterIP, nil, "10.96.0.32")}, ""},
		{"no ready pod", nil, []corev1.Service{
			svc("weft-ingress", "weft-ingress", corev1.ServiceTypeLoadBalancer, gwSel, "10.96.0.20", corev1.LoadBalancerIngress{IP: "127.112.0.1"})}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := str(IngressAddresses(c.pods, c.svcs)); got != c.want {
				t.Errorf("addresses %q, want %q", got, c.want)
			}
		})
	}
}
