package waypoint

import (
	"cmp"
	"net/netip"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/control/xds"
	"github.com/weft-mesh/weft/pkg/mesh"
)

// served is what one waypoint serves.
type served struct {
	services  []*service
	workloads []*workloadv1.Workload
}

func (t *translator) buildWaypoints() map[string]*xds.Resources {
	wps := map[string]*served{}
	get := func(key string) *served {
		if wps[key] == nil {
			wps[key] = &served{}
		}
		return wps[key]
	}
	for _, fqdn := range sortedKeys(t.services) {
		if s := t.services[fqdn]; s.waypoint != "" && len(s.ports) > 0 && len(s.vips) > 0 {
			get(s.waypoint).services = append(get(s.waypoint).services, s)
		}
	}
	for _, w := range t.workloads {
		if key := t.waypointKey(w.Waypoint); key != "" && len(w.Addresses) > 0 {
			get(key).workloads = append(get(key).workloads, w)
		}
	}
	out := make(map[string]*xds.Resources, len(wps))
	for key, s := range wps {
		out[key] = t.waypointResources(key, s)
	}
	return out
}

func (t *translator) waypointResources(key string, s *served) *xds.Resources {
	res := &xds.Resources{}
	l := &listenerv3.Listener{Name: mesh.WaypointListener, Address: socketAddress("0.0.0.0", mesh.HBONEPort)}
	refs := map[string]clusterRef{}
	for _, svc := range s.services {
		for _, p := range svc.ports {
			pc := t.ports[endpointKey(svc.fqdn, p.number)]
			fc := &listenerv3.FilterChain{
				Name: pc.name,
				FilterChainMatch: &listenerv3.FilterChainMatch{
					DestinationPort: wrapperspb.UInt32(p.number),
					PrefixRanges:    cidrs(svc.vips),
				},
			}
			pols := append(slices.Clone(t.gatewayPolicies[key]), t.servicePolicies[svc.fqdn]...)
			if pc.tcp {
				fc.Filters = t.tcpFilters(pc.name, pc.tcpProxy, pols)
				for _, sc := range pc.sniChains {
					l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
						Name: sc.name,
						FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(p.number),
							PrefixRanges: cidrs(svc.vips), ServerNames: sc.serverNames},
						Filters: t.tcpFilters(sc.name, sc.tcpProxy, pols),
					})
				}
			} else {
				jwt := jwtAuthn(append(slices.Clone(t.gatewayJWT[key]), t.serviceJWT[svc.fqdn]...))
				authz := t.httpAuthz(pc.name, jwt, pols)
				fc.Filters = []*listenerv3.Filter{t.hcmFilter(pc.name, pc.fault, pc.cors, authz)}
				authz.addCluster(refs)
				res.Routes = append(res.Routes, t.routeConfig(pc, false))
			}
			l.FilterChains = append(l.FilterChains, fc)
			for n, r := range pc.clusters {
				refs[n] = r
			}
		}
		for _, r := range t.subsetClusters(svc, false) {
			refs[r.name()] = r
		}
	}
	ips := t.addWorkloadChains(key, s, l, res, refs)
	res.Listeners = []*listenerv3.Listener{l}
	if len(ips) > 0 {
		res.Clusters = append(res.Clusters, passthrough())
	}
	t.addClusters(res, refs, false, t.waypointLocality(key))
	t.applyTelemetry(res, waypointTelemetryTarget(key))
	t.applyEnvoyFilters(res, waypointTarget(key))
	sortResources(res)
	return res
}

// addWorkloadChains adds a chain per address of the waypoint's workloads
// (traffic addressed to a pod rather than a Service) to l, with its
// passthrough route, and returns those addresses.
func (t *translator) addWorkloadChains(key string, s *served, l *listenerv3.Listener, res *xds.Resources, refs map[string]clusterRef) []string {
	var ips []string
	for _, w := range s.workloads {
		for _, a := range w.Addresses {
			if isIP(a) {
				ips = append(ips, a)
			}
		}
	}
	slices.Sort(ips)
	ips = slices.Compact(ips)
	for _, ip := range ips {
		name := workloadChainPrefix + ip
		authz := t.httpAuthz(name, jwtAuthn(slices.Clone(t.gatewayJWT[key])), slices.Clone(t.gatewayPolicies[key]))
		authz.addCluster(refs)
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			Name:             name,
			FilterChainMatch: &listenerv3.FilterChainMatch{PrefixRanges: cidrs([]string{ip})},
			Filters:          []*listenerv3.Filter{t.hcmFilter(name, false, false, authz)},
		})
		res.Routes = append(res.Routes, &routev3.RouteConfiguration{
			Name: name,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    name,
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Name:  "default",
					Match: prefixRouteMatch("/"),
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: passthroughCluster},
						Timeout:          durationpb.New(0),
						RetryPolicy:      defaultRetryPolicy(),
					}},
				}},
			}},
		})
	}
	return ips
}

