package waypoint

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/control/workload"
	"github.com/weft-mesh/weft/pkg/golden"
)

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

// addUserObject decodes doc (JSON) into the API type its kind names and
// puts it into tc, replacing a namesake; false if it is not an object of
// a kind a user writes for waypoints and gateways, or its metadata is one
// the API server refuses.
func addUserObject(tc *testCase, doc []byte) bool {
	var tm metav1.TypeMeta
	if json.Unmarshal(doc, &tm) != nil {
		return false
	}
	var obj interface {
		metav1.Object
	}
	switch tm.Kind {
	case "VirtualService":
		obj = &networkingv1.VirtualService{}
	case "DestinationRule":
		obj = &networkingv1.DestinationRule{}
	case "HTTPRoute":
		obj = &gatewayv1.HTTPRoute{}
	case "AuthorizationPolicy":
		obj = &securityv1.AuthorizationPolicy{}
	case "ServiceEntry":
		obj = &networkingv1.ServiceEntry{}
	case "RequestAuthentication":
		obj = &securityv1.RequestAuthentication{}
	case "Gateway":
		if bytes.Contains([]byte(tm.APIVersion), []byte("networking.istio.io")) {
			obj = &networkingv1.Gateway{}
		} else {
			obj = &gatewayv1.Gateway{}
		}
	default:
		return false
	}
	if json.Unmarshal(doc, obj) != nil {
		return false
	}
	ns, name := obj.GetNamespace(), obj.GetName()
	if ns == "" || len(validation.IsDNS1123Subdomain(name)) > 0 || len(validation.IsDNS1123Label(ns)) > 0 {
		return false
	}
	switch o := obj.(type) {
	case *networkingv1.VirtualService:
		tc.in.VirtualServices = append(without(tc.in.VirtualServices, ns, name), o)
	case *networkingv1.DestinationRule:
		tc.in.DestinationRules = append(without(tc.in.DestinationRules, ns, name), o)
	case *gatewayv1.HTTPRoute:
		tc.in.HTTPRoutes = append(without(tc.in.HTTPRoutes, ns, name), o)
	case *securityv1.AuthorizationPolicy:
		tc.in.AuthorizationPolicies = append(without(tc.in.AuthorizationPolicies, ns, name), o)
		tc.workload.AuthorizationPolicies = append(without(tc.workload.AuthorizationPolicies, ns, name), o)
	case *securityv1.RequestAuthentication:
		tc.in.RequestAuthentications = append(without(tc.in.RequestAuthentications, ns, name), o)
	case *networkingv1.ServiceEntry:
		tc.in.ServiceEntries = append(without(tc.in.ServiceEntries, ns, name), o)
		tc.workload.ServiceEntries = append(without(tc.workload.ServiceEntries, ns, name), o)
	case *networkingv1.Gateway:
		tc.in.IstioGateways = append(without(tc.in.IstioGateways, ns, name), o)
	case *gatewayv1.Gateway:
		tc.in.IngressGateways = append(without(tc.in.IngressGateways, ns, name), o)
		tc.workload.Gateways = append(without(tc.workload.Gateways, ns, name), o)
	}
	return true
}

