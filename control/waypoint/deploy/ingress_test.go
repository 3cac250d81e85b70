package deploy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/weft-mesh/weft/pkg/testpki"
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
		{"deployed, pod ready", nil, 1, metav1.ConditionTrue, metav1.ConditionTrue, gatewayv1.GatewayReasonAccepted, gatewayv1.GatewayReasonProgrammed},
		{"deployed, no ready pod", nil, 0, metav1.ConditionTrue, metav1.ConditionFalse, gatewayv1.GatewayReasonAccepted, gatewayv1.GatewayReasonPending},
		{"custom selector", map[string]string{AnnotationGatewaySelector: "app=edge,tier=public"}, 2, metav1.ConditionTrue, metav1.ConditionTrue, gatewayv1.GatewayReasonAccepted, gatewayv1.GatewayReasonProgrammed},
		{"bad selector", map[string]string{AnnotationGatewaySelector: "not a selector"}, 1, metav1.ConditionFalse, metav1.ConditionFalse, gatewayv1.GatewayReasonInvalidParameters, gatewayv1.GatewayReasonInvalid},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := gw(c.annotations)
			if !IsIngress(g) || IsWaypoint(g) {
				t.Fatalf("class %s: IsIngress %v IsWaypoint %v", g.Spec.GatewayClassName, IsIngress(g), IsWaypoint(g))
			}
			st := IngressStatus(g, IngressObserved{ReadyPods: c.ready}, now)
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

