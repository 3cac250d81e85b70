package waypoint

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/weft-mesh/weft/control/xds"
	"github.com/weft-mesh/weft/pkg/mesh"
)

// Ingress gateways (Istio networking.istio.io Gateway + VirtualServices
// bound to it with spec.gateways), translated for gateway deployments such
// as charts/gateway. Semantics kept from istiod:
//   - a Gateway's selector picks gateway pods in every namespace (istiod's
//     default, PILOT_SCOPE_GATEWAY_TO_NAMESPACE=false); the pods' namespace
//     and service account name the deployment, whose snapshot holds the
//     servers of every Gateway selecting any of its pods;
//   - a server port is served on the targetPort of the gateway's Service
//     port with that number (charts/gateway maps 80 to 8080), else on the
//     port itself; the listener is "0.0.0.0_<port>" and its routes
//     "http.<port>", as istiod names them;
//   - a VirtualService applies when spec.gateways names the Gateway
//     ("<ns>/<name>", or "<name>" in the VirtualService's namespace) and
//     one of its hosts matches one of the server's hosts; its http routes
//     are translated exactly as for waypoints, match.gateways and
//     match.port (the server port) included;
//   - a request no route matches gets 404 (no default route);
//   - tls.httpsRedirect on an HTTP server: every host of the server
//     answers 301 to https, same host and path (istiod's require_tls ALL),
//     bound to a VirtualService or not.
//
// HTTPS and TLS servers: see gateway_tls.go. Departures: TCP servers get a
// Problem; two VirtualServices for the same host
// on one port are not merged (the oldest wins); the namespace part of
// server hosts ("<ns>/<host>") is honoured, exportTo is not.

const kindGateway = "Gateway.networking.istio.io"

// gatewayServer is one HTTP server of a Gateway, on one listener port.
type gatewayServer struct {
	gw     *networkingv1.Gateway
	key    string // "<ns>/<name>" of gw
	server *networkingapi.Server
}

// gatewayRef resolves an entry of a VirtualService's spec.gateways written
// in namespace ns to "<ns>/<name>".
func gatewayRef(g, ns string) string {
	if strings.Contains(g, "/") {
		return g
	}
	return ns + "/" + g
}

