package waypoint

import (
	"fmt"
	"strings"

	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	networkingapi "istio.io/api/networking/v1alpha3"
)

// VirtualService tls routes at waypoints, for a service port the mesh
// treats as TCP (protocol TCP, TLS or HTTPS by name or appProtocol, or an
// unnamed port whose VirtualService routes it as tcp/tls only): one filter
// chain per tls route, next to the port's chain, matching the port, the
// service's addresses and the route's sniHosts as server_names, with a
// tcp_proxy to the route's destinations. The waypoint reads the
// ClientHello without answering it and forwards it, and everything after
// it, unchanged: TLS is not terminated. A ClientHello no route names, and
// a connection that is not TLS, take the port's own chain (its tcp route,
// else the service), as Envoy's chain without server_names.
//
// Departures, reported: sniHosts "*" (that is a tcp route), and
// destinationSubnets, sourceLabels, sourceNamespace (the match never
// applies). A name an earlier route claimed stays with that route.

// sniChain is the filter chain of one tls route on a port.
type sniChain struct {
	name        string
	serverNames []string
	tcpProxy    *tcpproxyv3.TcpProxy
}

// tlsRoutes translates the tls routes of vs that apply to TCP port pc.
func (t *translator) tlsRoutes(pc *portConfig, vs *virtualService) {
	if vs == nil {
		return
	}
	c := &vsContext{t: t, vs: vs.obj, pc: pc}
	claims := sniClaims{}
	for i, r := range vs.obj.Spec.Tls {
		path := fmt.Sprintf("spec.tls[%d]", i)
		sni := c.tlsMatchHosts(path, r.GetMatch())
		if len(sni) == 0 {
			continue
		}
		dests := c.tcpDestinations(path, r.GetRoute())
		if len(dests) == 0 {
			continue
		}
		name := fmt.Sprintf("%s|tls.%d", pc.name, i)
		sni, ok := claims.claim(sni, name)
		if !ok {
			c.problem("%s.match: every sniHosts entry on port %d is already routed by an earlier tls route; route ignored", path, pc.port.number)
			continue
		}
		pc.sniChains = append(pc.sniChains, sniChain{name: name, serverNames: sni, tcpProxy: tcpProxyTo(name, dests)})
	}
}

// tlsMatchHosts are the sniHosts of the matches of a tls route that apply
// to the mesh on pc's port, lower case.
func (c *vsContext) tlsMatchHosts(path string, ms []*networkingapi.TLSMatchAttributes) []string {
	var out []string
	for j, m := range ms {
		if m == nil || (m.Port != 0 && m.Port != c.pc.port.number) || !forMesh(m.Gateways) {
			continue
		}
		mp := fmt.Sprintf("%s.match[%d]", path, j)
		if len(m.DestinationSubnets) > 0 || len(m.SourceLabels) > 0 || m.SourceNamespace != "" {
			c.problem("%s: only sniHosts, port and gateways are supported by waypoints; this match never applies", mp)
			continue
		}
		for k, h := range m.SniHosts {
			h = strings.ToLower(h)
			switch {
			case h == "*":
				c.problem("%s.sniHosts[%d]: \"*\" matches any name: use a tcp route; ignored", mp, k)
			case (strings.Contains(h, "*") && !strings.HasPrefix(h, "*.")) || strings.Count(h, "*") > 1 || h == "":
				c.problem("%s.sniHosts[%d]: %q is not a name or *.<domain>; ignored", mp, k, h)
			default:
				out = append(out, h)
			}
		}
	}
	return out
}

// sniClaims are the SNI names the chains of one listener port match: Envoy
// rejects a listener in which two chains match the same name, so the
// first chain to name it keeps it.
type sniClaims map[string]string

// claim returns the names no earlier chain took, now taken by chain;
// false: none was left.
func (s sniClaims) claim(names []string, chain string) ([]string, bool) {
	var out []string
	for _, n := range names {
		if _, dup := s[n]; !dup {
			s[n] = chain
			out = append(out, n)
		}
	}
	return out, len(out) > 0
}
