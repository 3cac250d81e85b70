package nodebench

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/node-agent/config"
)

// scale is the mesh a node proxy knows beyond the harness's five pods:
// what a node agent of a large cluster holds. Its workloads live on other
// nodes, its services front them and its policies belong to other
// namespaces, so the measured paths take the same decisions at every
// scale, with stores of this size behind each lookup.
type scale struct{ Workloads, Services, Policies int }

func (s scale) String() string {
	parts := []string{fmt.Sprintf("workloads=%d", s.Workloads)}
	if s.Services > 0 {
		parts = append(parts, fmt.Sprintf("services=%d", s.Services))
	}
	if s.Policies > 0 {
		parts = append(parts, fmt.Sprintf("policies=%d", s.Policies))
	}
	return strings.Join(parts, ",")
}

// addresses are the synthetic workloads (10.128.0.0/9, on 50 other nodes,
// spread over 100 namespaces) and services (10.96.0.0/16), keyed as the
// control plane keys them.
func (s scale) addresses() map[string]proto.Message {
	out := make(map[string]proto.Message, s.Workloads+s.Services)
	for i := range s.Services {
		ns, name := fmt.Sprintf("ns-%d", i%100), fmt.Sprintf("svc-%d", i)
		host := fmt.Sprintf("%s.%s.svc.cluster.local", name, ns)
		out[ns+"/"+host] = &workloadv1.Address{Type: &workloadv1.Address_Service{Service: &workloadv1.Service{
			Name: name, Namespace: ns, Hostname: host,
			Addresses: []string{fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)},
			Ports:     []*workloadv1.Port{{ServicePort: 9080, TargetPort: 9080}},
		}}}
	}
	for i := range s.Workloads {
		p := podSpec{Name: fmt.Sprintf("pod-%d", i), Namespace: fmt.Sprintf("ns-%d", i%100), ServiceAccount: fmt.Sprintf("sa-%d", i%500),
			Node: fmt.Sprintf("node-%d", i%50), IP: fmt.Sprintf("10.%d.%d.%d", 128+i/65536, (i/256)%256, i%256)}
		a := p.address()
		if s.Services > 0 {
			svc := i % s.Services
			host := fmt.Sprintf("svc-%d.ns-%d.svc.cluster.local", svc, svc%100)
			a.GetWorkload().Services = map[string]*workloadv1.PortList{
				fmt.Sprintf("ns-%d/%s", svc%100, host): {Ports: []*workloadv1.Port{{ServicePort: 9080, TargetPort: 9080}}},
			}
		}
		out[a.GetWorkload().GetUid()] = a
	}
	return out
}

// policies are namespace-wide ALLOW policies of the synthetic namespaces
// (ten per namespace), each with principals, source ranges and ports.
func (s scale) policies() map[string]proto.Message {
	out := make(map[string]proto.Message, s.Policies)
	for i := range s.Policies {
		ns, name := fmt.Sprintf("ns-%d", i%100), fmt.Sprintf("allow-%d", i)
		out[ns+"/"+name] = &workloadv1.Authorization{Name: name, Namespace: ns, Scope: workloadv1.Scope_NAMESPACE, Action: workloadv1.Action_ALLOW,
			Rules: []*workloadv1.Rule{{Clauses: []*workloadv1.Clause{
				{Matches: []*workloadv1.Match{{Principals: []*workloadv1.StringMatch{
					{MatchType: &workloadv1.StringMatch_Exact{Exact: fmt.Sprintf("cluster.local/ns/%s/sa/sa-%d", ns, i%500)}}}},
					{SourceIps: []string{"10.128.0.0/9"}}}},
				{Matches: []*workloadv1.Match{{DestinationPorts: []uint32{9080, 8080}}}},
			}}}}
	}
	return out
}

// BenchmarkNodeAgentScale measures the node proxy when it knows a large
// mesh, on the same-node HTTP leaf of BenchmarkNodeDataPath (its rss_MB
// and vcpu_per_1000rps, measured the same way). The proxy alone: the
// shipped binary holding the same mesh is BenchmarkShippedNodeAgent's.
func BenchmarkNodeAgentScale(b *testing.B) {
	for _, s := range []scale{{Workloads: 1_000}, {Workloads: 10_000, Services: 1_000, Policies: 1_000}} {
		b.Run(s.String(), func(b *testing.B) {
			h := newHarness(b, s)
			b.Run(fmt.Sprintf("same-node/http-1KB-%drps", httpRate), func(b *testing.B) {
				h.benchHTTP(b, target{dst: h.srvA, proxies: []*node{h.a}})
			})
		})
	}
}

// TestScaleIsWhatTheStoreHolds: the synthetic mesh loads without
// problems, every workload, service and policy of it is held, and none of
// it applies to the harness's pods (the measured paths stay the same).
func TestScaleIsWhatTheStoreHolds(t *testing.T) {
	s := scale{Workloads: 2_000, Services: 200, Policies: 300}
	store := config.NewStore(config.Options{})
	if err := store.Handle(config.AddressType, s.addresses(), nil); err != nil {
		t.Fatal(err)
	}
	if err := store.Handle(config.AuthorizationType, s.policies(), nil); err != nil {
		t.Fatal(err)
	}
	snap := store.Snapshot()
	if len(snap.Workloads()) != 2_000 || len(snap.Services()) != 200 || len(snap.Authorizations()) != 300 || snap.Policy().Len() != 300 {
		t.Fatalf("holds %d workloads, %d services, %d policies (%d compiled)", len(snap.Workloads()), len(snap.Services()), len(snap.Authorizations()), snap.Policy().Len())
	}
	if p := snap.Policy().Problems(); len(p) > 0 {
		t.Errorf("policy problems: %q", p)
	}
	if w := snap.WorkloadByIP(netip.MustParseAddr("10.128.7.207")); w == nil || w.Name != "Kubernetes//Pod/ns-99/pod-1999" {
		t.Errorf("10.128.7.207 is %+v, want the last synthetic pod", w)
	}
	if svc := snap.ServiceByVIP(netip.MustParseAddrPort("10.96.0.1:9080")); svc == nil || len(svc.Workloads) != 10 {
		t.Errorf("svc-0: %+v, want 10 workloads", svc)
	}
	for _, ip := range []string{clientIP, serverAIP, serverBIP} {
		if w := snap.WorkloadByIP(netip.MustParseAddr(ip)); w != nil {
			t.Errorf("synthetic workload %s takes the harness pod address %s", w.Name, ip)
		}
	}
}
