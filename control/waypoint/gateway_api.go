package waypoint

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/control/waypoint/deploy"
)

// Gateway API ingress: a Gateway of class "weft" is served like an Istio
// Gateway by gateway pods, and its HTTP listeners route with the
// HTTPRoutes whose parentRefs name it:
//   - the pods are those of the gateway Weft deploys for it, in its
//     namespace (control/waypoint/deploy ingress_deploy.go; their own
//     service account, so their snapshot holds this Gateway only), or,
//     when its annotation weft.io/gateway-selector names them (a label
//     selector, e.g. "istio=ingress"), those pods in any namespace
//     (charts/gateway's, shared with other Gateways; see docs/ingress.md);
//   - each HTTP listener becomes a server on its port (hostname: the
//     server host, none: "*"), each HTTPS listener (tls.mode Terminate)
//     an HTTPS server whose credential is its certificateRef's Secret,
//     "<namespace>/<name>" (deploy.ListenerCredential: ReferenceGrants
//     checked; the gateway reads it only from its own namespace and its
//     credentialNamespaces, see waypoint/gatewaycreds);
//     an HTTPRoute attaches with a parentRef of
//     kind Gateway (sectionName: that listener only; port: listeners on
//     that port), from the Gateway's namespace, or any namespace when
//     allowedRoutes.namespaces.from is All, or the namespaces its
//     selector selects when it is Selector; its rules are translated as
//     for GAMMA routes (match precedence across routes included), one
//     virtual host per route hostname that the listener accepts.
//
// Status (Accepted, Programmed, listener statuses) is written by
// control/waypoint/deploy. Departures: TLS, TCP and UDP listeners and
// HTTPS Passthrough are not implemented (HTTPRoute status:
// control/status).

const kindAPIGateway = "Gateway.gateway.networking.k8s.io"

// ingressGateways turns the Gateways of class weft into Istio Gateways
// with one HTTP server per HTTP listener, and records the HTTPRoutes
// attached to each server in t.ingressRoutes.
func (t *translator) ingressGateways(gws []*gatewayv1.Gateway, hrs []*gatewayv1.HTTPRoute, nss []*corev1.Namespace) []*networkingv1.Gateway {
	nsLabels := map[string]labels.Set{}
	for _, ns := range nss {
		if ns != nil {
			nsLabels[ns.Name] = ns.Labels
		}
	}
	hrs = slices.DeleteFunc(slices.Clone(hrs), func(r *gatewayv1.HTTPRoute) bool { return r == nil })
	slices.SortFunc(hrs, func(a, b *gatewayv1.HTTPRoute) int { return olderFirst(&a.ObjectMeta, &b.ObjectMeta) })
	var out []*networkingv1.Gateway
	for _, gw := range gws {
		if !deploy.IsIngress(gw) {
			continue
		}
		sel, err := deploy.IngressSelector(gw)
		if err != nil {
			t.problem(kindAPIGateway, gw.Namespace, gw.Name, "%v; ignored", err)
			continue
		}
		ig := &networkingv1.Gateway{ObjectMeta: *gw.ObjectMeta.DeepCopy()}
		ig.Spec.Selector = sel
		t.gatewayNamespaces[ig] = deploy.IngressNamespace(gw)
		if gw.Spec.TLS != nil && gw.Spec.TLS.Backend != nil {
			t.problem(kindAPIGateway, gw.Namespace, gw.Name, "spec.tls.backend: client certificates to backends are not supported; ignored (the gateway reaches mesh backends over HBONE with its own identity)")
		}
		conflicts := deploy.ListenerConflicts(gw)
		for i := range gw.Spec.Listeners {
			l := &gw.Spec.Listeners[i]
			path := fmt.Sprintf("spec.listeners[%d]", i)
			if !deploy.IngressProtocolSupported(l.Protocol) {
				t.problem(kindAPIGateway, gw.Namespace, gw.Name, "%s.%s", path, deploy.UnsupportedIngressProtocol(l.Protocol))
				continue
			}
			if msg := conflicts[i]; msg != "" {
				t.problem(kindAPIGateway, gw.Namespace, gw.Name, "%s: %s; listener ignored", path, msg)
				continue
			}
			host := "*"
			if l.Hostname != nil && *l.Hostname != "" {
				host = strings.ToLower(string(*l.Hostname))
			}
			s := &networkingapi.Server{Name: string(l.Name), Hosts: []string{host},
				Port: &networkingapi.Port{Number: uint32(l.Port), Protocol: "HTTP", Name: string(l.Name)}}
			if l.Protocol == gatewayv1.HTTPSProtocolType {
				// Served as an Istio HTTPS server whose credential names the
				// Secret with its namespace (gateway_tls.go).
				cred, err := deploy.ListenerCredential(gw, l, t.referenceGrants)
				if err != nil {
					t.problem(kindAPIGateway, gw.Namespace, gw.Name, "%s.%v; listener ignored", path, err)
					continue
				}
				s.Port.Protocol = serverHTTPS
				s.Tls = &networkingapi.ServerTLSSettings{Mode: networkingapi.ServerTLSSettings_SIMPLE, CredentialName: cred.String()}
			}
			ig.Spec.Servers = append(ig.Spec.Servers, s)
			t.ingressRoutes[s] = t.attachedRoutes(gw, i, hrs, nsLabels)
		}
		out = append(out, ig)
	}
	return out
}

