package waypoint

import (
	"slices"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/weft-mesh/weft/control/xds"
)

// TCP servers of ingress Gateways (protocol TCP, or MONGO, REDIS and MYSQL,
// which istiod serves as TCP), as in Istio's TCP traffic shifting task:
// the port gets one filter chain whose tcp_proxy goes to the destinations
// of the first tcp route that applies, from the VirtualServices bound to
// the port's servers, oldest first (a route applies when one of its
// matches names the port, or none does, and the gateway when it names
// gateways). Later VirtualServices' routes for the port are reported as
// shadowed; matches on the source (sourceLabels, sourceNamespace,
// sourceSubnet, destinationSubnets) are reported and never apply. No
// route: no listener, so connections are refused.

const serverTCP = "TCP"

// gatewayTCPListener adds the listener of a port with TCP servers to res.
func (t *translator) gatewayTCPListener(res *xds.Resources, listen, port uint32, servers []gatewayServer,
	vss []*networkingv1.VirtualService, refs map[string]clusterRef, authz gatewayAuthz) {
	chain := "tcp." + itoa(listen)
	var dests []weightedDestination
	var from string // the VirtualService routing the port
	for _, vs := range vss {
		for _, gs := range servers {
			if !slices.ContainsFunc(vs.Spec.Gateways, func(g string) bool { return gatewayRef(g, vs.Namespace) == gs.key }) ||
				len(boundHosts(vs, gs.gw.Namespace, gs.server)) == 0 {
				continue
			}
			pc := &portConfig{port: &servicePort{number: port, protocol: protoTCP}, name: chain, clusters: map[string]clusterRef{}, gateway: gs.key}
			d := t.gatewayTCPRoute(pc, vs, gs.key)
			switch {
			case len(d) == 0:
				continue
			case from == "":
				dests, from = d, vs.Namespace+"/"+vs.Name
				for n, r := range pc.clusters {
					refs[n] = r
				}
			case from != vs.Namespace+"/"+vs.Name:
				t.problem(kindVS, vs.Namespace, vs.Name, "spec.tcp: port %d of gateway %s is already routed by the older VirtualService %s; ignored there", port, gs.key, from)
			}
		}
	}
	if len(dests) == 0 {
		return
	}
	res.Listeners = append(res.Listeners, &listenerv3.Listener{
		Name:    "0.0.0.0_" + itoa(listen),
		Address: socketAddress("0.0.0.0", listen),
		FilterChains: []*listenerv3.FilterChain{{
			Name:             chain,
			FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(listen)},
			Filters:          t.tcpFilters(chain, tcpProxyTo(chain, dests), authz.pols),
		}},
	})
}

// gatewayTCPRoute is the destinations of the first tcp route of vs that
// applies to port pc.port of gateway gw: its match names the port (or
// none) and the gateway (or none).
func (t *translator) gatewayTCPRoute(pc *portConfig, vs *networkingv1.VirtualService, gw string) []weightedDestination {
	c := &vsContext{t: t, vs: vs, pc: pc}
	return c.firstTCPRoute("gateways", func(m *networkingapi.L4MatchAttributes) bool {
		return (m.Port == 0 || m.Port == pc.port.number) &&
			(len(m.Gateways) == 0 || slices.ContainsFunc(m.Gateways, func(g string) bool { return gatewayRef(g, vs.Namespace) == gw }))
	})
}
