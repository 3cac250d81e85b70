package waypoint

import (
	"cmp"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// portConfig is the translated configuration of one service port: either
// HTTP routes or a TCP proxy, and the clusters they name.
type portConfig struct {
	svc  *service
	port *servicePort
	name string // "<fqdn>:<port>": chain, route configuration, listener
	tcp  bool

	routes   []*routev3.Route
	tcpProxy *tcpproxyv3.TcpProxy
	// sniChains are the port's tls routes (tlsroute.go), in order.
	sniChains []sniChain
	fault     bool // some route has a fault per-filter config
	cors      bool // some route has a CORS per-filter config
	clusters  map[string]clusterRef

	// gateway is the Istio Gateway "<ns>/<name>" the routes are for (svc
	// is then nil and port the Gateway server's); "" for the mesh.
	gateway string
}

// bound reports whether a match's gateways list (written in namespace ns)
// applies to what pc translates: the mesh, or pc's Gateway. An empty list
// means the VirtualService's own gateways, which led here.
func (pc *portConfig) bound(gateways []string, ns string) bool {
	if pc.gateway == "" {
		return forMesh(gateways)
	}
	return len(gateways) == 0 || slices.ContainsFunc(gateways, func(g string) bool { return gatewayRef(g, ns) == pc.gateway })
}

func (pc *portConfig) use(ref clusterRef) string {
	name := ref.name()
	pc.clusters[name] = ref
	return name
}

func (pc *portConfig) defaultRef() clusterRef {
	return clusterRef{svc: pc.svc, port: pc.port.number}
}

// buildServicePorts translates every port of every service.
func (t *translator) buildServicePorts() {
	for _, fqdn := range sortedKeys(t.services) {
		svc := t.services[fqdn]
		for _, p := range svc.ports {
			pc := &portConfig{svc: svc, port: p, name: endpointKey(fqdn, p.number), clusters: map[string]clusterRef{}}
			pc.use(pc.defaultRef())
			vs := t.virtualServices[fqdn]
			routes := t.httpRoutes[fqdn]
			switch {
			case p.protocol == protoTCP,
				p.protocol == protoSniffed && len(routes) == 0 && vs != nil && vs.tcpOnly(p.number):
				pc.tcp = true
				t.tcpRoute(pc, vs)
				t.tlsRoutes(pc, vs)
			default:
				if len(routes) > 0 {
					pc.routes = t.gammaRoutes(pc, routes)
				} else if vs != nil {
					if vs.tcpOnly(p.number) {
						// As in Istio, but not silently.
						t.problem(kindVS, vs.obj.Namespace, vs.obj.Name, "spec.tcp, spec.tls: port %d of %s is an HTTP port; tcp and tls routes apply to TCP ports only (TCP, TLS, HTTPS); ignored",
							p.number, fqdn)
					}
					pc.routes = t.vsHTTPRoutes(pc, vs)
				}
				if len(pc.routes) == 0 {
					pc.routes = []*routev3.Route{t.defaultRoute(pc)}
				}
			}
			t.ports[pc.name] = pc
		}
	}
}

// defaultRoute forwards everything to the service port's cluster.
func (t *translator) defaultRoute(pc *portConfig) *routev3.Route {
	a := &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: pc.use(pc.defaultRef())},
		Timeout:          durationpb.New(0),
		RetryPolicy:      defaultRetryPolicy(),
	}
	if hp := t.hashPolicy(pc.defaultRef()); hp != nil {
		a.HashPolicy = []*routev3.RouteAction_HashPolicy{hp}
	}
	return &routev3.Route{Name: "default", Match: prefixRouteMatch("/"), Action: &routev3.Route_Route{Route: a}}
}

func prefixRouteMatch(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}

// defaultRetryPolicy is Istio's retry policy for routes that set none.
func defaultRetryPolicy() *routev3.RetryPolicy {
	return &routev3.RetryPolicy{
		RetryOn:              "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
		NumRetries:           wrapperspb.UInt32(2),
		RetriableStatusCodes: []uint32{503},
	}
}