// attachedRoutes are the HTTPRoutes that attach to listener i of gw
// (deploy.RouteAttaches: parentRefs, allowedRoutes, hostnames); nsLabels
// are the namespaces' labels by name, for allowedRoutes selectors.
func (t *translator) attachedRoutes(gw *gatewayv1.Gateway, i int, hrs []*gatewayv1.HTTPRoute, nsLabels map[string]labels.Set) []*gammaRoute {
	l := &gw.Spec.Listeners[i]
	if ar := l.AllowedRoutes; ar != nil && ar.Namespaces != nil && ptrOr(ar.Namespaces.From, "") == gatewayv1.NamespacesFromSelector {
		if _, err := deploy.AllowedNamespaces(l); err != nil {
			t.problem(kindAPIGateway, gw.Namespace, gw.Name, "listener %q: %v; no routes attach", l.Name, err)
			return []*gammaRoute{}
		}
	}
	out := []*gammaRoute{}
	for _, hr := range hrs {
		// A namespace not (yet) known has no labels.
		if deploy.RouteAttaches(gw, i, hr, nsLabels[hr.Namespace]) {
			out = append(out, &gammaRoute{obj: hr})
		}
	}
	return out
}

// apiRouteHosts are the hostnames of hr a listener with server host sh
// serves: the more specific of each matching pair; sh when hr has none.
func apiRouteHosts(hr *gatewayv1.HTTPRoute, sh string) []string {
	if len(hr.Spec.Hostnames) == 0 {
		return []string{sh}
	}
	var out []string
	for _, h := range hr.Spec.Hostnames {
		rh := strings.ToLower(string(h))
		switch {
		case hostCovers(sh, rh):
			out = append(out, rh)
		case hostCovers(rh, sh):
			out = append(out, sh)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// apiGatewayRoutes adds to rc the virtual hosts of the servers that come
// from Gateway API listeners: per hostname, the rules of the HTTPRoutes
// attached for it. taken holds the hosts already served on the port.
func (t *translator) apiGatewayRoutes(rc *routev3.RouteConfiguration, name string, port uint32, servers []gatewayServer,
	taken map[string]string, refs map[string]clusterRef) (fault, cors bool) {
	for _, gs := range servers {
		attached, ok := t.ingressRoutes[gs.server]
		if !ok {
			continue
		}
		// A route applies to every host its hostnames cover: one without
		// hostnames ("*" here) adds its rules to the other routes' hosts.
		hostsOf := map[*gammaRoute][]string{}
		byHost := map[string][]*gammaRoute{}
		for _, g := range attached {
			hostsOf[g] = apiRouteHosts(g.obj, gs.server.Hosts[0])
			for _, h := range hostsOf[g] {
				byHost[h] = nil
			}
		}
		for h := range byHost {
			for _, g := range attached {
				if slices.ContainsFunc(hostsOf[g], func(rh string) bool { return hostCovers(rh, h) }) {
					byHost[h] = append(byHost[h], g)
				}
			}
		}
		for _, h := range slices.Sorted(maps.Keys(byHost)) {
			if prev, dup := taken[h]; dup {
				t.problem(kindAPIGateway, gs.gw.Namespace, gs.gw.Name, "listener %q: host %q on port %d is already served by %s; ignored for this host",
					gs.server.Name, h, port, prev)
				continue
			}
			taken[h] = kindAPIGateway + " " + gs.key
			pc := &portConfig{port: &servicePort{number: port, protocol: protoHTTP}, name: name, clusters: map[string]clusterRef{}, gateway: gs.key}
			rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{Name: h, Domains: gatewayDomains(h), Routes: t.gammaRoutes(pc, byHost[h])})
			fault, cors = fault || pc.fault, cors || pc.cors
			for n, r := range pc.clusters {
				refs[n] = r
			}
		}
	}
	return fault, cors
}
