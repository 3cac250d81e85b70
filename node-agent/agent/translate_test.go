package agent

import (
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/node-agent/config"
)

func snapshot(t *testing.T) *config.Snapshot {
	t.Helper()
	// ips: comma-separated (dual stack)
	wl := func(name, node, ips string, tp workloadv1.TunnelProtocol, svc string) *workloadv1.Address {
		w := &workloadv1.Workload{Uid: "Kubernetes//Pod/default/" + name, Name: name, Namespace: "default", Addresses: strings.Split(ips, ","),
			Node: node, ServiceAccount: name, TrustDomain: "cluster.local", TunnelProtocol: tp}
		if svc != "" {
			w.Services = map[string]*workloadv1.PortList{"default/" + svc: {Ports: []*workloadv1.Port{{ServicePort: 80, TargetPort: 8080}}}}
		}
		return &workloadv1.Address{Type: &workloadv1.Address_Workload{Workload: w}}
	}
	svc := func(host, vip string) *workloadv1.Address {
		return &workloadv1.Address{Type: &workloadv1.Address_Service{Service: &workloadv1.Service{
			Name: host, Namespace: "default", Hostname: host, Addresses: []string{vip}, Ports: []*workloadv1.Port{{ServicePort: 80}}}}}
	}
	res := map[string]proto.Message{}
	for _, a := range []*workloadv1.Address{
		wl("meshed-here", "n1", "10.0.0.1", workloadv1.TunnelProtocol_HBONE, "a.svc"),
		wl("plain-here", "n1", "10.0.0.2", workloadv1.TunnelProtocol_NONE, "b.svc"),
		wl("meshed-there", "n2", "10.0.1.1", workloadv1.TunnelProtocol_HBONE, "c.svc"),
		wl("dual-meshed-here", "n1", "10.0.0.3,fd00::3", workloadv1.TunnelProtocol_HBONE, ""),
		wl("dual-plain-here", "n1", "10.0.0.4,fd00::4", workloadv1.TunnelProtocol_NONE, ""),
		wl("dual-meshed-there", "n2", "10.0.1.3,fd00:1::3", workloadv1.TunnelProtocol_HBONE, ""),
		svc("a.svc", "10.96.0.1"), svc("b.svc", "10.96.0.2"), svc("c.svc", "10.96.0.3"),
	} {
		if w := a.GetWorkload(); w != nil {
			res[w.GetUid()] = a
		} else {
			res["default/"+a.GetService().GetHostname()] = a
		}
	}
	s := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := s.Handle(config.AddressType, res, nil); err != nil {
		t.Fatal(err)
	}
	return s.Snapshot()
}

func TestLocalPods(t *testing.T) {
	got := LocalPods(snapshot(t), "n1")
	want := map[netip.Addr]bool{netip.MustParseAddr("10.0.0.1"): true, netip.MustParseAddr("10.0.0.2"): false,
		netip.MustParseAddr("10.0.0.3"): true, netip.MustParseAddr("10.0.0.4"): false} // IPv4 only
	if !maps.Equal(got, want) {
		t.Fatalf("LocalPods = %v, want %v", got, want)
	}
	if v, ok := got[netip.MustParseAddr("10.0.0.2")]; !ok || v {
		t.Fatalf("the plain pod must be local and not enrolled: %v", got)
	}
}

// TestEnrolledWithIPv6: the enrolled dual-stack pod on this node is
// reported (its IPv6 TCP is dropped); an unenrolled one, and one on
// another node, are not.
func TestEnrolledWithIPv6(t *testing.T) {
	if got := EnrolledWithIPv6(snapshot(t), "n1"); !slices.Equal(got, []string{"default/dual-meshed-here"}) {
		t.Fatalf("EnrolledWithIPv6 = %v, want [default/dual-meshed-here]", got)
	}
}

func TestLocalServiceVIPs(t *testing.T) {
	got := LocalServiceVIPs(snapshot(t), "n1")
	if len(got) != 1 || !got[netip.MustParseAddr("10.96.0.1")] {
		t.Fatalf("LocalServiceVIPs = %v, want only a.svc's VIP (enrolled endpoint here)", got)
	}
}