// TestIngressParametersRefNotAccepted: Weft's gateways take no parameters
// object, so a Gateway naming one is not accepted (InvalidParameters, as
// conformance GatewayInvalidParametersRef wants) and not served.
func TestIngressParametersRefNotAccepted(t *testing.T) {
	g := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "gw", Namespace: "default", Generation: 2},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: IngressClassName, Infrastructure: &gatewayv1.GatewayInfrastructure{
			ParametersRef: &gatewayv1.LocalParametersReference{Group: "invalid.io", Kind: "InvalidParameters", Name: "invalid"}}}}
	if _, err := IngressSelector(g); err == nil || !strings.Contains(err.Error(), "parametersRef") {
		t.Fatalf("selector error %v, want one naming the parametersRef", err)
	}
	st := IngressStatus(g, IngressObserved{ReadyPods: 1}, time.Unix(1700000000, 0))
	if got := cond(st, gatewayv1.GatewayConditionAccepted); got != "False/InvalidParameters/2" {
		t.Errorf("Accepted %s, want False/InvalidParameters/2", got)
	}
	if got := cond(st, gatewayv1.GatewayConditionProgrammed); got != "False/Invalid/2" {
		t.Errorf("Programmed %s, want False/Invalid/2", got)
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
// selector is missing or invalid) is not accepted, and the Gateway says
// which listeners it does not serve and is not Programmed.
func TestIngressListenerStatus(t *testing.T) {
	now := time.Unix(1700000000, 0)
	http := gatewayv1.Listener{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}
	tls := gatewayv1.Listener{Name: "tls", Port: 443, Protocol: gatewayv1.TLSProtocolType,
		TLS: &gatewayv1.ListenerTLSConfig{Mode: ptr.To(gatewayv1.TLSModePassthrough)}}
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
		{"HTTP and TLS", nil, []gatewayv1.Listener{http, tls}, 1, "True/ListenersNotValid/3", "False/Invalid/3", "listeners not served: tls",
			map[gatewayv1.SectionName]want{
				"http": {"True/Accepted/3", "True/Programmed/3", "True/ResolvedRefs/3", "HTTPRoute"},
				"tls":  {"False/UnsupportedProtocol/3", "False/Invalid/3", "Unknown/UnsupportedProtocol/3", ""}}},
		{"TLS only", nil, []gatewayv1.Listener{tls}, 1, "False/ListenersNotValid/3", "False/Invalid/3", "no listener can be served",
			map[gatewayv1.SectionName]want{"tls": {"False/UnsupportedProtocol/3", "False/Invalid/3", "Unknown/UnsupportedProtocol/3", ""}}},
		{"no ready pod", nil, []gatewayv1.Listener{http, tls}, 0, "True/ListenersNotValid/3", "False/Pending/3", "no ready pod of Deployment bookinfo-weft",
			map[gatewayv1.SectionName]want{
				"http": {"True/Accepted/3", "False/Pending/3", "True/ResolvedRefs/3", "HTTPRoute"},
				"tls":  {"False/UnsupportedProtocol/3", "False/Invalid/3", "Unknown/UnsupportedProtocol/3", ""}}},
		{"namespace selector, unsupported route kind", nil, []gatewayv1.Listener{http, selector, grpcKinds}, 1, "True/ListenersNotValid/3", "False/Invalid/3", "listeners not served: sel",
			map[gatewayv1.SectionName]want{
				"http":  {"True/Accepted/3", "True/Programmed/3", "True/ResolvedRefs/3", "HTTPRoute"},
				"sel":   {"False/UnsupportedValue/3", "False/Invalid/3", "True/ResolvedRefs/3", "HTTPRoute"},
				"kinds": {"True/Accepted/3", "True/Programmed/3", "False/InvalidRouteKinds/3", "HTTPRoute"}}},
		{"namespace selectors", nil, []gatewayv1.Listener{http, selected, badSelector}, 1, "True/ListenersNotValid/3", "False/Invalid/3", "listeners not served: bad",
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
			st := IngressStatus(gw, IngressObserved{ReadyPods: c.ready}, now)
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
			again := IngressStatus(gw, IngressObserved{ReadyPods: c.ready}, now.Add(time.Hour))
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
// Gateway's listener statuses, and writes again only on change. HTTPS
// listeners: a certificateRef to the gateway pods' namespace resolves
// only once a ReferenceGrant there allows it (RefNotPermitted before); a
// malformed Secret, a missing one and one outside the namespaces the
// gateway pods read (theirs and those of their annotation
// weft.io/credential-namespaces) are InvalidCertificateRef; the Gateway
// is not Programmed while one is.
func TestIngressReconcileWithFakeClients(t *testing.T) {
	ctx := context.Background()
	pki := testpki.New(t)
	crt, key := pki.Issue(t, "bookinfo.example.com")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "gw-1", Namespace: "istio-ingress", Labels: map[string]string{"istio": "ingress"}},
		Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "gw", Namespace: "istio-ingress"},
		Spec:   corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"istio": "ingress"}, ClusterIP: "10.96.0.20"},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "127.112.0.1"}}}}}
	secret := func(ns, name string, crt, key []byte) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key}}
	}
	kube := fake.NewClientset(pod, svc, secret("istio-ingress", "good", crt, key), secret("istio-ingress", "malformed", []byte("not PEM"), key),
		secret("default", "local", crt, key))
	gws := gatewayfake.NewSimpleClientset()
	https := func(name string, port gatewayv1.PortNumber, ns, secret string) gatewayv1.Listener {
		return gatewayv1.Listener{Name: gatewayv1.SectionName(name), Port: port, Protocol: gatewayv1.HTTPSProtocolType,
			Hostname: ptr.To(gatewayv1.Hostname(name + ".example.com")), TLS: &gatewayv1.ListenerTLSConfig{
				CertificateRefs: []gatewayv1.SecretObjectReference{{Name: gatewayv1.ObjectName(secret), Namespace: ptr.To(gatewayv1.Namespace(ns))}}}}
	}
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "bookinfo", Namespace: "default", Generation: 3,
		Annotations: map[string]string{AnnotationGatewaySelector: "istio=ingress"}},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: IngressClassName, Listeners: []gatewayv1.Listener{
			{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType},
			https("https", 443, "istio-ingress", "good"), https("malformed", 443, "istio-ingress", "malformed"),
			https("missing", 443, "istio-ingress", "gone"), https("local", 443, "default", "local")}}}
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
	check := func(st gatewayv1.GatewayStatus, listener gatewayv1.SectionName, accepted, programmed, resolvedRefs string) {
		t.Helper()
		got := [3]string{listenerCond(st, listener, "Accepted"), listenerCond(st, listener, "Programmed"), listenerCond(st, listener, "ResolvedRefs")}
		if got != [3]string{accepted, programmed, resolvedRefs} {
			t.Errorf("listener %s: Accepted, Programmed, ResolvedRefs %v, want %s %s %s", listener, got, accepted, programmed, resolvedRefs)
		}
	}

	got := reconcile()
	if a, p := cond(got.Status, "Accepted"), cond(got.Status, "Programmed"); a != "True/ListenersNotValid/3" || p != "False/Invalid/3" {
		t.Errorf("Accepted %s Programmed %s, want True/ListenersNotValid False/Invalid", a, p)
	}
	check(got.Status, "http", "True/Accepted/3", "True/Programmed/3", "True/ResolvedRefs/3")
	check(got.Status, "https", "True/Accepted/3", "False/Invalid/3", "False/RefNotPermitted/3")
	check(got.Status, "malformed", "True/Accepted/3", "False/Invalid/3", "False/RefNotPermitted/3")
	check(got.Status, "local", "True/Accepted/3", "False/Invalid/3", "False/InvalidCertificateRef/3")
	if c := listenerCondition2(got.Status, "local", "ResolvedRefs"); !strings.Contains(c.Message, "credentialNamespaces (istio-ingress)") {
		t.Errorf("local listener: ResolvedRefs message %q, want it to name the gateway pods' namespace", c.Message)
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

	// A ReferenceGrant in istio-ingress for Gateways of default.
	grant := &gatewayv1beta1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-ingress", Name: "certs"},
		Spec: gatewayv1beta1.ReferenceGrantSpec{
			From: []gatewayv1beta1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "Gateway", Namespace: "default"}},
			To:   []gatewayv1beta1.ReferenceGrantTo{{Kind: "Secret"}}}}
	if _, err := gws.GatewayV1beta1().ReferenceGrants("istio-ingress").Create(ctx, grant, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got = reconcile()
	check(got.Status, "https", "True/Accepted/3", "True/Programmed/3", "True/ResolvedRefs/3")
	check(got.Status, "malformed", "True/Accepted/3", "False/Invalid/3", "False/InvalidCertificateRef/3")
	check(got.Status, "missing", "True/Accepted/3", "False/Invalid/3", "False/InvalidCertificateRef/3")
	if c := listenerCondition2(got.Status, "missing", "ResolvedRefs"); !strings.Contains(c.Message, "Secret istio-ingress/gone not found") {
		t.Errorf("missing listener: ResolvedRefs message %q", c.Message)
	}
	if p := cond(got.Status, "Programmed"); p != "False/Invalid/3" {
		t.Errorf("Programmed %s with invalid listeners, want False/Invalid", p)
	}

	// The gateway pods also read Secrets of default (charts/gateway
	// credentialNamespaces, told by the pod annotation): the Gateway's own
	// Secret resolves, without a grant.
	pod.Annotations = map[string]string{AnnotationCredentialNamespaces: "default, other"}
	if _, err := kube.CoreV1().Pods("istio-ingress").Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	got = reconcile()
	check(got.Status, "local", "True/Accepted/3", "True/Programmed/3", "True/ResolvedRefs/3")
}

