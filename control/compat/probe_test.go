package compat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	meshapi "istio.io/api/mesh/v1alpha1"
	"regexp"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/control/waypoint"
	"github.com/weft-mesh/weft/control/workload"
	"github.com/weft-mesh/weft/pkg/golden"
)

// world is what the translations read: control/workload's inputs and the
// objects only control/waypoint reads.
type world struct {
	workload.Inputs
	VirtualServices  []*networkingv1.VirtualService
	DestinationRules []*networkingv1.DestinationRule
	HTTPRoutes       []*gatewayv1.HTTPRoute
	IstioGateways    []*networkingv1.Gateway
	// RequestAuthentications configure the waypoints.
	RequestAuthentications []*securityv1.RequestAuthentication
	EnvoyFilters           []*networkingv1alpha3.EnvoyFilter
	Telemetries            []*telemetryv1.Telemetry
}

// object is a decoded probe object: where it goes in a world, and the
// kinds the translations report its problems under.
type object struct {
	meta  metav1.Object
	kinds []string
	add   func(*world)
	// spec is the istio.io/api message of an Istio object's spec, nil for
	// other kinds: Istio's own JSON decoding allows unknown fields, so
	// decode checks the spec again with protojson.
	spec proto.Message
}

// decode strictly decodes one YAML object of a kind the translations read;
// a misspelt field is an error, so a probe cannot test something else than
// it says.
func decode(doc []byte) (object, error) {
	// sigs.k8s.io/yaml reads the first document only: a probe of several
	// would test less than it shows.
	if regexp.MustCompile(`(?m)^---\s*$`).Match(bytes.TrimSpace(doc)) {
		return object{}, errors.New("a probe is one object; this one has several YAML documents")
	}
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return object{}, err
	}
	o, err := newObject(tm)
	if err != nil {
		return object{}, err
	}
	if err := yaml.UnmarshalStrict(doc, o.meta); err != nil {
		return object{}, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if o.spec != nil {
		if err := strictSpec(doc, o.spec); err != nil {
			return object{}, fmt.Errorf("%s: spec: %w", tm.Kind, err)
		}
	}
	return o, nil
}

// strictSpec decodes the spec of the YAML object doc into a new message
// of spec's type with protojson, which refuses unknown fields.
func strictSpec(doc []byte, spec proto.Message) error {
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return err
	}
	var obj struct {
		Spec json.RawMessage `json:"spec"`
	}
	if err := json.Unmarshal(j, &obj); err != nil {
		return err
	}
	if obj.Spec == nil {
		return nil
	}
	return protojson.Unmarshal(obj.Spec, spec.ProtoReflect().New().Interface())
}