// buildGatewayProxies translates every Gateway into the snapshots of the gateway
// deployments its selector picks, keyed by "<namespace>/<service account>"
// of their pods.
func (t *translator) buildGatewayProxies(in Inputs) map[string]*xds.Resources {
	gws := slices.DeleteFunc(slices.Clone(in.IstioGateways), func(g *networkingv1.Gateway) bool { return g == nil })
	gws = append(gws, t.ingressGateways(in.IngressGateways, in.HTTPRoutes, in.Namespaces)...) // gateway_api.go
	if len(gws) == 0 {
		return nil
	}
	slices.SortFunc(gws, func(a, b *networkingv1.Gateway) int { return olderFirst(&a.ObjectMeta, &b.ObjectMeta) })
	pods := slices.DeleteFunc(slices.Clone(in.Pods), func(p *corev1.Pod) bool {
		return p == nil || p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	})
	slices.SortFunc(pods, func(a, b *corev1.Pod) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	// Deployments by key: the Gateways selecting them and one pod (for the
	// Service lookup).
	type deployment struct {
		gateways []*networkingv1.Gateway
		pod      *corev1.Pod
	}
	deps := map[string]*deployment{}
	for _, gw := range gws {
		if len(gw.Spec.Selector) == 0 {
			t.problem(kindGateway, gw.Namespace, gw.Name, "spec.selector: empty; Weft needs the labels of the gateway pods (e.g. istio: ingress); ignored")
			continue
		}
		sel := labels.SelectorFromSet(gw.Spec.Selector)
		for _, p := range pods {
			if ns := t.gatewayNamespaces[gw]; !sel.Matches(labels.Set(p.Labels)) || ns != "" && p.Namespace != ns {
				continue
			}
			key := p.Namespace + "/" + cmp.Or(p.Spec.ServiceAccountName, "default")
			d := deps[key]
			if d == nil {
				d = &deployment{pod: p}
				deps[key] = d
			}
			if !slices.Contains(d.gateways, gw) {
				d.gateways = append(d.gateways, gw)
			}
		}
	}
	vss := slices.DeleteFunc(slices.Clone(in.VirtualServices), func(v *networkingv1.VirtualService) bool {
		return v == nil || len(v.Spec.Gateways) == 0 || len(v.Spec.Hosts) == 0
	})
	slices.SortFunc(vss, func(a, b *networkingv1.VirtualService) int { return olderFirst(&a.ObjectMeta, &b.ObjectMeta) })
	out := map[string]*xds.Resources{}
	for key, d := range deps {
		out[key] = t.gatewayResources(d.gateways, d.pod, in.Services, vss)
	}
	return out
}

// gatewayResources is the snapshot of one gateway deployment.
func (t *translator) gatewayResources(gws []*networkingv1.Gateway, pod *corev1.Pod, svcs []*corev1.Service, vss []*networkingv1.VirtualService) *xds.Resources {
	byPort := map[uint32][]gatewayServer{} // listen port -> servers
	serverPort := map[uint32]uint32{}      // listen port -> server port
	for _, gw := range gws {
		key := gw.Namespace + "/" + gw.Name
		for i, s := range gw.Spec.Servers {
			path := fmt.Sprintf("spec.servers[%d]", i)
			if s == nil || s.Port == nil || s.Port.Number == 0 || s.Port.Number > 65535 {
				t.problem(kindGateway, gw.Namespace, gw.Name, "%s.port: a port number from 1 to 65535 is required; server ignored", path)
				continue
			}
			kind := t.serverKind(gw, path, s)
			if kind == "" {
				continue
			}
			listen := listenPort(pod, svcs, s.Port.Number)
			if prev, ok := serverPort[listen]; ok && prev != s.Port.Number {
				t.problem(kindGateway, gw.Namespace, gw.Name, "%s.port: %d is served on %d like port %d of another server; server ignored", path, s.Port.Number, listen, prev)
				continue
			}
			if prev := byPort[listen]; len(prev) > 0 && listenerFamily(serverKindOf(prev[0].server)) != listenerFamily(kind) {
				t.problem(kindGateway, gw.Namespace, gw.Name, "%s.port: %d already has %s servers; a %s server cannot share it; server ignored",
					path, s.Port.Number, serverKindOf(prev[0].server), kind)
				continue
			}
			serverPort[listen] = s.Port.Number
			byPort[listen] = append(byPort[listen], gatewayServer{gw: gw, key: key, server: s})
		}
	}
	res := &xds.Resources{}
	refs := map[string]clusterRef{}
	authz := t.gatewayAuthzFor(pod, gws)
	for _, listen := range slices.Sorted(maps.Keys(byPort)) {
		switch serverKindOf(byPort[listen][0].server) {
		case serverTCP:
			t.gatewayTCPListener(res, listen, serverPort[listen], byPort[listen], vss, refs, authz)
			continue
		case serverHTTPS, serverPassthrough:
			t.gatewayTLSListener(res, listen, serverPort[listen], byPort[listen], vss, refs, authz)
			continue
		}
		name := "http." + itoa(listen)
		rc, fault, cors := t.gatewayRoutes(name, serverPort[listen], byPort[listen], vss, refs)
		res.Routes = append(res.Routes, rc)
		res.Listeners = append(res.Listeners, &listenerv3.Listener{
			Name:    "0.0.0.0_" + itoa(listen),
			Address: socketAddress("0.0.0.0", listen),
			FilterChains: []*listenerv3.FilterChain{{
				Name:             name,
				FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(listen)},
				Filters:          []*listenerv3.Filter{t.hcmFilter(name, fault, cors, authz.http(t, name, refs))},
			}},
		})
	}
	t.addClusters(res, refs, false, notForGateways)
	t.viaWaypoints(res, refs)
	upstreamHTTP2(res, refs)
	t.applyTelemetry(res, gatewayTelemetryTarget(pod, gws))
	t.applyEnvoyFilters(res, t.gatewayTarget(pod, gws, serverPort))
	sortResources(res)
	return res
}