// listenerCondition2 is condition typ of listener name (zero when none).
func listenerCondition2(st gatewayv1.GatewayStatus, name gatewayv1.SectionName, typ string) metav1.Condition {
	for _, l := range st.Listeners {
		if l.Name == name {
			if c := meta.FindStatusCondition(l.Conditions, typ); c != nil {
				return *c
			}
		}
	}
	return metav1.Condition{}
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

// TestIngressHTTPSListenerStatus: HTTPS listeners are accepted unless a
// TLS setting is not supported (UnsupportedValue); their certificateRef
// decides ResolvedRefs (RefNotPermitted without a ReferenceGrant,
// InvalidCertificateRef for a kind that is not a Secret or a Secret that
// cannot be served) and, when it does not resolve, Programmed=False;
// HTTP and HTTPS listeners on one port are Conflicted (ProtocolConflict)
// and not accepted; the others say NoConflicts.
func TestIngressHTTPSListenerStatus(t *testing.T) {
	now := time.Unix(1700000000, 0)
	cert := func(ns, name string) gatewayv1.SecretObjectReference {
		return gatewayv1.SecretObjectReference{Name: gatewayv1.ObjectName(name), Namespace: ptr.To(gatewayv1.Namespace(ns))}
	}
	https := func(name string, port gatewayv1.PortNumber, tls *gatewayv1.ListenerTLSConfig) gatewayv1.Listener {
		return gatewayv1.Listener{Name: gatewayv1.SectionName(name), Port: port, Protocol: gatewayv1.HTTPSProtocolType,
			Hostname: ptr.To(gatewayv1.Hostname(name + ".example.com")), TLS: tls}
	}
	refs := func(r ...gatewayv1.SecretObjectReference) *gatewayv1.ListenerTLSConfig {
		return &gatewayv1.ListenerTLSConfig{CertificateRefs: r}
	}
	configMap := cert("apps", "cm")
	configMap.Kind = ptr.To(gatewayv1.Kind("ConfigMap"))
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "apps", Generation: 2,
		Annotations: map[string]string{AnnotationGatewaySelector: "istio=ingress"}},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: IngressClassName, Listeners: []gatewayv1.Listener{
			https("ok", 443, refs(cert("weft-ingress", "web"))),
			https("same-ns", 443, refs(cert("apps", "local"))),
			https("no-grant", 443, refs(cert("certs", "web"))),
			https("kind", 443, refs(configMap)),
			https("missing", 443, refs(cert("weft-ingress", "gone"))),
			https("two", 443, refs(cert("weft-ingress", "web"), cert("weft-ingress", "web2"))),
			https("options", 443, &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{cert("weft-ingress", "web")},
				Options: map[gatewayv1.AnnotationKey]gatewayv1.AnnotationValue{"example.com/min-version": "1.3"}}),
			https("passthrough", 443, &gatewayv1.ListenerTLSConfig{Mode: ptr.To(gatewayv1.TLSModePassthrough)}),
			https("conflict-tls", 8443, refs(cert("weft-ingress", "web"))),
			{Name: "conflict-plain", Port: 8443, Protocol: gatewayv1.HTTPProtocolType},
		}}}
	grant := &gatewayv1beta1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "weft-ingress", Name: "apps-certs"},
		Spec: gatewayv1beta1.ReferenceGrantSpec{
			From: []gatewayv1beta1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "Gateway", Namespace: "apps"}},
			To:   []gatewayv1beta1.ReferenceGrantTo{{Kind: "Secret"}}}}
	obs := IngressObserved{ReadyPods: 1, Grants: []*gatewayv1beta1.ReferenceGrant{grant}, Secrets: map[SecretRef]error{
		{Namespace: "weft-ingress", Name: "gone"}: errors.New("certificate Secret weft-ingress/gone not found"),
		{Namespace: "apps", Name: "local"}:        errors.New("certificate Secret apps/local: the gateway pods read certificates from their own namespace (weft-ingress) only"),
	}}
	st := IngressStatus(gw, obs, now)
	for name, want := range map[gatewayv1.SectionName][4]string{
		"ok":             {"True/Accepted/2", "True/Programmed/2", "True/ResolvedRefs/2", "False/NoConflicts/2"},
		"same-ns":        {"True/Accepted/2", "False/Invalid/2", "False/InvalidCertificateRef/2", "False/NoConflicts/2"},
		"no-grant":       {"True/Accepted/2", "False/Invalid/2", "False/RefNotPermitted/2", "False/NoConflicts/2"},
		"kind":           {"True/Accepted/2", "False/Invalid/2", "False/InvalidCertificateRef/2", "False/NoConflicts/2"},
		"missing":        {"True/Accepted/2", "False/Invalid/2", "False/InvalidCertificateRef/2", "False/NoConflicts/2"},
		"two":            {"False/UnsupportedValue/2", "False/Invalid/2", "True/ResolvedRefs/2", "False/NoConflicts/2"},
		"options":        {"False/UnsupportedValue/2", "False/Invalid/2", "True/ResolvedRefs/2", "False/NoConflicts/2"},
		"passthrough":    {"False/UnsupportedValue/2", "False/Invalid/2", "True/ResolvedRefs/2", "False/NoConflicts/2"},
		"conflict-tls":   {"False/PortUnavailable/2", "False/Invalid/2", "True/ResolvedRefs/2", "True/ProtocolConflict/2"},
		"conflict-plain": {"False/PortUnavailable/2", "False/Invalid/2", "True/ResolvedRefs/2", "True/ProtocolConflict/2"},
	} {
		got := [4]string{listenerCond(st, name, "Accepted"), listenerCond(st, name, "Programmed"), listenerCond(st, name, "ResolvedRefs"),
			listenerCond(st, name, "Conflicted")}
		if got != want {
			t.Errorf("listener %s: Accepted, Programmed, ResolvedRefs, Conflicted %v, want %v", name, got, want)
		}
		if k := listenerKinds(st, name); k != "HTTPRoute" {
			t.Errorf("listener %s: supportedKinds %s, want HTTPRoute", name, k)
		}
	}
	if a, p := cond(st, gatewayv1.GatewayConditionAccepted), cond(st, gatewayv1.GatewayConditionProgrammed); a != "True/ListenersNotValid/2" || p != "False/Invalid/2" {
		t.Errorf("Gateway Accepted %s Programmed %s, want True/ListenersNotValid False/Invalid", a, p)
	}
	if p := meta.FindStatusCondition(st.Conditions, "Programmed"); !strings.Contains(p.Message, "missing (certificate Secret weft-ingress/gone not found)") {
		t.Errorf("Programmed message %q, want it to name the listeners not served and why", p.Message)
	}
}
