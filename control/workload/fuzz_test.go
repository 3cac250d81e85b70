package workload

import (
	"bytes"
	"log/slog"
	"testing"

	"google.golang.org/protobuf/proto"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/node-agent/config"
	"github.com/weft-mesh/weft/pkg/golden"
)

var quietLogger = slog.New(slog.DiscardHandler)

// without returns list without the object named ns/name: the cluster holds
// one object per kind and name, so the fuzzed object replaces its namesake.
func without[T metav1.Object](list []T, ns, name string) []T {
	var out []T
	for _, o := range list {
		if o.GetNamespace() != ns || o.GetName() != name {
			out = append(out, o)
		}
	}
	return out
}

// apiServerAccepts applies what the API server guarantees for the metadata
// of every object, whatever its kind and schema: a DNS name, a namespace
// (for namespaced kinds) and valid labels. Spec fields are left to the
// fuzzer: CRD schemas check little of them.
func apiServerAccepts(m metav1.Object, namespaced bool) bool {
	if len(validation.IsDNS1123Subdomain(m.GetName())) > 0 {
		return false
	}
	if namespaced == (m.GetNamespace() == "") {
		return false
	}
	if namespaced && len(validation.IsDNS1123Label(m.GetNamespace())) > 0 {
		return false
	}
	return len(metav1validation.ValidateLabels(m.GetLabels(), field.NewPath("labels"))) == 0
}

// addObject puts obj into the input list of its kind, replacing an object
// of the same kind and name; false for kinds the translation does not read.
func addObject(in *Inputs, obj runtime.Object) bool {
	m, ok := obj.(metav1.Object)
	if !ok {
		return false
	}
	ns, name := m.GetNamespace(), m.GetName()
	_, cluster := obj.(*corev1.Namespace)
	if !apiServerAccepts(m, !cluster) {
		return false
	}
	if pod, ok := obj.(*corev1.Pod); ok && pod.Spec.ServiceAccountName != "" &&
		len(validation.IsDNS1123Subdomain(pod.Spec.ServiceAccountName)) > 0 {
		return false // the API server validates a Pod's spec
	}
	switch o := obj.(type) {
	case *corev1.Namespace:
		in.Namespaces = append(without(in.Namespaces, ns, name), o)
	case *corev1.Pod:
		in.Pods = append(without(in.Pods, ns, name), o)
	case *corev1.Service:
		in.Services = append(without(in.Services, ns, name), o)
	case *discoveryv1.EndpointSlice:
		in.EndpointSlices = append(without(in.EndpointSlices, ns, name), o)
	case *securityv1.AuthorizationPolicy:
		in.AuthorizationPolicies = append(without(in.AuthorizationPolicies, ns, name), o)
	case *securityv1.PeerAuthentication:
		in.PeerAuthentications = append(without(in.PeerAuthentications, ns, name), o)
	case *gatewayv1.Gateway:
		in.Gateways = append(without(in.Gateways, ns, name), o)
	case *networkingv1.ServiceEntry:
		in.ServiceEntries = append(without(in.ServiceEntries, ns, name), o)
	default:
		return false
	}
	return true
}

