package server

import (
	"runtime/debug"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/control/discovery"
	"github.com/weft-mesh/weft/control/waypoint"
	"github.com/weft-mesh/weft/control/workload"
	"github.com/weft-mesh/weft/control/xds"
)

// translateWaypoints runs control/waypoint's translation into the Envoy
// resources of every node group, with the problems found. addrs is the
// workload translation's output. A panic in it is logged and the waypoints
// keep their last snapshots, while the node agents' workload state (already
// pushed) is unaffected.
func (t *translator) translateWaypoints(in workload.Inputs, traffic discovery.TrafficInputs,
	addrs map[string]*workloadv1.Address) (groups map[string]xds.Resources, problems []workload.Problem, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			t.log.Error("waypoint translation panicked; waypoints keep their last configuration", "panic", r, "stack", string(debug.Stack()))
			ok = false
		}
	}()
	out := t.waypoints.Translate(waypoint.Inputs{
		Addresses:              addrs,
		Services:               in.Services,
		Pods:                   in.Pods,
		VirtualServices:        traffic.VirtualServices,
		DestinationRules:       traffic.DestinationRules,
		HTTPRoutes:             traffic.HTTPRoutes,
		AuthorizationPolicies:  in.AuthorizationPolicies,
		RequestAuthentications: traffic.RequestAuthentications,
		IstioGateways:          traffic.IstioGateways,
		IngressGateways:        in.Gateways,
		Namespaces:             in.Namespaces,
		ServiceEntries:         in.ServiceEntries,
		EnvoyFilters:           traffic.EnvoyFilters,
		Telemetries:            traffic.Telemetries,
		ReferenceGrants:        traffic.ReferenceGrants,
		SkipGRPC:               !t.xds.HasGRPCClients(), // control/xds/grpcgroup.go
	})
	kind := "endpoints"
	if _, full := t.waypoints.Rebuilt(); full {
		kind = "full"
	}
	t.metrics.waypoints.WithLabelValues(kind).Inc()
	return out.Groups(), out.Problems, true
}