// gatewayRoutes is the RouteConfiguration of one listener port: a virtual
// host per VirtualService host bound to one of the servers.
func (t *translator) gatewayRoutes(name string, port uint32, servers []gatewayServer, vss []*networkingv1.VirtualService,
	refs map[string]clusterRef) (rc *routev3.RouteConfiguration, fault, cors bool) {
	rc = &routev3.RouteConfiguration{Name: name}
	taken := map[string]string{} // host -> VirtualService "<ns>/<name>"
	fault, cors = t.apiGatewayRoutes(rc, name, port, servers, taken, refs)
	for _, vs := range vss {
		if !t.checkWeights(vs) {
			continue
		}
		vsKey := vs.Namespace + "/" + vs.Name
		for _, gs := range servers {
			if _, api := t.ingressRoutes[gs.server]; api ||
				!slices.ContainsFunc(vs.Spec.Gateways, func(g string) bool { return gatewayRef(g, vs.Namespace) == gs.key }) {
				continue
			}
			hosts := boundHosts(vs, gs.gw.Namespace, gs.server)
			if len(hosts) == 0 {
				continue
			}
			pc := &portConfig{port: &servicePort{number: port, protocol: protoHTTP}, name: name,
				clusters: map[string]clusterRef{}, gateway: gs.key}
			routes := t.vsHTTPRoutes(pc, &virtualService{obj: vs})
			for _, h := range hosts {
				if prev, ok := taken[h]; ok {
					if prev != vsKey {
						t.problem(kindVS, vs.Namespace, vs.Name, "spec.hosts: %q on port %d of gateway %s already has the older VirtualService %s; ignored for this host",
							h, port, gs.key, prev)
					}
					continue
				}
				taken[h] = vsKey
				vh := &routev3.VirtualHost{Name: h, Domains: gatewayDomains(h)}
				rc.VirtualHosts = append(rc.VirtualHosts, vh)
				if redirectsToHTTPS(gs.server) {
					vh.Routes = []*routev3.Route{httpsRedirectRoute()}
					continue
				}
				for _, r := range routes {
					vh.Routes = append(vh.Routes, cloneRoute(r))
				}
				fault, cors = fault || pc.fault, cors || pc.cors
				for n, r := range pc.clusters {
					refs[n] = r
				}
			}
		}
	}
	addHTTPSRedirects(rc, servers)
	slices.SortFunc(rc.VirtualHosts, func(a, b *routev3.VirtualHost) int {
		// "*" last: Envoy prefers exact and longer wildcard domains anyway,
		// this only keeps the output readable.
		return cmp.Or(cmp.Compare(boolInt(a.Name == "*"), boolInt(b.Name == "*")), cmp.Compare(a.Name, b.Name))
	})
	return rc, fault, cors
}

// listenerFamily groups the server kinds that can share a port: HTTP,
// TLS (HTTPS and passthrough, told apart by SNI), TCP.
func listenerFamily(kind string) string {
	if kind == serverHTTPS {
		return serverPassthrough
	}
	return kind
}

// redirectsToHTTPS: s is an HTTP server with tls.httpsRedirect (on an
// HTTPS server the setting has no effect, as in Istio).
func redirectsToHTTPS(s *networkingapi.Server) bool {
	return s.GetTls().GetHttpsRedirect() && serverKindOf(s) == serverHTTP
}

// addHTTPSRedirects makes every host of a server with httpsRedirect
// redirect, as istiod's require_tls ALL does: the virtual host of that
// name, or a new one when no VirtualService is bound to the host.
func addHTTPSRedirects(rc *routev3.RouteConfiguration, servers []gatewayServer) {
	for _, gs := range servers {
		if !redirectsToHTTPS(gs.server) {
			continue
		}
		for _, sh := range gs.server.Hosts {
			h := strings.ToLower(sh[strings.Index(sh, "/")+1:]) // without the "<ns>/" part
			if i := slices.IndexFunc(rc.VirtualHosts, func(vh *routev3.VirtualHost) bool { return vh.Name == h }); i >= 0 {
				rc.VirtualHosts[i].Routes = []*routev3.Route{httpsRedirectRoute()}
				continue
			}
			rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{Name: h, Domains: gatewayDomains(h), Routes: []*routev3.Route{httpsRedirectRoute()}})
		}
	}
}

