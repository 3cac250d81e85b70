package waypoint

import (
	"fmt"
	"reflect"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestBoundHosts(t *testing.T) {
	for _, c := range []struct {
		name        string
		server, vs  []string
		vsNamespace string
		want        []string
	}{
		{"any server host takes every VirtualService host", []string{"*"}, []string{"*", "Bookinfo.example.com"}, "default", []string{"*", "bookinfo.example.com"}},
		{"exact names meet", []string{"bookinfo.example.com"}, []string{"bookinfo.example.com", "other.example.com"}, "default", []string{"bookinfo.example.com"}},
		{"a wildcard VirtualService host narrows to the server's", []string{"bookinfo.example.com"}, []string{"*.example.com"}, "default", []string{"bookinfo.example.com"}},
		{"a wildcard server host takes names below it", []string{"*.example.com"}, []string{"a.example.com", "example.com", "a.example.org"}, "default", []string{"a.example.com"}},
		{"namespace part: same namespace", []string{"default/*"}, []string{"x.example.com"}, "default", []string{"x.example.com"}},
		{"namespace part: other namespace", []string{"prod/*"}, []string{"x.example.com"}, "default", nil},
		{"namespace part: any", []string{"*/x.example.com"}, []string{"x.example.com"}, "default", []string{"x.example.com"}},
		{"namespace part: the Gateway's (gateways)", []string{"./*"}, []string{"x.example.com"}, "gateways", []string{"x.example.com"}},
		{"namespace part: the Gateway's (default)", []string{"./*"}, []string{"x.example.com"}, "default", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			vs := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: c.vsNamespace}}
			vs.Spec.Hosts = c.vs
			got := boundHosts(vs, "gateways", &networkingapi.Server{Hosts: c.server})
			if !slices.Equal(got, c.want) {
				t.Fatalf("boundHosts(server %v, vs %v) = %v, want %v", c.server, c.vs, got, c.want)
			}
		})
	}
}

func TestListenPort(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "weft-ingress", Labels: map[string]string{"istio": "ingress"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Ports: []corev1.ContainerPort{{Name: "https", ContainerPort: 8443}}}}},
	}
	svc := func(ns string, sel map[string]string, port int32, target intstr.IntOrString) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"},
			Spec: corev1.ServiceSpec{Selector: sel, Ports: []corev1.ServicePort{{Port: port, TargetPort: target}}}}
	}
	sel := map[string]string{"istio": "ingress"}
	for _, c := range []struct {
		name string
		svcs []*corev1.Service
		port uint32
		want uint32
	}{
		{"numeric targetPort", []*corev1.Service{svc("weft-ingress", sel, 80, intstr.FromInt32(8080))}, 80, 8080},
		{"named targetPort", []*corev1.Service{svc("weft-ingress", sel, 443, intstr.FromString("https"))}, 443, 8443},
		{"no Service port: the port itself", []*corev1.Service{svc("weft-ingress", sel, 80, intstr.FromInt32(8080))}, 8081, 8081},
		{"Service of another namespace", []*corev1.Service{svc("default", sel, 80, intstr.FromInt32(9999))}, 80, 80},
		{"Service selecting other pods", []*corev1.Service{svc("weft-ingress", map[string]string{"istio": "egress"}, 80, intstr.FromInt32(9999))}, 80, 80},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := listenPort(pod, c.svcs, c.port); got != c.want {
				t.Fatalf("listenPort(%d) = %d, want %d", c.port, got, c.want)
			}
		})
	}
}

// TestHTTPSRedirect: every host of an HTTP server with tls.httpsRedirect
// only redirects to https, whether a VirtualService is bound to it or not;
// the same host on the HTTPS server is routed.
func TestHTTPSRedirect(t *testing.T) {
	tc := loadCase(t, "testdata/ingress-https-redirect")
	gw := Translate(Config{}, tc.in).GatewayProxies["weft-ingress/weft-ingress"]
	if gw == nil {
		t.Fatal("no gateway snapshot")
	}
	hosts := map[string][]string{}
	for _, rc := range gw.Routes {
		for _, vh := range rc.VirtualHosts {
			redirects := len(vh.Routes) == 1 && proto.Equal(vh.Routes[0], httpsRedirectRoute())
			hosts[rc.Name] = append(hosts[rc.Name], fmt.Sprintf("%s redirects=%v", vh.Name, redirects))
		}
	}
	want := map[string][]string{
		"http.8080":  {"bookinfo.example.com redirects=true", "static.example.com redirects=true"},
		"http.8081":  {"plain.example.com redirects=false"},
		"https.8443": {"bookinfo.example.com redirects=false"},
	}
	if !reflect.DeepEqual(hosts, want) {
		t.Fatalf("virtual hosts %v, want %v", hosts, want)
	}
}