// tcpFilters are the network filters of a TCP chain: RBAC, then tcp_proxy.
func (t *translator) tcpFilters(chain string, tp *tcpproxyv3.TcpProxy, pols []*authzPolicy) []*listenerv3.Filter {
	return append(t.networkRBAC(chain, pols),
		&listenerv3.Filter{Name: wellknown.TCPProxy, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(tp)}})
}

// networkRBAC is the envoy.filters.network.rbac filters of a TCP chain
// (DENY, then ALLOW, as on HTTP chains) from the same policies an HTTP
// chain of the service would apply: a policy bound to a Service or
// waypoint covers all its ports, and the node agents skip policies with
// targetRefs. What the TCP translation drops is reported on the policy.
func (t *translator) networkRBAC(chain string, pols []*authzPolicy) []*listenerv3.Filter {
	for _, p := range pols {
		for _, msg := range p.tcpProblems {
			t.problem(kindAP, p.ns, p.name, "%s (TCP port %s)", msg, chain)
		}
	}
	deny, allow := rbacConfigs(pols, true)
	var out []*listenerv3.Filter
	for _, r := range []struct {
		stat  string
		rules rbacRules
	}{{rbacDeny, deny}, {rbacAllow, allow}} {
		if !r.rules.empty() {
			out = append(out, &listenerv3.Filter{Name: wellknown.RoleBasedAccessControl, ConfigType: &listenerv3.Filter_TypedConfig{
				TypedConfig: mustAny(&netrbacv3.RBAC{StatPrefix: r.stat + ".", Rules: r.rules.rules,
					ShadowRules: r.rules.shadow, ShadowRulesStatPrefix: shadowStatPrefix(r.rules)})}})
		}
	}
	return out
}

// shadowStatPrefix is Istio's stat prefix of dry-run rules.
func shadowStatPrefix(r rbacRules) string {
	switch {
	case r.shadow == nil:
		return ""
	case r.shadow.Action == rbacv3.RBAC_DENY:
		return "istio_dry_run_deny_"
	}
	return "istio_dry_run_allow_"
}

// chainAuthz is what authenticates and authorizes the requests of an
// HTTP chain: the jwt_authn config, the CUSTOM policies' external
// authorizer and the RBAC filters' rules.
type chainAuthz struct {
	jwt         *jwtauthnv3.JwtAuthentication
	audit       *rbacv3.RBAC // AUDIT policies: RBAC action LOG
	custom      *customChain
	deny, allow rbacRules
}

// httpAuthz is the authorization of HTTP chain from pols. CUSTOM policies
// that cannot share the chain's provider deny (customAuthz).
func (t *translator) httpAuthz(chain string, jwt *jwtauthnv3.JwtAuthentication, pols []*authzPolicy) chainAuthz {
	a := chainAuthz{jwt: jwt, audit: auditRules(pols)}
	var failClosed []*authzPolicy
	a.custom, failClosed = t.customAuthz(chain, pols)
	pols = slices.Clone(pols)
	for i, p := range pols {
		if slices.Contains(failClosed, p) {
			denying := *p
			denying.custom = nil
			pols[i] = &denying
		}
	}
	a.deny, a.allow = rbacConfigs(pols, false)
	return a
}

// addCluster adds the external authorizer's cluster to refs.
func (a chainAuthz) addCluster(refs map[string]clusterRef) {
	if a.custom != nil {
		refs[a.custom.authz.ref.name()] = a.custom.authz.ref
	}
}

// addClusters adds the clusters and load assignments of refs.
// proxy is where the proxy served runs (locality load balancing).
func (t *translator) addClusters(res *xds.Resources, refs map[string]clusterRef, forGRPC bool, proxy *proxyLocality) {
	for _, name := range sortedKeys(refs) {
		c := t.cluster(refs[name], forGRPC)
		res.Clusters = append(res.Clusters, c)
		if c.GetType() == clusterv3.Cluster_EDS { // DNS clusters carry their own
			ref := refs[name]
			res.Endpoints = append(res.Endpoints, t.recordCLA(endpointKey(ref.svc.fqdn, ref.port), func() *endpointv3.ClusterLoadAssignment {
				return t.loadAssignment(ref, forGRPC, proxy)
			}))
		}
	}
}