// routeConfig is the RouteConfiguration of an HTTP port. forGRPC leaves out
// the per-filter configs of filters that gRPC API listeners do not have,
// and the routes matching the peer (sourceNamespace): a gRPC client would
// ignore the filter_state match and take the route whatever its namespace,
// and the proxyless snapshot is shared by the clients of every namespace.
func (t *translator) routeConfig(pc *portConfig, forGRPC bool) *routev3.RouteConfiguration {
	// Snapshots never share messages: a consumer may mutate its own.
	routes := make([]*routev3.Route, 0, len(pc.routes))
	for _, r := range pc.routes {
		if forGRPC && len(r.GetMatch().GetFilterState()) > 0 {
			continue
		}
		r = cloneRoute(r)
		if forGRPC {
			r.TypedPerFilterConfig = nil
		}
		routes = append(routes, r)
	}
	return &routev3.RouteConfiguration{
		Name: pc.name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    pc.svc.fqdn,
			Domains: domains(pc.svc, pc.port.number),
			Routes:  routes,
		}},
	}
}

// domains lists the host names a service port answers to, as the
// contract says: FQDN, short names, VIPs (each also with ":<port>"), "*".
func domains(svc *service, port uint32) []string {
	p := ":" + itoa(port)
	names := []string{svc.fqdn}
	// Short names only for Kubernetes Services (not ServiceEntry hosts).
	if strings.HasPrefix(svc.fqdn, svc.name+"."+svc.namespace+".svc.") {
		names = append(names, svc.name, svc.name+"."+svc.namespace, svc.name+"."+svc.namespace+".svc")
	}
	var out []string
	for _, n := range names {
		out = append(out, n, n+p)
	}
	for _, ip := range svc.vips {
		if strings.Contains(ip, ":") {
			out = append(out, "["+ip+"]", "["+ip+"]"+p)
		} else {
			out = append(out, ip, ip+p)
		}
	}
	return append(out, "*")
}

// weightedDestination is one resolved route destination.
type weightedDestination struct {
	cluster        string
	ref            clusterRef
	weight         uint32
	requestAdd     []*corev3.HeaderValueOption
	requestRemove  []string
	responseAdd    []*corev3.HeaderValueOption
	responseRemove []string
}

// clusterSpecifier makes a route's cluster or weighted clusters. A single
// destination with header operations gets them on the route instead.
func clusterSpecifier(r *routev3.Route, a *routev3.RouteAction, dests []weightedDestination) {
	if len(dests) == 1 {
		d := dests[0]
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: d.cluster}
		r.RequestHeadersToAdd = append(r.RequestHeadersToAdd, d.requestAdd...)
		r.RequestHeadersToRemove = append(r.RequestHeadersToRemove, d.requestRemove...)
		r.ResponseHeadersToAdd = append(r.ResponseHeadersToAdd, d.responseAdd...)
		r.ResponseHeadersToRemove = append(r.ResponseHeadersToRemove, d.responseRemove...)
		return
	}
	wc := &routev3.WeightedCluster{}
	for _, d := range dests {
		wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{
			Name:                    d.cluster,
			Weight:                  wrapperspb.UInt32(d.weight),
			RequestHeadersToAdd:     d.requestAdd,
			RequestHeadersToRemove:  d.requestRemove,
			ResponseHeadersToAdd:    d.responseAdd,
			ResponseHeadersToRemove: d.responseRemove,
		})
	}
	a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
}

// directResponse answers with a status and no upstream.
func directResponse(status uint32, body string) *routev3.Route_DirectResponse {
	dr := &routev3.DirectResponseAction{Status: status}
	if body != "" {
		dr.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: body}}
	}
	return &routev3.Route_DirectResponse{DirectResponse: dr}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, cmp.Compare[string])
	return out
}