// newObject is an empty object of the kind tm names.
func newObject(tm metav1.TypeMeta) (object, error) {
	istio := strings.HasPrefix(tm.APIVersion, "networking.istio.io/")
	switch {
	case tm.Kind == "Namespace":
		o := &corev1.Namespace{}
		return object{o, []string{"Namespace"}, func(w *world) { w.Namespaces = append(w.Namespaces, o) }, nil}, nil
	case tm.Kind == "Service":
		o := &corev1.Service{}
		return object{o, []string{"Service"}, func(w *world) { w.Services = append(w.Services, o) }, nil}, nil
	case tm.Kind == "Pod":
		o := &corev1.Pod{}
		return object{o, []string{"Pod"}, func(w *world) { w.Pods = append(w.Pods, o) }, nil}, nil
	case tm.Kind == "AuthorizationPolicy":
		o := &securityv1.AuthorizationPolicy{}
		return object{o, []string{tm.Kind}, func(w *world) { w.AuthorizationPolicies = append(w.AuthorizationPolicies, o) }, &o.Spec}, nil
	case tm.Kind == "RequestAuthentication":
		o := &securityv1.RequestAuthentication{}
		return object{o, []string{tm.Kind}, func(w *world) { w.RequestAuthentications = append(w.RequestAuthentications, o) }, &o.Spec}, nil
	case tm.Kind == "PeerAuthentication":
		o := &securityv1.PeerAuthentication{}
		return object{o, []string{tm.Kind}, func(w *world) { w.PeerAuthentications = append(w.PeerAuthentications, o) }, &o.Spec}, nil
	case tm.Kind == "ServiceEntry":
		o := &networkingv1.ServiceEntry{}
		return object{o, []string{tm.Kind}, func(w *world) { w.ServiceEntries = append(w.ServiceEntries, o) }, &o.Spec}, nil
	case tm.Kind == "VirtualService":
		o := &networkingv1.VirtualService{}
		return object{o, []string{tm.Kind}, func(w *world) { w.VirtualServices = append(w.VirtualServices, o) }, &o.Spec}, nil
	case tm.Kind == "DestinationRule":
		o := &networkingv1.DestinationRule{}
		return object{o, []string{tm.Kind}, func(w *world) { w.DestinationRules = append(w.DestinationRules, o) }, &o.Spec}, nil
	case tm.Kind == "EnvoyFilter":
		o := &networkingv1alpha3.EnvoyFilter{}
		return object{o, []string{tm.Kind}, func(w *world) { w.EnvoyFilters = append(w.EnvoyFilters, o) }, &o.Spec}, nil
	case tm.Kind == "Telemetry":
		o := &telemetryv1.Telemetry{}
		return object{o, []string{tm.Kind}, func(w *world) { w.Telemetries = append(w.Telemetries, o) }, &o.Spec}, nil
	case tm.Kind == "HTTPRoute":
		o := &gatewayv1.HTTPRoute{}
		return object{o, []string{tm.Kind}, func(w *world) { w.HTTPRoutes = append(w.HTTPRoutes, o) }, nil}, nil
	case tm.Kind == "Gateway" && istio:
		o := &networkingv1.Gateway{}
		return object{o, []string{"Gateway.networking.istio.io"}, func(w *world) { w.IstioGateways = append(w.IstioGateways, o) }, &o.Spec}, nil
	case tm.Kind == "Gateway":
		// control/workload reports waypoints as "Gateway".
		o := &gatewayv1.Gateway{}
		return object{o, []string{"Gateway", "Gateway.gateway.networking.k8s.io"}, func(w *world) { w.Gateways = append(w.Gateways, o) }, nil}, nil
	}
	return object{}, fmt.Errorf("unexpected kind %s %s", tm.APIVersion, tm.Kind)
}

// loadWorld decodes the objects of the YAML file at path.
func loadWorld(t *testing.T, path string) world {
	t.Helper()
	var w world
	for i, doc := range golden.Documents(t, path) {
		o, err := decode(doc)
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
		}
		o.add(&w)
	}
	return w
}

// probeProviders is the fixed world's meshConfig.extensionProviders: a
// gRPC authorizer served by the world's reviews port, an OpenTelemetry
// collector and a Zipkin server.
var probeProviders = []*meshapi.MeshConfig_ExtensionProvider{{Name: "ext-authz-grpc",
	Provider: &meshapi.MeshConfig_ExtensionProvider_EnvoyExtAuthzGrpc{EnvoyExtAuthzGrpc: &meshapi.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationGrpcProvider{
		Service: "reviews.default.svc.cluster.local", Port: 9080}}},
	{Name: "otel", Provider: &meshapi.MeshConfig_ExtensionProvider_Opentelemetry{Opentelemetry: &meshapi.MeshConfig_ExtensionProvider_OpenTelemetryTracingProvider{
		Service: "opentelemetry-collector.observability.svc.cluster.local", Port: 4317}}},
	{Name: "zipkin", Provider: &meshapi.MeshConfig_ExtensionProvider_Zipkin{Zipkin: &meshapi.MeshConfig_ExtensionProvider_ZipkinTracingProvider{
		Service: "zipkin.istio-system.svc.cluster.local", Port: 9411}}}}

