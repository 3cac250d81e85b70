package workload

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/pkg/golden"
)

// TestGolden translates testdata/<case>/input.yaml and compares the result
// with testdata/<case>/expected.json.
func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/*/input.yaml")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no golden cases found: %v", err)
	}
	for _, input := range dirs {
		dir := filepath.Dir(input)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			in := readInputs(t, input)
			before := mustJSON(t, in)
			out := Translate(Config{}, in)
			if !bytes.Equal(before, mustJSON(t, in)) {
				t.Errorf("Translate modified its inputs (they are shared informer objects)")
			}
			checkConsistent(t, out)
			got := renderOutput(t, out)

			// The result must not depend on the order of the inputs.
			if again := renderOutput(t, Translate(Config{}, shuffled(in))); !bytes.Equal(got, again) {
				t.Errorf("output depends on input order")
			}

			golden.Assert(t, filepath.Join(dir, "expected.json"), got)
		})
	}
}

func testScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, discoveryv1.AddToScheme, securityv1.AddToScheme, networkingv1.AddToScheme, gatewayv1.Install,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// readInputs decodes a multi-document YAML file of Kubernetes, Istio and
// Gateway API objects.
func readInputs(t testing.TB, path string) Inputs {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	decoder := serializer.NewCodecFactory(testScheme(), serializer.EnableStrict).UniversalDeserializer()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	var in Inputs
	for i := 0; ; i++ {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 || strings.TrimSpace(string(doc)) == "---" {
			continue
		}
		obj, _, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			in.Namespaces = append(in.Namespaces, o)
		case *corev1.Node:
			in.Nodes = append(in.Nodes, o)
		case *corev1.Pod:
			in.Pods = append(in.Pods, o)
		case *corev1.Service:
			in.Services = append(in.Services, o)
		case *discoveryv1.EndpointSlice:
			in.EndpointSlices = append(in.EndpointSlices, o)
		case *securityv1.AuthorizationPolicy:
			in.AuthorizationPolicies = append(in.AuthorizationPolicies, o)
		case *securityv1.PeerAuthentication:
			in.PeerAuthentications = append(in.PeerAuthentications, o)
		case *gatewayv1.Gateway:
			in.Gateways = append(in.Gateways, o)
		case *networkingv1.ServiceEntry:
			in.ServiceEntries = append(in.ServiceEntries, o)
		default:
			t.Fatalf("%s: document %d: unexpected %T", path, i, obj)
		}
	}
	return in
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func shuffled(in Inputs) Inputs {
	r := rand.New(rand.NewPCG(1, 2))
	shuffle := func(n int, swap func(i, j int)) { r.Shuffle(n, swap) }
	out := Inputs{
		Namespaces:            slices.Clone(in.Namespaces),
		Pods:                  slices.Clone(in.Pods),
		Services:              slices.Clone(in.Services),
		EndpointSlices:        slices.Clone(in.EndpointSlices),
		AuthorizationPolicies: slices.Clone(in.AuthorizationPolicies),
		PeerAuthentications:   slices.Clone(in.PeerAuthentications),
		Gateways:              slices.Clone(in.Gateways),
		ServiceEntries:        slices.Clone(in.ServiceEntries),
		Nodes:                 slices.Clone(in.Nodes),
	}
	shuffle(len(out.Nodes), func(i, j int) { out.Nodes[i], out.Nodes[j] = out.Nodes[j], out.Nodes[i] })
	shuffle(len(out.Namespaces), func(i, j int) { out.Namespaces[i], out.Namespaces[j] = out.Namespaces[j], out.Namespaces[i] })
	shuffle(len(out.Pods), func(i, j int) { out.Pods[i], out.Pods[j] = out.Pods[j], out.Pods[i] })
	shuffle(len(out.Services), func(i, j int) { out.Services[i], out.Services[j] = out.Services[j], out.Services[i] })
	shuffle(len(out.EndpointSlices), func(i, j int) {
		out.EndpointSlices[i], out.EndpointSlices[j] = out.EndpointSlices[j], out.EndpointSlices[i]
	})
	shuffle(len(out.AuthorizationPolicies), func(i, j int) {
		out.AuthorizationPolicies[i], out.AuthorizationPolicies[j] = out.AuthorizationPolicies[j], out.AuthorizationPolicies[i]
	})
	shuffle(len(out.PeerAuthentications), func(i, j int) {
		out.PeerAuthentications[i], out.PeerAuthentications[j] = out.PeerAuthentications[j], out.PeerAuthentications[i]
	})
	shuffle(len(out.Gateways), func(i, j int) { out.Gateways[i], out.Gateways[j] = out.Gateways[j], out.Gateways[i] })
	shuffle(len(out.ServiceEntries), func(i, j int) {
		out.ServiceEntries[i], out.ServiceEntries[j] = out.ServiceEntries[j], out.ServiceEntries[i]
	})
	return out
}

// checkConsistent verifies references inside the output: resource names
// match their contents, workloads name existing policies and services.
func checkConsistent(t *testing.T, out Output) {
	t.Helper()
	for name, a := range out.Addresses {
		switch v := a.Type.(type) {
		case *workloadv1.Address_Workload:
			if v.Workload.Uid != name {
				t.Errorf("workload %q stored under %q", v.Workload.Uid, name)
			}
			for svc := range v.Workload.Services {
				if out.Addresses[svc].GetService() == nil {
					t.Errorf("workload %s refers to unknown service %s", name, svc)
				}
			}
			for _, p := range v.Workload.AuthorizationPolicies {
				a := out.Authorizations[p]
				if a == nil || a.Scope != workloadv1.Scope_WORKLOAD_SELECTOR {
					t.Errorf("workload %s refers to %s, which is not a WORKLOAD_SELECTOR authorization", name, p)
				}
			}
		case *workloadv1.Address_Service:
			if got := v.Service.Namespace + "/" + v.Service.Hostname; got != name {
				t.Errorf("service %q stored under %q", got, name)
			}
		default:
			t.Errorf("address %q has no type", name)
		}
	}
	for name, a := range out.Authorizations {
		if got := a.Namespace + "/" + a.Name; got != name {
			t.Errorf("authorization %q stored under %q", got, name)
		}
	}
}

// renderOutput is the golden form of an Output: protojson of each resource
// (proto field names, enums by name), empty values left out, keys sorted.
func renderOutput(t *testing.T, out Output) []byte {
	t.Helper()
	toJSON := func(m proto.Message) any {
		b, err := protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		return prune(v)
	}
	addrs := map[string]any{}
	for k, a := range out.Addresses {
		addrs[k] = toJSON(a)
	}
	authz := map[string]any{}
	for k, a := range out.Authorizations {
		authz[k] = toJSON(a)
	}
	problems := []string{}
	for _, p := range out.Problems {
		problems = append(problems, p.String())
	}
	b, err := json.MarshalIndent(map[string]any{
		"addresses":           addrs,
		"authorizations":      authz,
		"enrolled_namespaces": slices.Sorted(maps.Keys(out.EnrolledNamespaces)),
		"problems":            problems,
	}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// prune drops empty strings, lists and objects so that goldens show what is
// set; numbers, booleans and enum names stay.
func prune(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if e = prune(e); isEmpty(e) {
				delete(x, k)
			} else {
				x[k] = e
			}
		}
		return x
	case []any:
		for i := range x {
			x[i] = prune(x[i])
		}
		return x
	}
	return v
}

func isEmpty(v any) bool {
	switch x := v.(type) {
	case string:
		return x == ""
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return v == nil
}

// TestWaypointNamespaces: a waypoint speaks for its own namespace's
// workloads and services that use it, and for another namespace's only
// when the translation sent them through it (infra/shared, which allows
// ns-shared's routes); not infra/private, which refuses them.
func TestWaypointNamespaces(t *testing.T) {
	out := Translate(Config{}, readInputs(t, "testdata/waypoints/input.yaml"))
	got := WaypointNamespaces(out.Addresses)
	want := map[string]map[string]bool{
		"infra/shared": {"ns-shared": true}, "ns-all/wp-all": {"ns-all": true},
		"ns-svc/waypoint": {"ns-svc": true}, "ns-svc/wp-workload": {"ns-svc": true},
	}
	if !maps.EqualFunc(got, want, maps.Equal) {
		t.Errorf("WaypointNamespaces = %v, want %v", got, want)
	}
}
