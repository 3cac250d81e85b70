package server

import (
	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/control/discovery"
	"github.com/weft-mesh/weft/control/waypoint"
	"github.com/weft-mesh/weft/control/workload"
	"github.com/weft-mesh/weft/control/xds"
)

// waypointTranslator runs control/waypoint's translation and converts its
// output to the xDS server's node groups (a variable so that the wiring can
// be tested, or built without the translation, by replacing it).
var waypointTranslator waypointTranslateFunc = translateWaypoints

func translateWaypoints(cfg waypoint.Config, in workload.Inputs, traffic discovery.TrafficInputs,
	addresses map[string]*workloadv1.Address) (map[string]xds.Resources, []workload.Problem) {
	out := waypoint.Translate(cfg, waypoint.Inputs{
		Addresses:             addresses,
		Services:              in.Services,
		Pods:                  in.Pods,
		VirtualServices:       traffic.VirtualServices,
		DestinationRules:      traffic.DestinationRules,
		HTTPRoutes:            traffic.HTTPRoutes,
		AuthorizationPolicies: in.AuthorizationPolicies,
		IstioGateways:         traffic.IstioGateways,
		IngressGateways:       in.Gateways,
		ServiceEntries:        in.ServiceEntries,
	})
	groups := make(map[string]xds.Resources, len(out.Waypoints)+len(out.GatewayProxies)+1)
	for name, r := range out.Waypoints {
		if r != nil {
			groups[name] = xds.Resources{Listeners: r.Listeners, Routes: r.Routes, Clusters: r.Clusters, Endpoints: r.Endpoints}
		}
	}
	for nsSA, r := range out.GatewayProxies {
		if r != nil {
			groups[xds.GatewayGroup(nsSA)] = xds.Resources{Listeners: r.Listeners, Routes: r.Routes, Clusters: r.Clusters, Endpoints: r.Endpoints}
		}
	}
	if out.GRPC != nil {
		groups[xds.GroupGRPC] = xds.Resources{Listeners: out.GRPC.Listeners, Routes: out.GRPC.Routes, Clusters: out.GRPC.Clusters, Endpoints: out.GRPC.Endpoints}
	}
	return groups, out.Problems
}
