package waypoint

import (
	"cmp"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/weft-mesh/weft/control/xds"
)

// efTarget is a snapshot EnvoyFilters may patch: a waypoint's or an
// ingress gateway deployment's.
type efTarget struct {
	waypoint bool
	name     string // "waypoint <ns>/<name>", "gateway <ns>/<service account>"
	takes    func(*envoyFilter) bool
	// vhostNames are the names a virtual host answers to in a match: its
	// own and the ones Istio gives it.
	vhostNames func(rc *routev3.RouteConfiguration, vh *routev3.VirtualHost) []string
}

// waypointTarget is the waypoint key, for EnvoyFilters with targetRefs to
// it. Istio's names of a waypoint virtual host: "inbound|http|<port>" and
// "<fqdn>:<port>" besides Weft's "<fqdn>".
func waypointTarget(key string) efTarget {
	return efTarget{
		waypoint: true,
		name:     "waypoint " + key,
		takes:    func(ef *envoyFilter) bool { return slices.Contains(ef.gateways, key) },
		vhostNames: func(rc *routev3.RouteConfiguration, vh *routev3.VirtualHost) []string {
			port := routeConfigPort(rc.Name)
			if port == 0 {
				return []string{vh.Name}
			}
			return []string{vh.Name, vh.Name + ":" + itoa(port), "inbound|http|" + itoa(port)}
		},
	}
}

// gatewayTarget is the gateway deployment of pod serving gws, for
// EnvoyFilters with targetRefs to one of gws or a workloadSelector of pod
// (in pod's namespace or the root namespace). Istio's name of a gateway
// virtual host is "<host>:<server port>"; serverPort maps a listen port to
// it.
func (t *translator) gatewayTarget(pod *corev1.Pod, gws []*networkingv1.Gateway, serverPort map[uint32]uint32) efTarget {
	return efTarget{
		name: "gateway " + pod.Namespace + "/" + cmp.Or(pod.Spec.ServiceAccountName, "default"),
		takes: func(ef *envoyFilter) bool {
			if ef.selector != nil {
				ns := ef.obj.Namespace
				return (ns == pod.Namespace || ns == t.cfg.RootNamespace) && ef.selector.Matches(labels.Set(pod.Labels))
			}
			return slices.ContainsFunc(gws, func(g *networkingv1.Gateway) bool { return slices.Contains(ef.gateways, g.Namespace+"/"+g.Name) })
		},
		vhostNames: func(rc *routev3.RouteConfiguration, vh *routev3.VirtualHost) []string {
			if sp, ok := serverPort[routeConfigPort(rc.Name)]; ok {
				return []string{vh.Name, vh.Name + ":" + itoa(sp)}
			}
			return []string{vh.Name}
		},
	}
}

// routeConfigPort is the port of a route configuration named
// "<fqdn>:<port>" (waypoint) or "http.<port>" (gateway), 0 for others.
func routeConfigPort(name string) uint32 {
	i := strings.LastIndexAny(name, ":.")
	if i < 0 {
		return 0
	}
	n, err := strconv.ParseUint(name[i+1:], 10, 16)
	if err != nil {
		return 0
	}
	return uint32(n)
}

// contextApplies: a waypoint takes every context but GATEWAY, a gateway
// ANY and GATEWAY.
func contextApplies(c networkingapi.EnvoyFilter_PatchContext, waypoint bool) bool {
	if waypoint {
		return c != networkingapi.EnvoyFilter_GATEWAY
	}
	return c == networkingapi.EnvoyFilter_ANY || c == networkingapi.EnvoyFilter_GATEWAY
}

// applyEnvoyFilters patches res with the EnvoyFilters tg takes, in order.
func (t *translator) applyEnvoyFilters(res *xds.Resources, tg efTarget) {
	for _, ef := range t.envoyFilters {
		if !tg.takes(ef) {
			continue
		}
		ef.targeted = true
		for _, p := range ef.patches {
			if !contextApplies(p.context, tg.waypoint) {
				p.skipped = true
				ef.problem(t, "%s.match.context %s does not apply to %s; patch not applied there", p.path, p.context, tg.name)
				continue
			}
			if p.filter == nil {
				p.mergePerFilter(res, tg)
				continue
			}
			before := p.applied
			p.insertFilter(res)
			if p.rls != nil && p.applied > before {
				t.addMissingCluster(res, *p.rls)
			}
		}
	}
}

// reportEnvoyFilters reports EnvoyFilters that targeted nothing and
// patches that matched nothing.
func (t *translator) reportEnvoyFilters() {
	for _, ef := range t.envoyFilters {
		if !ef.targeted {
			ef.problem(t, "targets no waypoint or ingress gateway Weft serves; not applied")
			continue
		}
		for _, p := range ef.patches {
			if p.applied == 0 && !p.skipped {
				ef.problem(t, "%s: matches nothing in the waypoints and gateways the EnvoyFilter targets; not applied", p.path)
			}
		}
	}
}

// rateLimitProxy: the rate limit service's cluster, added by an
// EnvoyFilter, gets no locality priorities.
var rateLimitProxy = &proxyLocality{notApplied: "the cluster of a rate limit service does not apply it"}

// addMissingCluster adds ref's cluster and load assignment to res unless
// res has it already (the rate limit service may also be a destination of
// the waypoint's routes).
func (t *translator) addMissingCluster(res *xds.Resources, ref clusterRef) {
	name := ref.name()
	if slices.ContainsFunc(res.Clusters, func(c *clusterv3.Cluster) bool { return c.Name == name }) {
		return
	}
	t.addClusters(res, map[string]clusterRef{name: ref}, false, rateLimitProxy)
	sortResources(res)
}