func sortResources(res *xds.Resources) {
	slices.SortFunc(res.Listeners, func(a, b *listenerv3.Listener) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(res.Routes, func(a, b *routev3.RouteConfiguration) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(res.Clusters, func(a, b *clusterv3.Cluster) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(res.Endpoints, func(a, b *endpointv3.ClusterLoadAssignment) int { return cmp.Compare(a.ClusterName, b.ClusterName) })
}

// buildGRPC is the proxyless gRPC snapshot: an API listener per HTTP service
// port of the mesh, with the same routes (minus HTTP filters gRPC API
// listeners lack), clusters, and plain endpoints.
func (t *translator) buildGRPC() *xds.Resources {
	res := &xds.Resources{}
	refs := map[string]clusterRef{}
	for _, fqdn := range sortedKeys(t.services) {
		svc := t.services[fqdn]
		any := false
		for _, p := range svc.ports {
			pc := t.ports[endpointKey(fqdn, p.number)]
			if pc.tcp {
				continue
			}
			any = true
			hcm := &hcmv3.HttpConnectionManager{
				StatPrefix: pc.name,
				RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
					ConfigSource: adsSource(), RouteConfigName: pc.name}},
				HttpFilters: []*hcmv3.HttpFilter{routerFilter()},
			}
			res.Listeners = append(res.Listeners, &listenerv3.Listener{
				Name:        pc.name,
				ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(hcm)},
			})
			res.Routes = append(res.Routes, t.routeConfig(pc, true))
			for n, r := range pc.clusters {
				refs[n] = r
			}
		}
		if any {
			for _, r := range t.subsetClusters(svc, true) {
				refs[r.name()] = r
			}
		}
	}
	t.addClusters(res, refs, true, grpcClients)
	sortResources(res)
	return res
}

func routerFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: wellknown.Router, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}}
}

// hcmFilter is the HTTP connection manager of a chain, with the mesh's
// path normalization and the HTTP filters in the contract's order, each
// only when used. WebSocket upgrades are allowed, as Istio allows them on
// every HTTP listener, and "Expect: 100-continue" goes to the server
// (Istio leaves Envoy answering it itself, which sends bodies a server
// may have refused).
func (t *translator) hcmFilter(name string, fault, cors bool, authz chainAuthz) *listenerv3.Filter {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: adsSource(), RouteConfigName: name}},
		UpgradeConfigs:    []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
		Proxy_100Continue: true,
	}
	setPathNormalization(hcm, t.cfg.PathNormalization)
	add := func(n string, m proto.Message) {
		hcm.HttpFilters = append(hcm.HttpFilters, &hcmv3.HttpFilter{Name: n, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(m)}})
	}
	if fault {
		add(wellknown.Fault, &faultv3.HTTPFault{})
	}
	if cors {
		add(wellknown.CORS, &corsv3.Cors{})
	}
	if authz.jwt != nil {
		add(jwtAuthnFilter, authz.jwt)
	}
	if authz.audit != nil {
		add(rbacAudit, &rbacfilterv3.RBAC{Rules: authz.audit})
	}
	if c := authz.custom; c != nil {
		add(extAuthzRBACFilter, &rbacfilterv3.RBAC{ShadowRules: c.rules, ShadowRulesStatPrefix: extAuthzShadowPrefix})
		add(extAuthzFilter, c.authz.filter)
	}
	for _, r := range []struct {
		name  string
		rules rbacRules
	}{{rbacDeny, authz.deny}, {rbacAllow, authz.allow}} {
		if !r.rules.empty() {
			add(r.name, &rbacfilterv3.RBAC{Rules: r.rules.rules, ShadowRules: r.rules.shadow, ShadowRulesStatPrefix: shadowStatPrefix(r.rules)})
		}
	}
	hcm.HttpFilters = append(hcm.HttpFilters, routerFilter())
	return &listenerv3.Filter{Name: wellknown.HTTPConnectionManager, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)}}
}

func cidrs(ips []string) []*corev3.CidrRange {
	var out []*corev3.CidrRange
	for _, ip := range ips {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			continue
		}
		out = append(out, &corev3.CidrRange{AddressPrefix: a.String(), PrefixLen: wrapperspb.UInt32(uint32(a.BitLen()))})
	}
	return out
}