// FuzzTranslate adds one user object (VirtualService, DestinationRule,
// HTTPRoute, AuthorizationPolicy, RequestAuthentication, ServiceEntry, Istio or Gateway API
// Gateway), arbitrary JSON decoded into its API type, to Bookinfo with a
// waypoint and an ingress gateway, and translates the whole as
// weft-control does (control/workload, then this package). Properties:
// no panic; the inputs are not modified; every snapshot is self-contained
// (clusters, load assignments and route configurations referred to exist);
// every resource, and every typed config inside it, passes Envoy's
// validation rules (what Envoy itself would accept); and the output does
// not depend on input order.
func FuzzTranslate(f *testing.F) {
	base := loadCase(f, "testdata/ingress-bookinfo")
	for _, doc := range golden.Documents(f, "testdata/*/input.yaml") {
		f.Add(doc)
	}
	for _, s := range []string{
		`{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{"name":"r","namespace":"default"},"spec":{"hosts":["reviews",""],"http":[{"match":[{"uri":{"regex":"("}},{"headers":{"":{"exact":""}}},{"port":70000}],"route":[{"destination":{"host":"reviews","subset":"nope","port":{"number":0}},"weight":-5}],"timeout":"-1s","retries":{"attempts":-1,"perTryTimeout":"1x"},"fault":{"abort":{"httpStatus":0,"percentage":{"value":200}}},"rewrite":{"uri":"","uriRegexRewrite":{"match":"(","rewrite":"\\1"}}}],"tcp":[{"route":[{"destination":{"host":"*"}}]}]}}`,
		`{"apiVersion":"networking.istio.io/v1","kind":"DestinationRule","metadata":{"name":"r","namespace":"default"},"spec":{"host":"reviews","trafficPolicy":{"connectionPool":{"tcp":{"maxConnections":-1},"http":{"http1MaxPendingRequests":0}},"loadBalancer":{"consistentHash":{"httpHeaderName":""}},"outlierDetection":{"consecutive5xxErrors":4294967295},"portLevelSettings":[{"port":{"number":0}}]},"subsets":[{"name":"","labels":{}},{"name":"v1","labels":{"version":"v1"}},{"name":"v1"}]}}`,
		`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{"name":"r","namespace":"default"},"spec":{"parentRefs":[{"group":"","kind":"Service","name":"reviews","port":0}],"rules":[{"matches":[{"path":{"type":"RegularExpression","value":"["}}],"filters":[{"type":"URLRewrite","urlRewrite":{"path":{"type":"ReplacePrefixMatch"}}},{"type":"RequestMirror"}],"backendRefs":[{"name":"reviews","port":9080,"weight":0},{"name":"nope"}],"timeouts":{"request":"x"}}]}}`,
		`{"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy","metadata":{"name":"a","namespace":"default"},"spec":{"targetRefs":[{"kind":"Gateway","group":"gateway.networking.k8s.io","name":"waypoint"}],"action":"CUSTOM","rules":[{"to":[{"operation":{"paths":["*a*b","","/x*"],"methods":[""],"ports":["x"]}}],"when":[{"key":"request.headers[","values":[]}]}]}}`,
		`{"apiVersion":"networking.istio.io/v1","kind":"Gateway","metadata":{"name":"g","namespace":"weft-ingress"},"spec":{"selector":{},"servers":[{"port":{"number":0,"protocol":"HTTPS","name":""},"hosts":["","*/*","./a"],"tls":{"mode":"SIMPLE"}}]}}`,
		`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"Gateway","metadata":{"name":"g","namespace":"default"},"spec":{"gatewayClassName":"weft","listeners":[{"name":"","port":0,"protocol":"HTTPS","hostname":"*"}]}}`,
		`{"kind":"VirtualService","metadata":{"name":"x","namespace":"default"},"spec":null}`, `{}`, `null`, ``,
	} {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		tc := base
		if !addUserObject(&tc, data) {
			return
		}
		tc.in.Addresses = workload.Translate(workload.Config{}, tc.workload).Addresses
		before := mustJSON(t, tc.in)
		out := Translate(Config{}, tc.in)
		if !bytes.Equal(before, mustJSON(t, tc.in)) {
			t.Fatal("Translate modified its inputs")
		}
		checkReferences(t, out)
		for snap, res := range out.Groups() {
			for _, m := range resourceMessages(res) {
				if errs := validateDeep(m.ProtoReflect()); len(errs) > 0 {
					t.Errorf("%s %s: Envoy would refuse it: %v", snap, resourceName(m), errs[len(errs)-1])
				}
			}
		}
		if t.Failed() {
			t.FailNow()
		}
		if got, again := render(t, out, true), render(t, Translate(Config{}, shuffled(tc.in, 1)), true); !bytes.Equal(got, again) {
			t.Fatal("output depends on input order")
		}
	})
}

// FuzzParseClaimKey: a parsed request.auth.claims key is a path of
// non-empty names without brackets that renders back to the key.
func FuzzParseClaimKey(f *testing.F) {
	for _, s := range []string{"request.auth.claims[groups]", "request.auth.claims[a][b]", "request.auth.claims",
		"request.auth.claims[]", "request.auth.claims[a]b", "request.auth.claims[[a]]", "request.auth.claims[a.b][c-d]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		path, ok := ParseClaimKey(key)
		if !ok {
			return
		}
		if len(path) == 0 {
			t.Fatalf("%q: empty path", key)
		}
		back := "request.auth.claims"
		for _, p := range path {
			if p == "" || strings.ContainsAny(p, "[]") {
				t.Fatalf("%q: bad segment %q", key, p)
			}
			back += "[" + p + "]"
		}
		if back != key {
			t.Fatalf("%q parsed as %q", key, path)
		}
	})
}