// httpsRedirectRoute answers every request with 301 to the same host and
// path over https.
func httpsRedirectRoute() *routev3.Route {
	return &routev3.Route{Match: prefixRouteMatch("/"), Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
		SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true},
		ResponseCode:           routev3.RedirectAction_MOVED_PERMANENTLY,
	}}}
}

// gatewayDomains: a host and the host with any port ("*" stays alone).
func gatewayDomains(h string) []string {
	if h == "*" {
		return []string{"*"}
	}
	return []string{h, h + ":*"}
}

// boundHosts are the hosts of vs that server s of a Gateway in namespace
// gwNS exposes: the more specific of each matching (VirtualService host,
// server host) pair. A server host's "<ns>/" part limits it to
// VirtualServices of that namespace ("." the Gateway's, "*" any).
func boundHosts(vs *networkingv1.VirtualService, gwNS string, s *networkingapi.Server) []string {
	var out []string
	for _, sh := range s.Hosts {
		ns, host, ok := strings.Cut(sh, "/")
		if !ok {
			ns, host = "*", sh
		}
		if ns == "." {
			ns = gwNS
		}
		if ns != "*" && ns != vs.Namespace {
			continue
		}
		for _, vh := range vs.Spec.Hosts {
			switch {
			case hostCovers(host, vh):
				out = append(out, strings.ToLower(vh))
			case hostCovers(vh, host):
				out = append(out, strings.ToLower(host))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// hostCovers reports whether pattern ("*", "*.example.com" or a name)
// matches every name host matches.
func hostCovers(pattern, host string) bool {
	pattern, host = strings.ToLower(pattern), strings.ToLower(host)
	switch {
	case pattern == "*":
		return true
	case strings.HasPrefix(pattern, "*."):
		return strings.HasSuffix(host, pattern[1:])
	}
	return pattern == host
}

// listenPort is the port the gateway pods serve a Gateway server port on:
// the targetPort of the pod's Service port with that number (a named
// targetPort is resolved with the pod's container ports), else the port.
func listenPort(pod *corev1.Pod, svcs []*corev1.Service, port uint32) uint32 {
	for _, svc := range svcs {
		if svc == nil || svc.Namespace != pod.Namespace || len(svc.Spec.Selector) == 0 ||
			!labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels)) {
			continue
		}
		for _, p := range svc.Spec.Ports {
			if uint32(p.Port) != port || (p.Protocol != "" && p.Protocol != corev1.ProtocolTCP) {
				continue
			}
			if n := p.TargetPort.IntValue(); n > 0 {
				return uint32(n)
			}
			for _, c := range pod.Spec.Containers {
				for _, cp := range c.Ports {
					if p.TargetPort.StrVal != "" && cp.Name == p.TargetPort.StrVal {
						return uint32(cp.ContainerPort)
					}
				}
			}
			return port
		}
	}
	return port
}

// upstreamHTTP2 makes the gateway's clusters of ports with an HTTP/2
// protocol (http2, grpc, grpc-web, h2c: kubernetes.io/h2c) send HTTP/2
// whatever the client spoke, as Istio's gateways pick the upstream
// protocol from the destination port. A client's HTTP/2 with the gateway
// otherwise says nothing about the destination (the proxy keeps it for
// gRPC only).
func upstreamHTTP2(res *xds.Resources, refs map[string]clusterRef) {
	for _, c := range res.Clusters {
		ref, ok := refs[c.Name]
		if !ok || ref.svc == nil || c.TransportSocket != nil {
			continue // TLS origination offers http/1.1 only
		}
		if p := ref.svc.port(ref.port); p == nil || !p.http2 {
			continue
		}
		opts := &upstreamhttpv3.HttpProtocolOptions{}
		if a := c.TypedExtensionProtocolOptions[mesh.HTTPProtocolOptionsKey]; a != nil && a.UnmarshalTo(opts) != nil {
			continue
		}
		opts.UpstreamProtocolOptions = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}}
		c.TypedExtensionProtocolOptions = map[string]*anyMsg{mesh.HTTPProtocolOptionsKey: mustAny(opts)}
	}
}
