package agent

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/node-agent/config"
)

// TestHostnamesSkipsWaypointOnlyWorkloads: the agent resolves the names of
// workloads it may connect to, not those only reached through a waypoint.
func TestHostnamesSkipsWaypointOnlyWorkloads(t *testing.T) {
	s := config.NewStore(config.Options{})
	svc := func(host string, waypoint bool) *workloadv1.Address {
		v := &workloadv1.Service{Name: host, Namespace: "default", Hostname: host, Addresses: []string{"240.240.0.1"},
			Ports: []*workloadv1.Port{{ServicePort: 80}}}
		if host == "b.example.com" {
			v.Addresses = []string{"240.240.0.2"}
		}
		if waypoint {
			v.Waypoint = &workloadv1.GatewayAddress{Destination: &workloadv1.GatewayAddress_Hostname{Hostname: "default/waypoint.default.svc.cluster.local"}}
		}
		return &workloadv1.Address{Type: &workloadv1.Address_Service{Service: v}}
	}
	wl := func(host string) *workloadv1.Address {
		return &workloadv1.Address{Type: &workloadv1.Address_Workload{Workload: &workloadv1.Workload{Uid: "se/" + host, Name: host, Namespace: "default",
			Hostname: host, Services: map[string]*workloadv1.PortList{"default/" + host: {Ports: []*workloadv1.Port{{ServicePort: 80}}}}}}}
	}
	if err := s.Handle(config.AddressType, map[string]proto.Message{
		"default/a.example.com": svc("a.example.com", false), "se/a.example.com": wl("a.example.com"),
		"default/b.example.com": svc("b.example.com", true), "se/b.example.com": wl("b.example.com"),
	}, nil); err != nil {
		t.Fatal(err)
	}
	if got := hostnames(s.Snapshot()); !slices.Equal(got, []string{"a.example.com"}) {
		t.Fatalf("hostnames %v, want a.example.com only (b's service has a waypoint)", got)
	}
}