// problems runs both translations on w, as weft-control does, and returns
// every problem they report.
func (w world) problems() []workload.Problem {
	wcfg := workload.Config{}
	wout := workload.Translate(wcfg, w.Inputs)
	pout := waypoint.Translate(waypoint.Config{Config: wcfg, ExtensionProviders: probeProviders}, waypoint.Inputs{
		Addresses:              wout.Addresses,
		Services:               w.Services,
		Pods:                   w.Pods,
		VirtualServices:        w.VirtualServices,
		DestinationRules:       w.DestinationRules,
		HTTPRoutes:             w.HTTPRoutes,
		AuthorizationPolicies:  w.AuthorizationPolicies,
		RequestAuthentications: w.RequestAuthentications,
		IstioGateways:          w.IstioGateways,
		IngressGateways:        w.Gateways,
		ServiceEntries:         w.ServiceEntries,
		EnvoyFilters:           w.EnvoyFilters,
		Telemetries:            w.Telemetries,
	})
	return append(wout.Problems, pout.Problems...)
}

// problemsOn are the messages of the problems reported on o.
func problemsOn(o object, problems []workload.Problem) []string {
	var msgs []string
	for _, p := range problems {
		if slices.Contains(o.kinds, p.Kind) && p.Namespace == o.meta.GetNamespace() && p.Name == o.meta.GetName() {
			msgs = append(msgs, p.Message)
		}
	}
	return msgs
}

// TestProbes translates every probe object of every entry with the base
// world and checks that the translation does what the entry says.
func TestProbes(t *testing.T) {
	probes := 0
	for _, s := range Sections {
		for i, e := range s.Entries {
			for j, p := range e.Probes {
				probes++
				t.Run(fmt.Sprintf("%s/%d/%d", s.Title, i+1, j+1), func(t *testing.T) {
					checkProbe(t, loadWorld(t, "testdata/base.yaml"), e, p)
				})
			}
		}
	}
	t.Logf("%d probes", probes)
}

// checkProbe adds the object of p, a probe of e, to w and checks what the
// translation reports on it.
func checkProbe(t *testing.T, w world, e Entry, p *Probe) {
	o, err := decode([]byte(p.Object))
	if err != nil {
		t.Fatalf("row %q: probe: %v", e.Feature, err)
	}
	if o.meta.GetNamespace() == "" {
		o.meta.SetNamespace("default")
	}
	o.add(&w)
	msgs := problemsOn(o, w.problems())
	t.Logf("row %q: problems on the probe: %q", e.Feature, msgs)
	if e.Status == NotYet && p.Expect != Reported && !strings.Contains(e.Notes, "silently") {
		// The page's intro promises that whatever Weft does not apply is
		// reported, except where a row says "silently".
		t.Errorf("row %q is Not yet, but its probe expects no problem and the notes do not say \"silently\"", e.Feature)
	}
	switch p.Expect {
	case Reported:
		if p.Message == "" {
			t.Errorf("row %q: a reported probe needs the message to look for", e.Feature)
		}
		if !slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, p.Message) }) {
			t.Errorf("row %q (%s) says the translation reports %q on the probe; it reports %q",
				e.Feature, e.status(), p.Message, msgs)
		}
	case Clean:
		if p.Message != "" {
			t.Errorf("row %q: a clean probe has no message to look for", e.Feature)
		}
		if len(msgs) > 0 {
			t.Errorf("row %q (%s) says the probe is accepted; the translation reports %q", e.Feature, e.status(), msgs)
		}
	default:
		t.Errorf("row %q: probe without an expectation", e.Feature)
	}
}

// TestDecodeIsStrict: a misspelt field fails a probe, in the metadata, in
// an Istio spec (whose own decoding allows unknown fields) and in a
// Gateway API spec.
func TestDecodeIsStrict(t *testing.T) {
	for _, doc := range []string{
		"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  nme: x\n",
		"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: x\nspec:\n  host: a\n  trafficPolicy:\n    tls:\n      mod: SIMPLE\n",
		"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: x\nspec:\n  parentRef: []\n",
	} {
		if _, err := decode([]byte(doc)); err == nil {
			t.Errorf("decoded with a misspelt field:\n%s", doc)
		}
	}
}
