package waypoint

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
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
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/control/workload"
	"github.com/weft-mesh/weft/control/xds"
	"github.com/weft-mesh/weft/pkg/golden"
)

// testCase is the cluster state of one golden case: the workload
// translation's inputs and this package's.
type testCase struct {
	workload workload.Inputs
	in       Inputs
}

// TestGolden translates testdata/bookinfo.yaml plus testdata/<case>/input.yaml
// and compares the result with testdata/<case>/expected.json.
func TestGolden(t *testing.T) {
	for _, dir := range caseDirs(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			tc := loadCase(t, dir)
			cfg := caseConfig(t, dir)
			before := mustJSON(t, tc.in)
			out := Translate(cfg, tc.in)
			if !bytes.Equal(before, mustJSON(t, tc.in)) {
				t.Errorf("Translate modified its inputs")
			}
			checkReferences(t, out)
			full := strings.Contains(filepath.Base(dir), "grpc")
			got := render(t, out, full)
			for seed := range uint64(3) {
				if again := render(t, Translate(cfg, shuffled(tc.in, seed)), full); !bytes.Equal(got, again) {
					t.Fatalf("output depends on input order (seed %d):\n%s", seed, golden.Diff(got, again))
				}
			}
			golden.Assert(t, filepath.Join(dir, "expected.json"), got)
		})
	}
}

// caseConfig is the mesh config of a case: the defaults, with the
// extension providers of its extension-providers.json if it has one.
func caseConfig(t *testing.T, dir string) Config {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "extension-providers.json"))
	if os.IsNotExist(err) {
		return Config{}
	}
	if err != nil {
		t.Fatal(err)
	}
	providers, err := ParseExtensionProviders(data)
	if err != nil {
		t.Fatal(err)
	}
	return Config{ExtensionProviders: providers}
}

func caseDirs(t *testing.T) []string {
	t.Helper()
	inputs, err := filepath.Glob("testdata/*/input.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden cases found: %v", err)
	}
	var dirs []string
	for _, in := range inputs {
		dirs = append(dirs, filepath.Dir(in))
	}
	return dirs
}

// loadCase reads the Bookinfo base and the case's objects, and runs the
// workload translation to get the registry, as weft-control does.
func loadCase(t testing.TB, dir string) testCase {
	t.Helper()
	return loadFiles(t, "testdata/bookinfo.yaml", filepath.Join(dir, "input.yaml"))
}

// loadFiles reads the objects of the YAML files at paths and runs the
// workload translation on them.
func loadFiles(t testing.TB, paths ...string) testCase {
	t.Helper()
	var tc testCase
	for _, p := range paths {
		readYAML(t, p, &tc)
	}
	wout := workload.Translate(workload.Config{}, tc.workload)
	for _, p := range wout.Problems {
		t.Logf("workload translation: %s", p)
	}
	tc.in.Addresses = wout.Addresses
	tc.in.Services = tc.workload.Services
	tc.in.Pods = tc.workload.Pods
	return tc
}