// insertFilter inserts the patch's filter into every HTTP connection
// manager its listener match selects.
func (p *efPatch) insertFilter(res *xds.Resources) {
	for _, l := range res.Listeners {
		if n := p.listener.GetName(); n != "" && n != l.Name {
			continue
		}
		for _, fc := range l.FilterChains {
			if !p.chainMatches(l, fc) {
				continue
			}
			for _, f := range fc.Filters {
				hcm := &hcmv3.HttpConnectionManager{}
				if f.Name != wellknown.HTTPConnectionManager || f.GetTypedConfig().UnmarshalTo(hcm) != nil {
					continue
				}
				sub := filterName(p.listener.GetFilterChain().GetFilter().GetSubFilter().GetName())
				fs, ok := insertHTTPFilter(hcm.HttpFilters, proto.Clone(p.filter).(*hcmv3.HttpFilter), p.op, sub)
				if !ok {
					continue
				}
				hcm.HttpFilters = fs
				f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)}
				p.applied++
			}
		}
	}
}

// chainMatches: listener.portNumber is the listener's port or the chain's
// destination port (a waypoint's service port); filterChain.name the
// chain's name.
func (p *efPatch) chainMatches(l *listenerv3.Listener, fc *listenerv3.FilterChain) bool {
	if n := p.listener.GetPortNumber(); n != 0 && n != l.GetAddress().GetSocketAddress().GetPortValue() &&
		n != fc.GetFilterChainMatch().GetDestinationPort().GetValue() {
		return false
	}
	name := p.listener.GetFilterChain().GetName()
	return name == "" || name == fc.Name
}

// insertHTTPFilter inserts f as op says relative to the filter named sub
// ("": none), false when sub is not there or f would go after the router.
func insertHTTPFilter(fs []*hcmv3.HttpFilter, f *hcmv3.HttpFilter, op networkingapi.EnvoyFilter_Patch_Operation, sub string) ([]*hcmv3.HttpFilter, bool) {
	i := 0
	if op != networkingapi.EnvoyFilter_Patch_INSERT_FIRST && sub != "" {
		i = slices.IndexFunc(fs, func(h *hcmv3.HttpFilter) bool { return h.Name == sub })
		if i < 0 {
			return fs, false
		}
		if op == networkingapi.EnvoyFilter_Patch_INSERT_AFTER {
			i++
		}
	}
	if router := slices.IndexFunc(fs, func(h *hcmv3.HttpFilter) bool { return h.Name == wellknown.Router }); router >= 0 && i > router {
		return fs, false
	}
	return slices.Insert(fs, i, f), true
}

// mergePerFilter merges the patch's typed_per_filter_config into the
// route configurations, virtual hosts or routes it matches.
func (p *efPatch) mergePerFilter(res *xds.Resources, tg efTarget) {
	for _, rc := range res.Routes {
		if !p.routeConfigMatches(rc) {
			continue
		}
		if p.applyTo == networkingapi.EnvoyFilter_ROUTE_CONFIGURATION {
			rc.TypedPerFilterConfig = p.merged(rc.TypedPerFilterConfig)
			continue
		}
		for _, vh := range rc.VirtualHosts {
			if !p.vhostMatches(rc, vh, tg) {
				continue
			}
			if p.applyTo == networkingapi.EnvoyFilter_VIRTUAL_HOST {
				if len(p.perFilter) > 0 {
					vh.TypedPerFilterConfig = p.merged(vh.TypedPerFilterConfig)
				}
				for _, rl := range p.rateLimits {
					vh.RateLimits = append(vh.RateLimits, proto.Clone(rl).(*routev3.RateLimit))
				}
				if len(p.perFilter) == 0 {
					p.applied++
				}
				continue
			}
			for _, r := range vh.Routes {
				if p.routeMatches(r) {
					r.TypedPerFilterConfig = p.merged(r.TypedPerFilterConfig)
				}
			}
		}
	}
}

// merged is m with the patch's entries (proto MERGE of a map replaces
// the entries it has), each a copy: snapshots share no message.
func (p *efPatch) merged(m map[string]*anypb.Any) map[string]*anypb.Any {
	if m == nil {
		m = map[string]*anypb.Any{}
	}
	for k, v := range p.perFilter {
		m[k] = proto.Clone(v).(*anypb.Any)
	}
	p.applied++
	return m
}

func (p *efPatch) routeConfigMatches(rc *routev3.RouteConfiguration) bool {
	if n := p.rc.GetName(); n != "" && n != rc.Name {
		return false
	}
	n := p.rc.GetPortNumber()
	return n == 0 || n == routeConfigPort(rc.Name)
}

func (p *efPatch) vhostMatches(rc *routev3.RouteConfiguration, vh *routev3.VirtualHost, tg efTarget) bool {
	m := p.rc.GetVhost()
	if n := m.GetName(); n != "" && !slices.Contains(tg.vhostNames(rc, vh), n) {
		return false
	}
	d := m.GetDomainName()
	return d == "" || slices.Contains(vh.Domains, d)
}

func (p *efPatch) routeMatches(r *routev3.Route) bool {
	m := p.rc.GetVhost().GetRoute()
	if n := m.GetName(); n != "" && n != r.Name {
		return false
	}
	switch m.GetAction() {
	case networkingapi.EnvoyFilter_RouteConfigurationMatch_RouteMatch_ROUTE:
		return r.GetRoute() != nil
	case networkingapi.EnvoyFilter_RouteConfigurationMatch_RouteMatch_REDIRECT:
		return r.GetRedirect() != nil
	case networkingapi.EnvoyFilter_RouteConfigurationMatch_RouteMatch_DIRECT_RESPONSE:
		return r.GetDirectResponse() != nil
	}
	return true
}
