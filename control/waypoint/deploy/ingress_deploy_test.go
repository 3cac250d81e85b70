package deploy

import (
	"context"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
)

// TestIngressDeployed: a Gateway of class weft without the selector
// annotation gets a ServiceAccount, Deployment and LoadBalancer Service
// "<name>-weft" with its infrastructure labels and annotations, the
// listeners' ports, and RoleBindings for its certificates (in its
// namespace, and where a ReferenceGrant lets its certificateRef point,
// removed with the grant); its address is the Service's; nothing is
// adopted.
func TestIngressDeployed(t *testing.T) {
	ctx := context.Background()
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "apps", Generation: 1, UID: "gw-uid"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: IngressClassName,
			Infrastructure: &gatewayv1.GatewayInfrastructure{Labels: map[gatewayv1.LabelKey]gatewayv1.LabelValue{"team": "a"},
				Annotations: map[gatewayv1.AnnotationKey]gatewayv1.AnnotationValue{"example.com/owner": "a"}},
			Listeners: []gatewayv1.Listener{
				{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType},
				{Name: "alt", Port: 80, Protocol: gatewayv1.HTTPProtocolType, Hostname: ptr.To(gatewayv1.Hostname("a.example.com"))},
				{Name: "https", Port: 443, Protocol: gatewayv1.HTTPSProtocolType, TLS: &gatewayv1.ListenerTLSConfig{
					CertificateRefs: []gatewayv1.SecretObjectReference{{Name: "cert", Namespace: ptr.To(gatewayv1.Namespace("certs"))}}}},
				{Name: "tcp", Port: 9000, Protocol: gatewayv1.TCPProtocolType}}}}
	if !Deployed(gw) || IngressNamespace(gw) != "apps" {
		t.Fatalf("Deployed %v IngressNamespace %q", Deployed(gw), IngressNamespace(gw))
	}
	kube := fake.NewClientset()
	gws := gatewayfake.NewSimpleClientset()
	if _, err := gws.GatewayV1().Gateways("apps").Create(ctx, gw, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	grant := &gatewayv1beta1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "certs", Name: "apps"},
		Spec: gatewayv1beta1.ReferenceGrantSpec{
			From: []gatewayv1beta1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "Gateway", Namespace: "apps"}},
			To:   []gatewayv1beta1.ReferenceGrantTo{{Kind: "Secret"}}}}
	if _, err := gws.GatewayV1beta1().ReferenceGrants("certs").Create(ctx, grant, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	inf := gatewayinformers.NewSharedInformerFactory(gws, 0).Gateway().V1().Gateways().Informer()
	if err := inf.GetIndexer().Add(gw); err != nil {
		t.Fatal(err)
	}
	c := &Controller{Kube: kube, Gateway: gws, Gateways: inf, Log: quiet,
		Config: Config{Image: "waypoint:test", GatewaySecretsRole: "gw-secrets", SecretCheckRole: "gw-check", ControlServiceAccount: "weft-system/weft-control"}}
	if err := c.Reconcile(ctx, "apps/web"); err != nil {
		t.Fatal(err)
	}

	svc, err := kube.CoreV1().Services("apps").Get(ctx, "web-weft", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ports []int32
	for _, p := range svc.Spec.Ports {
		ports = append(ports, p.Port)
		if p.TargetPort.IntVal != p.Port {
			t.Errorf("Service port %d targets %v, want the same port", p.Port, p.TargetPort)
		}
	}
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || !slices.Equal(ports, []int32{80, 443}) || svc.Spec.Selector[LabelGatewayName] != "web" {
		t.Errorf("Service %s ports %v selector %v, want LoadBalancer [80 443] (the served listeners' ports) selecting the gateway's pods", svc.Spec.Type, ports, svc.Spec.Selector)
	}
	dep, err := kube.AppsV1().Deployments("apps").Get(ctx, "web-weft", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for what, m := range map[string]metav1.ObjectMeta{"Service": svc.ObjectMeta, "Deployment": dep.ObjectMeta, "pod": dep.Spec.Template.ObjectMeta} {
		if m.Labels["team"] != "a" || m.Annotations["example.com/owner"] != "a" || m.Labels[LabelAppName] != IngressAppName {
			t.Errorf("%s labels %v annotations %v, want the infrastructure ones and %s=%s", what, m.Labels, m.Annotations, LabelAppName, IngressAppName)
		}
	}
	pod := dep.Spec.Template.Spec
	if args := pod.Containers[0].Args; !slices.Contains(args, "--mode=gateway") || !slices.Contains(args, "--credential-namespaces=certs") {
		t.Errorf("container args %v, want gateway mode reading Secrets of certs too", args)
	}
	if cmd := pod.Containers[0].Command; !slices.Equal(cmd, []string{"weft-gateway"}) {
		t.Errorf("container command %v, want [weft-gateway] (weft-waypoint reads no Secrets)", cmd)
	}
	if pod.ServiceAccountName != "web-weft" || pod.SecurityContext == nil || len(pod.SecurityContext.Sysctls) != 1 {
		t.Errorf("pod service account %q security context %+v", pod.ServiceAccountName, pod.SecurityContext)
	}
	bindings := func() []string {
		list, err := kube.RbacV1().RoleBindings("").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, rb := range list.Items {
			out = append(out, rb.Namespace+"/"+rb.Name+"->"+rb.RoleRef.Name+":"+rb.Subjects[0].Namespace+"/"+rb.Subjects[0].Name)
		}
		slices.Sort(out)
		return out
	}
	want := []string{"apps/web-weft.apps-secret-check->gw-check:weft-system/weft-control", "apps/web-weft.apps-secrets->gw-secrets:apps/web-weft",
		"certs/web-weft.apps-secret-check->gw-check:weft-system/weft-control", "certs/web-weft.apps-secrets->gw-secrets:apps/web-weft"}
	if got := bindings(); !slices.Equal(got, want) {
		t.Errorf("RoleBindings %v, want %v", got, want)
	}

	// The load balancer assigns an address: it is the Gateway's.
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "127.112.0.9"}}
	if _, err := kube.CoreV1().Services("apps").UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	ready := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-weft-1", Namespace: "apps", Labels: SelectorLabels(gw)},
		Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
	if _, err := kube.CoreV1().Pods("apps").Create(ctx, ready, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The grant goes: so does the gateway's access to certs.
	if err := gws.GatewayV1beta1().ReferenceGrants("certs").Delete(ctx, "apps", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Reconcile(ctx, "apps/web"); err != nil {
		t.Fatal(err)
	}
	got, _ := gws.GatewayV1().Gateways("apps").Get(ctx, "web", metav1.GetOptions{})
	if a := got.Status.Addresses; len(a) != 1 || a[0].Value != "127.112.0.9" {
		t.Errorf("addresses %+v, want the Service's load balancer address", a)
	}
	if got := bindings(); !slices.Equal(got, want[:2]) {
		t.Errorf("RoleBindings after the grant went %v, want %v", got, want[:2])
	}
	// Deleted: the bindings outside its namespace go (the others with it).
	if err := inf.GetIndexer().Delete(gw); err != nil {
		t.Fatal(err)
	}
	if err := c.Reconcile(ctx, "apps/web"); err != nil {
		t.Fatal(err)
	}
}

// TestIngressDeployedRefusesAdoption: a Deployment named like the gateway
// that the Gateway does not control is left alone, and the status says so.
func TestIngressDeployedRefusesAdoption(t *testing.T) {
	ctx := context.Background()
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "apps", Generation: 1, UID: "gw-uid"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: IngressClassName,
			Listeners: []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}}}}
	foreign := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web-weft", Namespace: "apps"}}
	kube := fake.NewClientset(foreign)
	gws := gatewayfake.NewSimpleClientset()
	if _, err := gws.GatewayV1().Gateways("apps").Create(ctx, gw, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	inf := gatewayinformers.NewSharedInformerFactory(gws, 0).Gateway().V1().Gateways().Informer()
	if err := inf.GetIndexer().Add(gw); err != nil {
		t.Fatal(err)
	}
	c := &Controller{Kube: kube, Gateway: gws, Gateways: inf, Log: quiet, Config: Config{Image: "waypoint:test"}}
	if err := c.Reconcile(ctx, "apps/web"); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().Services("apps").Get(ctx, "web-weft", metav1.GetOptions{}); err == nil {
		t.Error("Service created next to a Deployment the Gateway does not control")
	}
	got, _ := gws.GatewayV1().Gateways("apps").Get(ctx, "web", metav1.GetOptions{})
	if p := listenerCondition2(got.Status, "http", "Programmed"); p.Status != metav1.ConditionFalse || !strings.Contains(p.Message, "not adopted") {
		t.Errorf("listener Programmed %+v, want False saying the Deployment is not adopted", p)
	}
}