// readYAML decodes a multi-document YAML file with sigs.k8s.io/yaml into
// the client-go types, strictly (unknown fields fail the test).
func readYAML(t testing.TB, path string, tc *testCase) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
		}
		if tm.Kind == "" {
			continue
		}
		decode := func(obj any) {
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Fatalf("%s: document %d (%s): %v", path, i, tm.Kind, err)
			}
		}
		switch tm.Kind {
		case "Namespace":
			o := &corev1.Namespace{}
			decode(o)
			tc.workload.Namespaces = append(tc.workload.Namespaces, o)
			tc.in.Namespaces = append(tc.in.Namespaces, o)
		case "Pod":
			o := &corev1.Pod{}
			decode(o)
			tc.workload.Pods = append(tc.workload.Pods, o)
		case "Service":
			o := &corev1.Service{}
			decode(o)
			tc.workload.Services = append(tc.workload.Services, o)
		case "Gateway":
			if strings.HasPrefix(tm.APIVersion, "networking.istio.io/") {
				o := &networkingv1.Gateway{}
				decode(o)
				tc.in.IstioGateways = append(tc.in.IstioGateways, o)
				continue
			}
			o := &gatewayv1.Gateway{}
			decode(o)
			tc.workload.Gateways = append(tc.workload.Gateways, o)
			tc.in.IngressGateways = append(tc.in.IngressGateways, o)
		case "VirtualService":
			o := &networkingv1.VirtualService{}
			decode(o)
			tc.in.VirtualServices = append(tc.in.VirtualServices, o)
		case "DestinationRule":
			o := &networkingv1.DestinationRule{}
			decode(o)
			tc.in.DestinationRules = append(tc.in.DestinationRules, o)
		case "HTTPRoute":
			o := &gatewayv1.HTTPRoute{}
			decode(o)
			tc.in.HTTPRoutes = append(tc.in.HTTPRoutes, o)
		case "ServiceEntry":
			o := &networkingv1.ServiceEntry{}
			decode(o)
			tc.workload.ServiceEntries = append(tc.workload.ServiceEntries, o)
			tc.in.ServiceEntries = append(tc.in.ServiceEntries, o)
		case "AuthorizationPolicy":
			o := &securityv1.AuthorizationPolicy{}
			decode(o)
			tc.in.AuthorizationPolicies = append(tc.in.AuthorizationPolicies, o)
			tc.workload.AuthorizationPolicies = append(tc.workload.AuthorizationPolicies, o)
		case "RequestAuthentication":
			o := &securityv1.RequestAuthentication{}
			decode(o)
			tc.in.RequestAuthentications = append(tc.in.RequestAuthentications, o)
		case "EnvoyFilter":
			o := &networkingv1alpha3.EnvoyFilter{}
			decode(o)
			tc.in.EnvoyFilters = append(tc.in.EnvoyFilters, o)
		case "Telemetry":
			o := &telemetryv1.Telemetry{}
			decode(o)
			tc.in.Telemetries = append(tc.in.Telemetries, o)
		case "ReferenceGrant":
			o := &gatewayv1beta1.ReferenceGrant{}
			decode(o)
			tc.in.ReferenceGrants = append(tc.in.ReferenceGrants, o)
		default:
			t.Fatalf("%s: document %d: unexpected kind %s", path, i, tm.Kind)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func shuffled(in Inputs, seed uint64) Inputs {
	r := rand.New(rand.NewPCG(seed, 7))
	out := in
	out.Services = slices.Clone(in.Services)
	out.Pods = slices.Clone(in.Pods)
	out.VirtualServices = slices.Clone(in.VirtualServices)
	out.DestinationRules = slices.Clone(in.DestinationRules)
	out.HTTPRoutes = slices.Clone(in.HTTPRoutes)
	out.AuthorizationPolicies = slices.Clone(in.AuthorizationPolicies)
	out.IstioGateways = slices.Clone(in.IstioGateways)
	r.Shuffle(len(out.IstioGateways), func(i, j int) {
		out.IstioGateways[i], out.IstioGateways[j] = out.IstioGateways[j], out.IstioGateways[i]
	})
	out.IngressGateways = slices.Clone(in.IngressGateways)
	r.Shuffle(len(out.IngressGateways), func(i, j int) {
		out.IngressGateways[i], out.IngressGateways[j] = out.IngressGateways[j], out.IngressGateways[i]
	})
	r.Shuffle(len(out.Services), func(i, j int) { out.Services[i], out.Services[j] = out.Services[j], out.Services[i] })
	r.Shuffle(len(out.Pods), func(i, j int) { out.Pods[i], out.Pods[j] = out.Pods[j], out.Pods[i] })
	r.Shuffle(len(out.VirtualServices), func(i, j int) {
		out.VirtualServices[i], out.VirtualServices[j] = out.VirtualServices[j], out.VirtualServices[i]
	})
	r.Shuffle(len(out.DestinationRules), func(i, j int) {
		out.DestinationRules[i], out.DestinationRules[j] = out.DestinationRules[j], out.DestinationRules[i]
	})
	r.Shuffle(len(out.HTTPRoutes), func(i, j int) { out.HTTPRoutes[i], out.HTTPRoutes[j] = out.HTTPRoutes[j], out.HTTPRoutes[i] })
	r.Shuffle(len(out.AuthorizationPolicies), func(i, j int) {
		out.AuthorizationPolicies[i], out.AuthorizationPolicies[j] = out.AuthorizationPolicies[j], out.AuthorizationPolicies[i]
	})
	out.EnvoyFilters = slices.Clone(in.EnvoyFilters)
	r.Shuffle(len(out.EnvoyFilters), func(i, j int) { out.EnvoyFilters[i], out.EnvoyFilters[j] = out.EnvoyFilters[j], out.EnvoyFilters[i] })
	out.Telemetries = slices.Clone(in.Telemetries)
	r.Shuffle(len(out.Telemetries), func(i, j int) { out.Telemetries[i], out.Telemetries[j] = out.Telemetries[j], out.Telemetries[i] })
	out.RequestAuthentications = slices.Clone(in.RequestAuthentications)
	r.Shuffle(len(out.RequestAuthentications), func(i, j int) {
		out.RequestAuthentications[i], out.RequestAuthentications[j] = out.RequestAuthentications[j], out.RequestAuthentications[i]
	})
	return out
}

// checkReferences verifies the snapshot is self-contained: every cluster a
// route or TCP proxy names exists, every EDS cluster has a load
// assignment, every RDS name has a route configuration.
func checkReferences(t *testing.T, out Output) {
	t.Helper()
	snaps := map[string]*xds.Resources{"grpc": out.GRPC}
	for k, r := range out.Waypoints {
		snaps[k] = r
	}
	for k, r := range out.GatewayProxies {
		snaps["gateway "+k] = r
	}
	for name, res := range snaps {
		clusters := map[string]bool{}
		for _, c := range res.Clusters {
			clusters[c.Name] = true
		}
		clas := map[string]bool{}
		for _, e := range res.Endpoints {
			clas[e.ClusterName] = true
			if !clusters[e.ClusterName] {
				t.Errorf("%s: load assignment %s has no cluster", name, e.ClusterName)
			}
		}
		for _, c := range res.Clusters {
			if c.GetType().String() == "EDS" && !clas[c.Name] {
				t.Errorf("%s: EDS cluster %s has no load assignment", name, c.Name)
			}
		}
		routes := map[string]bool{}
		for _, rc := range res.Routes {
			routes[rc.Name] = true
		}
		// Walk everything for cluster and route config names.
		walkStrings(t, res, func(field, v string) {
			switch field {
			case "cluster", "name@cluster_weight", "name@tcp_weighted_cluster":
				if !clusters[v] {
					t.Errorf("%s: %s refers to unknown cluster %q", name, field, v)
				}
			case "route_config_name":
				if !routes[v] {
					t.Errorf("%s: RDS refers to unknown route configuration %q", name, v)
				}
			}
		})
	}
}

// render is the golden form of an Output. full renders the gRPC snapshot
// completely; otherwise only its listener names.
func render(t *testing.T, out Output, full bool) []byte {
	t.Helper()
	wps := map[string]any{}
	for k, r := range out.Waypoints {
		wps[k] = renderResources(t, r)
	}
	var grpc any
	if full {
		grpc = renderResources(t, out.GRPC)
	} else {
		var names []string
		for _, l := range out.GRPC.Listeners {
			names = append(names, l.Name)
		}
		grpc = map[string]any{"listener_names": names}
	}
	problems := []string{}
	for _, p := range out.Problems {
		problems = append(problems, p.String())
	}
	doc := map[string]any{"waypoints": wps, "grpc": grpc, "problems": problems}
	if len(out.GatewayProxies) > 0 {
		gws := map[string]any{}
		for k, r := range out.GatewayProxies {
			gws[k] = renderResources(t, r)
		}
		doc["gateways"] = gws
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func renderResources(t *testing.T, r *xds.Resources) map[string]any {
	t.Helper()
	out := map[string]any{}
	add := func(key string, msgs []proto.Message) {
		list := []any{}
		for _, m := range msgs {
			list = append(list, toJSON(t, m))
		}
		out[key] = list
	}
	add("listeners", asMessages(r.Listeners))
	add("routes", asMessages(r.Routes))
	add("clusters", asMessages(r.Clusters))
	add("endpoints", asMessages(r.Endpoints))
	return out
}

func asMessages[M proto.Message](ms []M) []proto.Message {
	out := make([]proto.Message, len(ms))
	for i, m := range ms {
		out[i] = m
	}
	return out
}

// toJSON is protojson (proto field names), re-indented by encoding/json:
// protojson's own whitespace is deliberately unstable.
func toJSON(t *testing.T, m proto.Message) any {
	t.Helper()
	b, err := protojson.MarshalOptions{UseProtoNames: true, Multiline: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSkipGRPCChangesNothingElse: for every golden case, leaving out the
// proxyless gRPC snapshot (the control plane does while no gRPC client is
// connected) leaves the waypoints, the gateways and the problems exactly
// as they are with it.
func TestSkipGRPCChangesNothingElse(t *testing.T) {
	for _, dir := range caseDirs(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			tc := loadCase(t, dir)
			cfg := caseConfig(t, dir)
			full := Translate(cfg, tc.in)
			tc.in.SkipGRPC = true
			skipped := Translate(cfg, tc.in)
			if skipped.GRPC != nil {
				t.Fatal("SkipGRPC: the gRPC snapshot was built")
			}
			full.GRPC, skipped.GRPC = &xds.Resources{}, &xds.Resources{}
			want, got := render(t, full, false), render(t, skipped, false)
			if !bytes.Equal(want, got) {
				t.Errorf("SkipGRPC changed the rest of the output:\n%s", golden.Diff(want, got))
			}
		})
	}
}
