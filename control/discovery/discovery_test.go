package discovery

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	fakediscovery "k8s.io/client-go/discovery/fake"
	fakedynamic "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
)

// TestMain turns off client-go's streaming watch list before any informer
// reads the setting: Istio's fake clientset cannot serve it, and its
// generated informers do not tell the reflector so (Gateway API's do).
func TestMain(m *testing.M) {
	os.Setenv("KUBE_FEATURE_WatchListClient", "false")
	os.Exit(m.Run())
}

func meta(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: "default", Name: name} }

// TestOptionalKindsFollowWhatIsServed: a kind is listed only when the API
// server serves it (VirtualServices need DestinationRules served too), and
// each kind that is not served is named in a warning.
func TestOptionalKindsFollowWhatIsServed(t *testing.T) {
	kube := fake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
		&corev1.Service{ObjectMeta: meta("reviews")},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-0", Labels: map[string]string{"topology.kubernetes.io/zone": "zone-a"}},
			Status: corev1.NodeStatus{Images: []corev1.ContainerImage{{Names: []string{"big"}}}}})
	kube.Discovery().(*fakediscovery.FakeDiscovery).Resources = []*metav1.APIResourceList{
		{GroupVersion: "security.istio.io/v1", APIResources: []metav1.APIResource{{Name: "authorizationpolicies"}, {Name: "requestauthentications"}}},
		{GroupVersion: "networking.istio.io/v1", APIResources: []metav1.APIResource{{Name: "virtualservices"}, {Name: "serviceentries"}}},
		{GroupVersion: "gateway.networking.k8s.io/v1", APIResources: []metav1.APIResource{{Name: "gateways"}, {Name: "gatewayclasses"}, {Name: "httproutes"}}},
		{GroupVersion: "telemetry.istio.io/v1", APIResources: []metav1.APIResource{{Name: "telemetries"}}},
		{GroupVersion: "extensions.istio.io/v1alpha1", APIResources: []metav1.APIResource{{Name: "wasmplugins"}}},
	}
	istio := istiofake.NewSimpleClientset(&securityv1.AuthorizationPolicy{ObjectMeta: meta("deny")},
		&securityv1.RequestAuthentication{ObjectMeta: meta("jwt")},
		&networkingv1.VirtualService{ObjectMeta: meta("reviews")}, &networkingv1.ServiceEntry{ObjectMeta: meta("external")},
		&telemetryv1.Telemetry{ObjectMeta: meta("logs")})
	gateway := gatewayfake.NewSimpleClientset(&gatewayv1.HTTPRoute{ObjectMeta: meta("reviews")})
	// Through the API: the fake files a constructor's Gateway under v1beta1
	// (the same Go type), where v1 lists do not see it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := gateway.GatewayV1().Gateways("default").Create(ctx, &gatewayv1.Gateway{ObjectMeta: meta("waypoint")}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Kinds Weft does not implement: WasmPlugin is served, Sidecar is not.
	plugin := &unstructured.Unstructured{}
	plugin.SetAPIVersion("extensions.istio.io/v1alpha1")
	plugin.SetKind("WasmPlugin")
	plugin.SetNamespace("default")
	plugin.SetName("wasm")
	wasm := schema.GroupVersionResource{Group: "extensions.istio.io", Version: "v1alpha1", Resource: "wasmplugins"}
	sidecar := schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "sidecars"}
	dyn := fakedynamic.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		wasm: "WasmPluginList", sidecar: "SidecarList"}, plugin)
	var logs bytes.Buffer // New logs its warnings before it returns; nothing later writes here
	c, err := New(slog.New(slog.NewTextHandler(&logs, nil)), Clients{Kube: kube, Istio: istio, Gateway: gateway, Dynamic: dyn})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"VirtualService and DestinationRule not served", "v1 Gateway not served"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no warning %q in:\n%s", want, logs.String())
		}
	}
	for _, served := range []string{"security.istio.io", "Gateway API", "ServiceEntry", "HTTPRoute"} {
		if strings.Contains(logs.String(), served) {
			t.Errorf("warning about served %s in:\n%s", served, logs.String())
		}
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}

	in, err := c.Inputs()
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Nodes) != 1 || in.Nodes[0].Labels["topology.kubernetes.io/zone"] != "zone-a" || len(in.Nodes[0].Status.Images) != 0 {
		t.Errorf("nodes: %v, want node-0 with its labels and without its status", in.Nodes)
	}
	if len(in.Namespaces) != 1 || len(in.Services) != 1 || len(in.AuthorizationPolicies) != 1 ||
		len(in.Gateways) != 1 || len(in.ServiceEntries) != 1 {
		t.Errorf("inputs: %d namespaces, %d services, %d policies, %d gateways, %d service entries; want one of each",
			len(in.Namespaces), len(in.Services), len(in.AuthorizationPolicies), len(in.Gateways), len(in.ServiceEntries))
	}
	traffic, err := c.TrafficInputs()
	if err != nil {
		t.Fatal(err)
	}
	if len(traffic.VirtualServices) != 0 || len(traffic.HTTPRoutes) != 1 || len(traffic.RequestAuthentications) != 1 || len(traffic.Telemetries) != 1 {
		t.Errorf("traffic: %d virtual services (DestinationRules not served: want 0), %d HTTPRoutes, %d RequestAuthentications, %d Telemetries (want 1)",
			len(traffic.VirtualServices), len(traffic.HTTPRoutes), len(traffic.RequestAuthentications), len(traffic.Telemetries))
	}
	if c.Gateways() == nil {
		t.Error("Gateways() is nil although Gateways are served")
	}
	only, err := c.StatusOnly()
	if err != nil {
		t.Fatal(err)
	}
	objs := only.Unsupported
	if got := objs[wasm]; len(got) != 1 || got[0].GetName() != "wasm" {
		t.Errorf("unsupported WasmPlugins: %v, want wasm", got)
	}
	if _, ok := objs[sidecar]; ok || len(objs) != 1 {
		t.Errorf("unsupported kinds listed: %v, want only WasmPlugin (the only one served)", objs)
	}
}

// TestNodeUpdatesSignalOnLabelChanges: a kubelet's status update is no
// reason to translate again; a changed label (a node's zone) is.
func TestNodeUpdatesSignalOnLabelChanges(t *testing.T) {
	signals := 0
	h := nodeLabelsChanged(cache.ResourceEventHandlerFuncs{AddFunc: func(any) { signals++ }})
	node := func(zone, rv string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", ResourceVersion: rv,
			Labels: map[string]string{"topology.kubernetes.io/zone": zone}}}
	}
	h.UpdateFunc(node("zone-a", "1"), node("zone-a", "2"))
	if signals != 0 {
		t.Fatalf("status-only update signalled %d times", signals)
	}
	h.UpdateFunc(node("zone-a", "2"), node("zone-b", "3"))
	if signals != 1 {
		t.Fatalf("label change signalled %d times, want 1", signals)
	}
}
