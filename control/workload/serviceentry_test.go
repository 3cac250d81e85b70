package workload

import (
	"strings"
	"testing"

	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/pkg/mesh"
)

func serviceEntry(name string, labels map[string]string, spec *networkingapi.ServiceEntry) *networkingv1.ServiceEntry {
	se := &networkingv1.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: labels}}
	se.Spec.Hosts, se.Spec.Addresses, se.Spec.Ports = spec.Hosts, spec.Addresses, spec.Ports
	se.Spec.Resolution, se.Spec.Endpoints, se.Spec.Location = spec.Resolution, spec.Endpoints, spec.Location
	return se
}

func TestServiceEntryStatic(t *testing.T) {
	se := serviceEntry("external", map[string]string{labelUseWaypoint: "waypoint"}, &networkingapi.ServiceEntry{
		Hosts:     []string{"external.example.com", "*.example.org"},
		Addresses: []string{"240.240.0.10", "not-an-ip"},
		Ports: []*networkingapi.ServicePort{
			{Number: 443, Name: "https", Protocol: "HTTPS"},
			{Number: 80, Name: "http", Protocol: "HTTP", TargetPort: 8080},
			{Number: 53, Name: "dns", Protocol: "UDP"},
		},
		Resolution: networkingapi.ServiceEntry_STATIC,
		Endpoints: []*networkingapi.WorkloadEntry{
			{Address: "10.250.11.200", Ports: map[string]uint32{"https": 8443}},
			{Address: "external-2.example.com"},
		},
	})
	out := Translate(Config{}, Inputs{
		ServiceEntries: []*networkingv1.ServiceEntry{se},
		Gateways: []*gatewayv1.Gateway{{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "waypoint"},
			Spec: gatewayv1.GatewaySpec{GatewayClassName: WaypointGatewayClass}}},
	})
	svc := out.Addresses["default/external.example.com"].GetService()
	if svc == nil {
		t.Fatalf("no service; addresses %v", out.Addresses)
	}
	if svc.Name != "external" || strings.Join(svc.Addresses, ",") != "240.240.0.10" ||
		svc.Waypoint.GetHostname() != "default/waypoint.default.svc.cluster.local" {
		t.Errorf("service %v", svc)
	}
	if len(svc.Ports) != 2 || svc.Ports[0].ServicePort != 80 || svc.Ports[0].TargetPort != 8080 || svc.Ports[1].ServicePort != 443 {
		t.Errorf("ports %v, want 80->8080 and 443 (UDP dropped)", svc.Ports)
	}
	w := out.Addresses["Kubernetes/networking.istio.io/ServiceEntry/default/external/10.250.11.200"].GetWorkload()
	if w == nil {
		t.Fatalf("no endpoint workload; addresses %v", out.Addresses)
	}
	if w.TunnelProtocol != workloadv1.TunnelProtocol_NONE || w.ServiceAccount != "" || strings.Join(w.Addresses, ",") != "10.250.11.200" {
		t.Errorf("endpoint workload %v: want outside the mesh", w)
	}
	pl := w.Services["default/external.example.com"].GetPorts()
	if len(pl) != 2 || pl[0].TargetPort != 8443 || pl[1].TargetPort != 8080 {
		t.Errorf("endpoint ports %v, want 443->8443 (endpoint port by name), 80->8080", pl)
	}
	if len(out.Addresses) != 2 {
		t.Errorf("%d addresses, want the service and one endpoint", len(out.Addresses))
	}
	var msgs []string
	for _, p := range out.Problems {
		msgs = append(msgs, p.String())
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{`"*.example.org": wildcard`, `"not-an-ip" is not an IP`, `"external-2.example.com" is not an IP`} {
		if !strings.Contains(all, want) {
			t.Errorf("problems %q lack %q", all, want)
		}
	}
}

