package analyze

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/control/unsupported"
)

// objects is a set of decoded objects by "<kind>/<namespace>/<name>": a
// later file replaces an object of the same key, so a fixture can change
// one object of the base.
type objects struct {
	byKey map[string]metav1.Object
	order []string
}

func newObjects() *objects { return &objects{byKey: map[string]metav1.Object{}} }

func (o *objects) put(kind string, obj metav1.Object) {
	k := kind + "/" + obj.GetNamespace() + "/" + obj.GetName()
	if _, ok := o.byKey[k]; !ok {
		o.order = append(o.order, k)
	}
	o.byKey[k] = obj
}

func (o *objects) delete(kind, ns, name string) {
	delete(o.byKey, kind+"/"+ns+"/"+name)
}

// read decodes a multi-document YAML file strictly; objects without a
// namespace get defaultNS (except Namespaces and Nodes). Deployments become
// one Running, Ready pod each, on nodes[i % len(nodes)].
func (o *objects) read(t *testing.T, path, defaultNS string, nodes ...string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	deployments := 0
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
		var obj metav1.Object
		switch tm.Kind {
		case "":
			continue
		case "Namespace":
			obj = &corev1.Namespace{}
		case "Node":
			obj = &corev1.Node{}
		case "Pod":
			obj = &corev1.Pod{}
		case "Service":
			obj = &corev1.Service{}
		case "ServiceAccount":
			continue
		case "Deployment":
			obj = &appsv1.Deployment{}
		case "Gateway":
			obj = &gatewayv1.Gateway{}
		case "HTTPRoute":
			obj = &gatewayv1.HTTPRoute{}
		case "VirtualService":
			obj = &networkingv1.VirtualService{}
		case "DestinationRule":
			obj = &networkingv1.DestinationRule{}
		case "AuthorizationPolicy":
			obj = &securityv1.AuthorizationPolicy{}
		case "PeerAuthentication":
			obj = &securityv1.PeerAuthentication{}
		case "RequestAuthentication":
			obj = &securityv1.RequestAuthentication{}
		case "ServiceEntry":
			obj = &networkingv1.ServiceEntry{}
		default:
			if _, ok := unsupportedKind(tm.Kind); !ok {
				t.Fatalf("%s: document %d: unexpected kind %s", path, i, tm.Kind)
			}
			obj = &metav1.PartialObjectMetadata{} // names only, as weftctl lists them
		}
		strict := yaml.UnmarshalStrict
		if _, ok := obj.(*metav1.PartialObjectMetadata); ok {
			strict = yaml.Unmarshal
		}
		if err := strict(doc, obj); err != nil {
			t.Fatalf("%s: document %d (%s): %v", path, i, tm.Kind, err)
		}
		if obj.GetNamespace() == "" && tm.Kind != "Namespace" && tm.Kind != "Node" {
			obj.SetNamespace(defaultNS)
		}
		switch d := obj.(type) {
		case *appsv1.Deployment:
			o.put("Pod", deploymentPod(d, nodes[deployments%len(nodes)], deployments))
			deployments++
		case *corev1.Service:
			if d.Spec.ClusterIP == "" {
				// The API server would allocate one.
				d.Spec.ClusterIP = fmt.Sprintf("10.96.0.%d", 100+len(o.order))
			}
			o.put(tm.Kind, obj)
		default:
			o.put(tm.Kind, obj)
		}
	}
}

// unsupportedKind is the kind Weft does not implement named kind.
func unsupportedKind(kind string) (unsupported.Kind, bool) {
	for _, k := range append(slices.Clone(unsupported.Kinds), unsupported.GRPCRoute) {
		if k.Kind == kind {
			return k, true
		}
	}
	return unsupported.Kind{}, false
}

// deploymentPod is the Running, Ready pod a Deployment would have.
func deploymentPod(d *appsv1.Deployment, node string, i int) *corev1.Pod {
	tpl := d.Spec.Template
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: d.Name + "-5d8f9c7b6-x" + fmt.Sprint(i), Namespace: d.Namespace, Labels: tpl.Labels},
		Spec:       *tpl.Spec.DeepCopy(),
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.244.0.%d", 10+i),
			PodIPs:     []corev1.PodIP{{IP: fmt.Sprintf("10.244.0.%d", 10+i)}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	p.Spec.NodeName = node
	return p
}

// snapshot sorts the objects into a Snapshot; node agents are the pods
// labelled app=weft-node-agent.
func (o *objects) snapshot() Snapshot {
	var s Snapshot
	for _, k := range o.order {
		switch v := o.byKey[k].(type) {
		case *corev1.Namespace:
			s.Namespaces = append(s.Namespaces, v)
		case *corev1.Node:
			s.Nodes = append(s.Nodes, v)
		case *corev1.Pod:
			if v.Labels["app"] == "weft-node-agent" {
				s.NodeAgents = append(s.NodeAgents, v)
			}
			s.Pods = append(s.Pods, v)
		case *corev1.Service:
			s.Services = append(s.Services, v)
		case *gatewayv1.Gateway:
			s.Gateways = append(s.Gateways, v)
		case *gatewayv1.HTTPRoute:
			s.HTTPRoutes = append(s.HTTPRoutes, v)
		case *networkingv1.VirtualService:
			s.VirtualServices = append(s.VirtualServices, v)
		case *networkingv1.DestinationRule:
			s.DestinationRules = append(s.DestinationRules, v)
		case *securityv1.AuthorizationPolicy:
			s.AuthorizationPolicies = append(s.AuthorizationPolicies, v)
		case *securityv1.PeerAuthentication:
			s.PeerAuthentications = append(s.PeerAuthentications, v)
		case *securityv1.RequestAuthentication:
			s.RequestAuthentications = append(s.RequestAuthentications, v)
		case *networkingv1.ServiceEntry:
			s.ServiceEntries = append(s.ServiceEntries, v)
		case *metav1.PartialObjectMetadata:
			k, _ := unsupportedKind(v.Kind)
			s.Unsupported = append(s.Unsupported, UnsupportedObject{Kind: k, Namespace: v.Namespace, Name: v.Name})
		}
	}
	return s
}

// bookinfo is the clean configuration: the real sample files from
// samples/bookinfo in namespace bookinfo, plus testdata/base.yaml (the
// namespace labelled ambient with a waypoint, two nodes with Ready node
// agents), then the fixture files given.
func bookinfo(t *testing.T, fixtures ...string) *objects {
	t.Helper()
	samples := filepath.Join("..", "..", "..", "samples", "bookinfo")
	o := newObjects()
	o.read(t, filepath.Join("testdata", "base.yaml"), "bookinfo")
	o.read(t, filepath.Join(samples, "platform", "kube", "bookinfo.yaml"), "bookinfo", "node-1", "node-2")
	o.read(t, filepath.Join(samples, "networking", "destination-rule-all.yaml"), "bookinfo")
	o.read(t, filepath.Join(samples, "networking", "virtual-service-all-v1.yaml"), "bookinfo")
	for _, f := range fixtures {
		o.read(t, filepath.Join("testdata", f), "bookinfo", "node-1")
	}
	return o
}
