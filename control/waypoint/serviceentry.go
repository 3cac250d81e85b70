package waypoint

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/weft-mesh/weft/control/workload"
)

// serviceEntryProtocols gives the ports of ServiceEntry hosts (services in
// the registry without a Kubernetes Service) their protocol: the port's
// protocol field, chosen like a Service port's name (HTTPS and TLS are TCP
// to the waypoint; an unknown value is sniffed). Keyed by "<ns>/<host>".
func serviceEntryProtocols(ses []*networkingv1.ServiceEntry) map[string]map[uint32]protocol {
	out := map[string]map[uint32]protocol{}
	for _, se := range ses {
		if se == nil {
			continue
		}
		ports := map[uint32]protocol{}
		for _, p := range se.Spec.Ports {
			if pr, ok := protocolName(p.GetProtocol()); ok {
				ports[p.GetNumber()] = pr
			}
		}
		for _, h := range se.Spec.Hosts {
			if _, taken := out[se.Namespace+"/"+h]; !taken {
				out[se.Namespace+"/"+h] = ports
			}
		}
	}
	return out
}

// setServiceEntryProtocols applies serviceEntryProtocols to a service that
// has no Kubernetes Service.
func (s *service) setServiceEntryProtocols(byHost map[string]map[uint32]protocol) {
	ports := byHost[s.namespace+"/"+s.fqdn]
	for _, p := range s.ports {
		if pr, ok := ports[p.number]; ok {
			p.protocol = pr
		}
	}
}

// dnsEntry is a ServiceEntry host with resolution DNS or DNS_ROUND_ROBIN:
// the proxies resolve its endpoints' addresses (names or IPs), or the host
// itself when it lists none, as Envoy's STRICT_DNS and LOGICAL_DNS
// clusters do in Istio.
type dnsEntry struct {
	se         *networkingv1.ServiceEntry
	host       string
	roundRobin bool
}

// serviceEntryDNS indexes the DNS-resolved hosts by "<ns>/<host>"; a host
// defined twice in a namespace belongs to the first entry by name, as in
// the workload translation.
func serviceEntryDNS(ses []*networkingv1.ServiceEntry) map[string]*dnsEntry {
	ses = slices.DeleteFunc(slices.Clone(ses), func(se *networkingv1.ServiceEntry) bool { return se == nil })
	slices.SortFunc(ses, func(a, b *networkingv1.ServiceEntry) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	out := map[string]*dnsEntry{}
	for _, se := range ses {
		r := se.Spec.Resolution
		dns := r == networkingapi.ServiceEntry_DNS || r == networkingapi.ServiceEntry_DNS_ROUND_ROBIN
		for _, h := range se.Spec.Hosts {
			k := se.Namespace + "/" + h
			if _, taken := out[k]; taken || h == "" || strings.Contains(h, "*") {
				continue
			}
			out[k] = nil // taken, even by an entry that is not DNS
			if dns {
				out[k] = &dnsEntry{se: se, host: h, roundRobin: r == networkingapi.ServiceEntry_DNS_ROUND_ROBIN}
			}
		}
	}
	return out
}

// Istio's defaults for DNS clusters (meshConfig.dnsRefreshRate, and
// respect_dns_ttl): the TTL decides; the rate bounds retries after
// failures.
const dnsRefreshRate = 60e9

// dnsCluster turns c into the DNS cluster of d for service port port:
// STRICT_DNS over every endpoint (in the subset, by labels), or
// LOGICAL_DNS for DNS_ROUND_ROBIN with at most one name to resolve
// (Envoy's LOGICAL_DNS takes exactly one; Istio falls back to STRICT_DNS
// too). Endpoints are dialled on their ports map entry for the port's
// name, else targetPort, else the port. Without a name to resolve (a
// subset selecting no endpoint) c stays an EDS cluster without endpoints:
// false.
func (d *dnsEntry) dnsCluster(c *clusterv3.Cluster, port uint32, subset map[string]string) bool {
	var sp *networkingapi.ServicePort
	for _, p := range d.se.Spec.Ports {
		if p.GetNumber() == port {
			sp = p
			break
		}
	}
	target := cmp.Or(sp.GetTargetPort(), port)
	var lbs []*endpointv3.LbEndpoint
	add := func(addr string, p uint32) {
		lbs = append(lbs, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(addr, p)}},
			HealthStatus:   corev3.HealthStatus_HEALTHY,
		})
	}
	if len(d.se.Spec.Endpoints) == 0 {
		add(d.host, target)
	}
	for _, ep := range d.se.Spec.Endpoints {
		if _, err := netip.ParseAddr(ep.GetAddress()); err != nil && !workload.DNSResolvable(ep.GetAddress()) {
			continue // reported by the workload translation
		}
		if !matchLabels(subset, ep.GetLabels()) {
			continue
		}
		add(ep.GetAddress(), cmp.Or(ep.GetPorts()[sp.GetName()], target))
	}
	if len(lbs) == 0 {
		return false
	}
	typ := clusterv3.Cluster_STRICT_DNS
	if d.roundRobin && len(lbs) == 1 {
		typ = clusterv3.Cluster_LOGICAL_DNS
	}
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: typ}
	c.EdsClusterConfig = nil
	c.DnsLookupFamily = clusterv3.Cluster_V4_ONLY
	// The cluster-level DNS fields Istio renders (Envoy deprecates them
	// for the envoy.clusters.dns extension, which the waypoint does not
	// read yet).
	//lint:ignore SA1019 as Istio renders it
	c.RespectDnsTtl = true
	//lint:ignore SA1019 as Istio renders it
	c.DnsRefreshRate = durationpb.New(dnsRefreshRate)
	c.LoadAssignment = &endpointv3.ClusterLoadAssignment{ClusterName: c.Name, Endpoints: []*endpointv3.LocalityLbEndpoints{
		{Locality: &corev3.Locality{}, LoadBalancingWeight: wrapperspb.UInt32(1), LbEndpoints: lbs}}}
	return true
}
