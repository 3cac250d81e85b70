// Package synth is the synthetic mesh the node agent's benchmarks load:
// workloads, services and policies of a large cluster, keyed as the
// control plane keys them (node-agent/nodebench, node-agent/nodebench/shipped).
package synth

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
)

// TrustDomain is every synthetic workload's.
const TrustDomain = "cluster.local"

// Pod is one workload of the mesh.
type Pod struct {
	Name, Namespace, ServiceAccount, Node, IP string
}

// Workload is p as the control plane sends it.
func Workload(p Pod) *workloadv1.Address {
	return &workloadv1.Address{Type: &workloadv1.Address_Workload{Workload: &workloadv1.Workload{
		Uid: "Kubernetes//Pod/" + p.Namespace + "/" + p.Name, Name: p.Name, Namespace: p.Namespace,
		Addresses: []string{p.IP}, Node: p.Node, ServiceAccount: p.ServiceAccount, TrustDomain: TrustDomain,
		TunnelProtocol: workloadv1.TunnelProtocol_HBONE, WorkloadName: p.Name, WorkloadType: "deployment",
		CanonicalName: p.Name, CanonicalRevision: "v1",
	}}}
}

// Scale is the mesh a node proxy knows beyond the harness's five pods:
// what a node agent of a large cluster holds. Its workloads live on other
// nodes, its services front them and its policies belong to other
// namespaces, so the measured paths take the same decisions at every
// scale, with stores of this size behind each lookup.
type Scale struct{ Workloads, Services, Policies int }

func (s Scale) String() string {
	parts := []string{fmt.Sprintf("workloads=%d", s.Workloads)}
	if s.Services > 0 {
		parts = append(parts, fmt.Sprintf("services=%d", s.Services))
	}
	if s.Policies > 0 {
		parts = append(parts, fmt.Sprintf("policies=%d", s.Policies))
	}
	return strings.Join(parts, ",")
}

// Addresses are the synthetic workloads (10.128.0.0/9, on 50 other nodes,
// spread over 100 namespaces) and services (10.96.0.0/16), keyed as the
// control plane keys them.
func (s Scale) Addresses() map[string]proto.Message {
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
		p := Pod{Name: fmt.Sprintf("pod-%d", i), Namespace: fmt.Sprintf("ns-%d", i%100), ServiceAccount: fmt.Sprintf("sa-%d", i%500),
			Node: fmt.Sprintf("node-%d", i%50), IP: fmt.Sprintf("10.%d.%d.%d", 128+i/65536, (i/256)%256, i%256)}
		a := Workload(p)
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

// Authorizations are namespace-wide ALLOW policies of the synthetic namespaces
// (ten per namespace), each with principals, source ranges and ports.
func (s Scale) Authorizations() map[string]proto.Message {
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

// EnrolledNamespaces are the synthetic workloads' namespaces, all enrolled.
func (s Scale) EnrolledNamespaces() map[string]proto.Message {
	out := map[string]proto.Message{}
	for i := range min(s.Workloads, 100) {
		name := fmt.Sprintf("ns-%d", i)
		out[name] = &workloadv1.EnrolledNamespace{Name: name}
	}
	return out
}