// FuzzTranslate adds one user object, arbitrary JSON decoded into its API
// type as an informer would (any kind the translation reads: Pod, Service,
// Namespace, AuthorizationPolicy, PeerAuthentication, Gateway,
// ServiceEntry, ...), to a realistic cluster and translates. Properties: no
// panic; the inputs are not modified; the output is consistent (names,
// references); it does not depend on input order; and every resource is
// accepted by the node agent's validation (node-agent/config), so that no
// object a tenant can write makes the node agents reject the whole update
// and freeze the mesh's configuration.
func FuzzTranslate(f *testing.F) {
	base := readInputs(f, "testdata/authz-l4/input.yaml")
	for _, doc := range golden.Documents(f, "testdata/*/input.yaml") {
		f.Add(doc)
	}
	for _, s := range []string{
		`{"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy","metadata":{"name":"x","namespace":"default"},"spec":{"action":"DENY","rules":[{"from":[{"source":{"ipBlocks":["10.0.0.0/33","::1%eth0","","1.2.3.4/0"]}}],"to":[{"operation":{"ports":["0","65536","-1","x","80-90"]}}]}]}}`,
		`{"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy","metadata":{"name":"x","namespace":"default"},"spec":{"targetRefs":[{"kind":"Service","name":""}],"rules":[{}],"action":"ALLOW"}}`,
		`{"apiVersion":"security.istio.io/v1","kind":"PeerAuthentication","metadata":{"name":"x","namespace":"default"},"spec":{"selector":{"matchLabels":{"app":"reviews"}},"portLevelMtls":{"0":{"mode":"DISABLE"},"70000":{"mode":"STRICT"}}}}`,
		`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"default","labels":{"app":"reviews"}},"spec":{"serviceAccountName":"a/b","nodeName":"n"},"status":{"podIP":"not-an-ip","podIPs":[{"ip":"10.0.0.1"},{"ip":"10.0.0.1"},{"ip":"0.0.0.0"}]}}`,
		`{"apiVersion":"v1","kind":"Service","metadata":{"name":"s","namespace":"default"},"spec":{"clusterIP":"None","clusterIPs":["::ffff:10.0.0.1","10.0.0.1"],"selector":{"app":"reviews"},"ports":[{"port":0},{"port":70000,"targetPort":"http"},{"port":80,"targetPort":-1}]}}`,
		`{"apiVersion":"networking.istio.io/v1","kind":"ServiceEntry","metadata":{"name":"se","namespace":"default"},"spec":{"hosts":["*.example.com",""],"addresses":["10.0.0.0/8","x"],"ports":[{"number":0,"name":"http"}],"resolution":"STATIC","endpoints":[{"address":"10.0.0.1","ports":{"http":70000}},{"address":"unix:///x"}]}}`,
		`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"Gateway","metadata":{"name":"w","namespace":"default"},"spec":{"gatewayClassName":"istio-waypoint","listeners":[{"name":"mesh","port":15008,"protocol":"HBONE"}]}}`,
		`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"default","labels":{"istio.io/dataplane-mode":"ambient","istio.io/use-waypoint":"/"}}}`,
		// Addresses node agents refuse (zone, unspecified, IPv4-mapped next
		// to the same IPv4) were once passed through and made every node
		// agent reject the whole update.
		`{"apiVersion":"networking.istio.io/v1","kind":"ServiceEntry","metadata":{"name":"se","namespace":"default"},"spec":{"hosts":["a.example.com"],"addresses":["::ffff:240.0.0.1","240.0.0.1","fe80::1%eth0","0.0.0.0"],"ports":[{"number":80,"name":"http"}],"resolution":"STATIC","endpoints":[{"address":"fe80::1%eth0"},{"address":"::"},{"address":"::ffff:10.9.0.1"},{"address":"10.9.0.1"}]}}`,
		`{"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy","metadata":{"name":"zone","namespace":"default"},"spec":{"action":"DENY","rules":[{"from":[{"source":{"ipBlocks":["fe80::1%eth0"],"notIpBlocks":["fe80::2%lo"]}}],"to":[{"operation":{"ports":["9080"]}}]}]}}`,
		`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"default"},"spec":{"nodeName":"n"},"status":{"phase":"Running","podIPs":[{"ip":"::ffff:10.0.0.1"},{"ip":"10.0.0.1"},{"ip":"fe80::1%eth0"},{"ip":"0.0.0.0"}]}}`,
		`{"kind":"Pod"}`, `{}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, discoveryv1.AddToScheme, securityv1.AddToScheme, networkingv1.AddToScheme, gatewayv1.Install,
	} {
		if err := add(scheme); err != nil {
			f.Fatal(err)
		}
	}
	decoder := serializer.NewCodecFactory(scheme).UniversalDeserializer()

	f.Fuzz(func(t *testing.T, data []byte) {
		obj, _, err := decoder.Decode(data, nil, nil)
		if err != nil {
			return
		}
		in := base // addObject copies the list it changes
		if !addObject(&in, obj) {
			return
		}
		before := mustJSON(t, in)
		out := Translate(Config{}, in)
		if !bytes.Equal(before, mustJSON(t, in)) {
			t.Fatal("Translate modified its inputs")
		}
		checkConsistent(t, out)
		sh := shuffled(in)
		sh.ServiceEntries, sh.EndpointSlices = in.ServiceEntries, in.EndpointSlices
		if got, again := renderOutput(t, out), renderOutput(t, Translate(Config{}, sh)); !bytes.Equal(got, again) {
			t.Fatalf("output depends on input order; adding %s:\n%s", data, golden.Diff(got, again))
		}

		// A translator that saw the cluster without the object gives the
		// same (a pod: every other pod keeps its workload).
		tr := NewTranslator(Config{})
		tr.Translate(base)
		if got, fresh := renderOutput(t, tr.Translate(in)), renderOutput(t, out); !bytes.Equal(got, fresh) {
			t.Fatalf("a Translator's output differs from Translate's; adding %s:\n%s", data, golden.Diff(fresh, got))
		}

		// The node agent must accept all of it.
		store := config.NewStore(config.Options{Logger: quietLogger})
		addrs := make(map[string]proto.Message, len(out.Addresses))
		for k, v := range out.Addresses {
			addrs[k] = v
		}
		if err := store.Handle(config.AddressType, addrs, nil); err != nil {
			t.Fatalf("node agents would reject the addresses:\n%v", err)
		}
		authz := make(map[string]proto.Message, len(out.Authorizations))
		for k, v := range out.Authorizations {
			authz[k] = v
		}
		if err := store.Handle(config.AuthorizationType, authz, nil); err != nil {
			t.Fatalf("node agents would reject the authorizations:\n%v", err)
		}
	})
}
