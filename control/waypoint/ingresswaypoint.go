package waypoint

import (
	"net"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/structpb"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/control/xds"
	"github.com/weft-mesh/weft/pkg/mesh"
)

// ingressUseWaypoint reads mesh.LabelIngressUseWaypoint as istiod does: the
// Service's label when it has one, else its namespace's; "true" in any
// case turns it on.
func ingressUseWaypoint(svcLabels, nsLabels map[string]string) bool {
	v, ok := svcLabels[mesh.LabelIngressUseWaypoint]
	if !ok {
		v = nsLabels[mesh.LabelIngressUseWaypoint]
	}
	return strings.EqualFold(v, "true")
}

// viaWaypoints points an ingress gateway's clusters for Services that ask
// for it (ingressViaWaypoint) at their waypoint, as istiod does for
// istio.io/ingress-use-waypoint: the endpoints are the waypoint's pods,
// reached over HBONE with their identity verified and the CONNECT to the
// Service's VIP, so the waypoint applies the Service's routes and policies
// (its AuthorizationPolicies see the gateway's identity). A Service
// without a VIP keeps its endpoints (a waypoint serves VIPs), as in
// istiod; a waypoint without ready pods leaves the cluster without
// endpoints (503), never a path around it.
func (t *translator) viaWaypoints(res *xds.Resources, refs map[string]clusterRef) {
	for i, cla := range res.Endpoints {
		ref, ok := refs[cla.ClusterName]
		if !ok || !ref.svc.ingressViaWaypoint || ref.svc.waypoint == "" || len(ref.svc.vips) == 0 {
			continue
		}
		ns, name, _ := strings.Cut(ref.svc.waypoint, "/")
		wp := name + "." + ns + ".svc." + t.cfg.DomainSuffix
		delete(t.claSources, cla)
		res.Endpoints[i] = t.recordCLA(endpointKey(wp, mesh.HBONEPort), func() *endpointv3.ClusterLoadAssignment {
			return t.viaWaypoint(cla.ClusterName, ref, wp)
		})
	}
}

// viaWaypoint is the load assignment of cluster (ref's) whose endpoints
// are the pods of waypoint Service wp (its FQDN).
func (t *translator) viaWaypoint(cluster string, ref clusterRef, wp string) *endpointv3.ClusterLoadAssignment {
	target := net.JoinHostPort(preferIPv4(ref.svc.vips), itoa(ref.port))
	var lbs []*endpointv3.LbEndpoint
	var locs []*corev3.Locality
	var labels []map[string]string
	for _, ep := range t.endpoints[endpointKey(wp, mesh.HBONEPort)] {
		lbs = append(lbs, t.waypointEndpoint(ep.workload, ep.ip, ref.port, target))
		locs = append(locs, localityOf(ep.workload))
		labels = append(labels, nil)
	}
	out := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	for _, g := range groupByLocality(lbs, locs, labels) {
		out.Endpoints = append(out.Endpoints, g.lle)
	}
	return out
}

// waypointEndpoint is one waypoint pod as the endpoint of a Service's
// cluster: addressed at the service port (one pooled connection per
// Service and pod), always over HBONE (a waypoint is not an enrolled
// workload, and only takes HBONE).
func (t *translator) waypointEndpoint(w *workloadv1.Workload, ip string, port uint32, target string) *endpointv3.LbEndpoint {
	md := t.endpointMetadata(w)
	f := md.FilterMetadata[mesh.MetadataNamespace].Fields
	f["tunnel"] = structpb.NewStringValue(mesh.HBONEProtocol)
	f[mesh.MetadataTunnelTarget] = structpb.NewStringValue(target)
	lb := &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(ip, port)}},
		HealthStatus:   corev3.HealthStatus_HEALTHY,
		Metadata:       md,
	}
	if w.Status == workloadv1.WorkloadStatus_UNHEALTHY {
		lb.HealthStatus = corev3.HealthStatus_UNHEALTHY
	}
	return lb
}