func TestServiceEntryResolutions(t *testing.T) {
	ports := []*networkingapi.ServicePort{{Number: 80, Name: "http"}}
	for _, tc := range []struct {
		res       networkingapi.ServiceEntry_Resolution
		endpoints []*networkingapi.WorkloadEntry
		workloads int
		problem   string
	}{
		{networkingapi.ServiceEntry_NONE, nil, 0, ""},
		{networkingapi.ServiceEntry_NONE, []*networkingapi.WorkloadEntry{{Address: "10.0.0.1"}}, 0, "ignored with resolution NONE"},
		{networkingapi.ServiceEntry_DNS, []*networkingapi.WorkloadEntry{{Address: "10.0.0.1"}, {Address: "10.0.0.2"}}, 2, ""},
		{networkingapi.ServiceEntry_DNS, nil, 1, ""}, // the host, to resolve
		{networkingapi.ServiceEntry_DNS, []*networkingapi.WorkloadEntry{{Address: "b.example.com"}, {Address: "10.0.0.2"}}, 2, ""},
		{networkingapi.ServiceEntry_DNS_ROUND_ROBIN, nil, 1, ""},
		{networkingapi.ServiceEntry_DNS, []*networkingapi.WorkloadEntry{{Address: "10.0.0.1"}, {Address: "not a name!"}}, 1, "neither an IP address nor a DNS name"},
		{networkingapi.ServiceEntry_STATIC, []*networkingapi.WorkloadEntry{{Address: "b.example.com"}}, 0, "is not an IP address"},
		{networkingapi.ServiceEntry_STATIC, nil, 0, ""},
	} {
		se := serviceEntry("e", nil, &networkingapi.ServiceEntry{Hosts: []string{"a.example.com"}, Ports: ports,
			Resolution: tc.res, Endpoints: tc.endpoints})
		out := Translate(Config{}, Inputs{ServiceEntries: []*networkingv1.ServiceEntry{se}})
		if out.Addresses["default/a.example.com"].GetService() == nil {
			t.Errorf("%s: no service", tc.res)
		}
		if got := len(out.Addresses) - 1; got != tc.workloads {
			t.Errorf("%s %v: %d workloads, want %d", tc.res, tc.endpoints, got, tc.workloads)
		}
		if tc.problem == "" && len(out.Problems) > 0 || tc.problem != "" && (len(out.Problems) != 1 || !strings.Contains(out.Problems[0].Message, tc.problem)) {
			t.Errorf("%s %v: problems %v, want %q", tc.res, tc.endpoints, out.Problems, tc.problem)
		}
	}
}

// TestServiceEntryDNSNames: the names of resolution DNS become workloads
// with a hostname and no address, which node agents resolve: each host
// itself (serving only that host) when the entry lists no endpoints, else
// each endpoint name (serving every host, its ports map honoured).
func TestServiceEntryDNSNames(t *testing.T) {
	ports := []*networkingapi.ServicePort{{Number: 80, Name: "http", TargetPort: 8080}}
	hostsOnly := serviceEntry("hosts", nil, &networkingapi.ServiceEntry{Hosts: []string{"a.example.com", "b.example.com"},
		Ports: ports, Resolution: networkingapi.ServiceEntry_DNS})
	names := serviceEntry("names", nil, &networkingapi.ServiceEntry{Hosts: []string{"c.example.com"}, Ports: ports,
		Resolution: networkingapi.ServiceEntry_DNS, Endpoints: []*networkingapi.WorkloadEntry{{Address: "backend.example.net", Ports: map[string]uint32{"http": 9090}}}})
	out := Translate(Config{}, Inputs{ServiceEntries: []*networkingv1.ServiceEntry{hostsOnly, names}})
	if len(out.Problems) > 0 {
		t.Errorf("problems %v, want none", out.Problems)
	}
	for _, tc := range []struct{ uid, hostname, service string }{
		{"/networking.istio.io/ServiceEntry/default/hosts/a.example.com", "a.example.com", "default/a.example.com"},
		{"/networking.istio.io/ServiceEntry/default/hosts/b.example.com", "b.example.com", "default/b.example.com"},
		{"/networking.istio.io/ServiceEntry/default/names/backend.example.net", "backend.example.net", "default/c.example.com"},
	} {
		w := out.Addresses[mesh.DefaultClusterID+tc.uid].GetWorkload()
		if w == nil {
			t.Errorf("no workload %s", tc.uid)
			continue
		}
		if w.Hostname != tc.hostname || len(w.Addresses) != 0 || len(w.Services) != 1 || w.Services[tc.service] == nil ||
			w.TunnelProtocol != workloadv1.TunnelProtocol_NONE {
			t.Errorf("workload %s: %v, want hostname %s, no address, serving %s only, no tunnel", tc.uid, w, tc.hostname, tc.service)
		}
	}
	if p := out.Addresses[mesh.DefaultClusterID+"/networking.istio.io/ServiceEntry/default/names/backend.example.net"].GetWorkload().GetServices()["default/c.example.com"].GetPorts(); len(p) != 1 || p[0].TargetPort != 9090 {
		t.Errorf("ports of the endpoint name: %v, want 80 -> 9090 (its ports map)", p)
	}
}

func TestServiceEntryDoesNotReplaceAService(t *testing.T) {
	k8s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.20", Ports: []corev1.ServicePort{{Port: 80}}}}
	se := serviceEntry("shadow", nil, &networkingapi.ServiceEntry{Hosts: []string{"web.default.svc.cluster.local"},
		Ports: []*networkingapi.ServicePort{{Number: 80}}, Resolution: networkingapi.ServiceEntry_STATIC})
	out := Translate(Config{}, Inputs{Services: []*corev1.Service{k8s}, ServiceEntries: []*networkingv1.ServiceEntry{se}})
	if got := out.Addresses["default/web.default.svc.cluster.local"].GetService(); got.GetName() != "web" {
		t.Errorf("service %v, want the Kubernetes Service", got)
	}
	if len(out.Problems) != 1 || !strings.Contains(out.Problems[0].Message, "already defined") {
		t.Errorf("problems %v", out.Problems)
	}
}
