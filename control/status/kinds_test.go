package status

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	analysisv1alpha1 "istio.io/api/analysis/v1alpha1"
	metav1alpha1 "istio.io/api/meta/v1alpha1"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	"istio.io/client-go/pkg/clientset/versioned/fake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	fakedynamic "k8s.io/client-go/dynamic/fake"

	"github.com/weft-mesh/weft/control/unsupported"
	"github.com/weft-mesh/weft/control/workload"
)

func objectMeta(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: "default", Name: name, Generation: 2}
}

// TestSyncEveryIstioKind: PeerAuthentications, RequestAuthentications,
// EnvoyFilters, Telemetries, ServiceEntries and Istio Gateways get the condition too, with a validationMessages entry in
// Istio's shape when there is a problem; other tools' entries stay.
func TestSyncEveryIstioKind(t *testing.T) {
	ctx := context.Background()
	foreign := &analysisv1alpha1.AnalysisMessageBase{Type: &analysisv1alpha1.AnalysisMessageBase_Type{Code: "IST0101"}}
	pa := &securityv1.PeerAuthentication{ObjectMeta: objectMeta("strict")}
	pa.Status.ValidationMessages = []*analysisv1alpha1.AnalysisMessageBase{foreign}
	se := &networkingv1.ServiceEntry{ObjectMeta: objectMeta("external")}
	gw := &networkingv1.Gateway{ObjectMeta: objectMeta("ingress")}
	ra := &securityv1.RequestAuthentication{ObjectMeta: objectMeta("jwt")}
	raOK := &securityv1.RequestAuthentication{ObjectMeta: objectMeta("jwt-ok")}
	ef := &networkingv1alpha3.EnvoyFilter{ObjectMeta: objectMeta("lua")}
	efOK := &networkingv1alpha3.EnvoyFilter{ObjectMeta: objectMeta("ratelimit")}
	tel := &telemetryv1.Telemetry{ObjectMeta: objectMeta("tracing")}
	client := fake.NewSimpleClientset(pa, se, ra, raOK, ef, efOK, tel)
	// Through the API: the fake files a constructor's Gateway under
	// another version (the same Go type), where v1 reads do not see it.
	if _, err := client.NetworkingV1().Gateways("default").Create(ctx, gw, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w := &Writer{Client: client, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	problems := []workload.Problem{
		{Kind: "PeerAuthentication", Namespace: "default", Name: "strict", Message: "spec.portLevelMtls: needs a selector; ignored"},
		{Kind: istioGatewayKind, Namespace: "default", Name: "ingress", Message: "spec.selector: empty; ignored"},
		{Kind: "RequestAuthentication", Namespace: "default", Name: "jwt", Message: "spec.selector: waypoints apply only RequestAuthentications with targetRefs; not applied"},
		{Kind: "EnvoyFilter", Namespace: "default", Name: "lua", Message: "spec.configPatches[0]: type lua is not supported; patch not applied"},
		{Kind: "Telemetry", Namespace: "default", Name: "tracing", Message: "spec.metrics: metric overrides are not supported"},
	}
	objs := Objects{PeerAuthentications: []*securityv1.PeerAuthentication{pa}, ServiceEntries: []*networkingv1.ServiceEntry{se},
		IstioGateways: []*networkingv1.Gateway{gw}, RequestAuthentications: []*securityv1.RequestAuthentication{ra, raOK},
		EnvoyFilters: []*networkingv1alpha3.EnvoyFilter{ef, efOK}, Telemetries: []*telemetryv1.Telemetry{tel}}
	w.Sync(ctx, objs, problems)

	gotPA, err1 := client.SecurityV1().PeerAuthentications("default").Get(ctx, "strict", metav1.GetOptions{})
	gotSE, err2 := client.NetworkingV1().ServiceEntries("default").Get(ctx, "external", metav1.GetOptions{})
	gotGW, err3 := client.NetworkingV1().Gateways("default").Get(ctx, "ingress", metav1.GetOptions{})
	gotRA, err4 := client.SecurityV1().RequestAuthentications("default").Get(ctx, "jwt", metav1.GetOptions{})
	gotRAOK, err5 := client.SecurityV1().RequestAuthentications("default").Get(ctx, "jwt-ok", metav1.GetOptions{})
	gotEF, err6 := client.NetworkingV1alpha3().EnvoyFilters("default").Get(ctx, "lua", metav1.GetOptions{})
	gotEFOK, err7 := client.NetworkingV1alpha3().EnvoyFilters("default").Get(ctx, "ratelimit", metav1.GetOptions{})
	gotTel, err8 := client.TelemetryV1().Telemetries("default").Get(ctx, "tracing", metav1.GetOptions{})
	if err := errors.Join(err1, err2, err3, err4, err5, err6, err7, err8); err != nil {
		t.Fatal(err)
	}
	checkStatus(t, "Telemetry", istioStatus(&gotTel.Status), "False", ReasonPartiallyInvalid, CodePartiallyInvalid)
	checkStatus(t, "EnvoyFilter", istioStatus(&gotEF.Status), "False", ReasonPartiallyInvalid, CodePartiallyInvalid)
	checkStatus(t, "EnvoyFilter", istioStatus(&gotEFOK.Status), "True", ReasonAccepted, "")
	if c := find(istioStatus(&gotEF.Status)); !strings.Contains(c.GetMessage(), "lua is not supported") {
		t.Errorf("EnvoyFilter: message %q does not say what is not applied", c.GetMessage())
	}
	checkStatus(t, "RequestAuthentication", istioStatus(&gotRA.Status), "False", ReasonPartiallyInvalid, CodePartiallyInvalid)
	checkStatus(t, "RequestAuthentication", istioStatus(&gotRAOK.Status), "True", ReasonAccepted, "")
	if c := find(istioStatus(&gotRAOK.Status)); c.GetMessage() != forWaypoints {
		t.Errorf("RequestAuthentication: message %q, want %q", c.GetMessage(), forWaypoints)
	}
	checkStatus(t, "PeerAuthentication", istioStatus(&gotPA.Status), "False", ReasonPartiallyInvalid, CodePartiallyInvalid, "IST0101")
	checkStatus(t, "ServiceEntry", Fields{&gotSE.Status.Conditions, &gotSE.Status.ValidationMessages}, "True", ReasonAccepted, "")
	checkStatus(t, "Gateway", istioStatus(&gotGW.Status), "False", ReasonPartiallyInvalid, CodePartiallyInvalid)

	// Fixed: the condition flips and Weft's entry goes, the foreign one stays.
	client.ClearActions()
	w.Sync(ctx, Objects{PeerAuthentications: []*securityv1.PeerAuthentication{gotPA}}, nil)
	gotPA, _ = client.SecurityV1().PeerAuthentications("default").Get(ctx, "strict", metav1.GetOptions{})
	checkStatus(t, "fixed PeerAuthentication", istioStatus(&gotPA.Status), "True", ReasonAccepted, "", "IST0101")
}

// checkStatus wants WeftAccepted with status and reason at the object's
// generation, and exactly the validationMessages codes codes (Weft's,
// if any, first among them; "" for none of Weft's).
func checkStatus(t *testing.T, what string, st Fields, status, reason, weftCode string, others ...string) {
	t.Helper()
	c := find(st)
	if c == nil || c.GetStatus() != status || c.GetReason() != reason || c.GetObservedGeneration() != 2 {
		t.Errorf("%s: condition %v, want %s/%s at generation 2", what, c, status, reason)
	}
	var codes []string
	for _, m := range *st.ValidationMessages {
		codes = append(codes, m.GetType().GetCode())
		if isWeftMessage(m) && (m.GetType().GetName() != reason || m.GetDocumentationUrl() == "") {
			t.Errorf("%s: Weft's validation message %v, want name %s and a documentation URL", what, m, reason)
		}
	}
	want := others
	if weftCode != "" {
		want = append(others, weftCode)
	}
	if len(codes) != len(want) {
		t.Errorf("%s: validationMessages codes %v, want %v", what, codes, want)
	}
	for i := range min(len(codes), len(want)) {
		if codes[i] != want[i] {
			t.Errorf("%s: validationMessages codes %v, want %v", what, codes, want)
		}
	}
}

// TestSyncUnsupported: an object of a kind Weft does not implement gets
// WeftAccepted=False/Unsupported with the kind's message and an ERROR
// entry, once; another controller's condition stays.
func TestSyncUnsupported(t *testing.T) {
	ctx := context.Background()
	r := schema.GroupVersionResource{Group: "extensions.istio.io", Version: "v1alpha1", Resource: "wasmplugins"}
	tel := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
		"metadata": map[string]any{"namespace": "default", "name": "tel", "generation": int64(2)},
		"status":   map[string]any{"conditions": []any{map[string]any{"type": "Other", "status": "True"}}},
	}}
	dyn := fakedynamic.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{r: "WasmPluginList"}, tel)
	w := &Writer{Dynamic: dyn, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	w.Sync(ctx, Objects{Unsupported: map[schema.GroupVersionResource][]*unstructured.Unstructured{r: {tel}}}, nil)

	got, err := dyn.Resource(r).Namespace("default").Get(ctx, "tel", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := parseIstioStatus(t, got)
	kind, _ := unsupported.Of(r)
	checkStatus(t, "WasmPlugin", istioStatus(st), "False", ReasonUnsupported, CodeUnsupported)
	if c := find(istioStatus(st)); c.GetMessage() != kind.Message {
		t.Errorf("message %q, want %q", c.GetMessage(), kind.Message)
	}
	if m := st.ValidationMessages[0]; m.GetLevel() != analysisv1alpha1.AnalysisMessageBase_ERROR {
		t.Errorf("level %v, want ERROR: the object has no effect", m.GetLevel())
	}
	if len(st.Conditions) != 2 || st.Conditions[0].GetType() != "Other" {
		t.Errorf("conditions %v: another controller's condition must stay first", st.Conditions)
	}

	dyn.ClearActions()
	w.Sync(ctx, Objects{Unsupported: map[schema.GroupVersionResource][]*unstructured.Unstructured{r: {got}}}, nil)
	if n := len(dyn.Actions()); n != 0 {
		t.Errorf("%d writes without a change: %v", n, dyn.Actions())
	}
}

func parseIstioStatus(t *testing.T, o *unstructured.Unstructured) *metav1alpha1.IstioStatus {
	t.Helper()
	st := &metav1alpha1.IstioStatus{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object["status"].(map[string]any), st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestUnreadableStatusIsNotRetried: an unsupported-kind object whose status
// is not an Istio status is left alone and does not make Sync retry every
// second.
func TestUnreadableStatusIsNotRetried(t *testing.T) {
	r := schema.GroupVersionResource{Group: "extensions.istio.io", Version: "v1alpha1", Resource: "wasmplugins"}
	odd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
		"metadata": map[string]any{"namespace": "default", "name": "odd"},
		"status":   map[string]any{"conditions": "not a list"},
	}}
	dyn := fakedynamic.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{r: "WasmPluginList"}, odd)
	w := &Writer{Dynamic: dyn, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if w.Sync(context.Background(), Objects{Unsupported: map[schema.GroupVersionResource][]*unstructured.Unstructured{r: {odd}}}, nil) {
		t.Error("an unreadable status asks for a retry")
	}
	if n := len(dyn.Actions()); n != 0 {
		t.Errorf("%d writes on an object whose status could not be read: %v", n, dyn.Actions())
	}
}

// TestSyncServiceEntryAddresses: allocated VIPs land in status.addresses
// with the condition, in one write, and nothing is written once current.
func TestSyncServiceEntryAddresses(t *testing.T) {
	ctx := context.Background()
	se := &networkingv1.ServiceEntry{ObjectMeta: objectMeta("external")}
	se.Spec.Hosts, se.Spec.Resolution = []string{"api.example.com"}, networkingapi.ServiceEntry_DNS
	client := fake.NewSimpleClientset(se)
	w := &Writer{Client: client, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	addrs := workload.AllocateAddresses([]*networkingv1.ServiceEntry{se})
	w.Sync(ctx, Objects{ServiceEntries: []*networkingv1.ServiceEntry{se}, ServiceEntryAddresses: addrs}, nil)
	got, err := client.NetworkingV1().ServiceEntries("default").Get(ctx, "external", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if a := got.Status.Addresses; len(a) != 1 || a[0].GetHost() != "api.example.com" || a[0].GetValue() != addrs["default/external"][0].GetValue() {
		t.Errorf("status.addresses %v, want %v", a, addrs["default/external"])
	}
	checkStatus(t, "ServiceEntry", Fields{&got.Status.Conditions, &got.Status.ValidationMessages}, "True", ReasonAccepted, "")
	if n := len(client.Actions()); n != 2 { // the Get above and one update
		t.Errorf("%d actions, want one status update and the Get", n)
	}
	// Current: a second Sync (from the object as the informer sees it, whose
	// allocation is now the one in its status) writes nothing.
	client.ClearActions()
	again := workload.AllocateAddresses([]*networkingv1.ServiceEntry{got})
	w.Sync(ctx, Objects{ServiceEntries: []*networkingv1.ServiceEntry{got}, ServiceEntryAddresses: again}, nil)
	if n := len(client.Actions()); n != 0 {
		t.Errorf("%d writes for a current ServiceEntry, want none", n)
	}
}
