package waypoint

import (
	"fmt"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	wellknown "github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/weft-mesh/weft/control/xds"
)

// TLS servers of ingress Gateways, as istiod translates them:
//   - protocol HTTPS, tls.mode SIMPLE, tls.credentialName: one filter chain
//     per server, matching the server's hosts as SNI ("*" matches any), with
//     a DownstreamTlsContext whose certificate is the SDS secret
//     "kubernetes://<credentialName>". The control plane never reads the
//     Secret: the gateway resolves the name from Secrets of its own
//     namespace (least privilege: keys stay in the gateway's namespace).
//     All HTTPS servers of a port share the routes "https.<port>".
//   - protocol TLS, tls.mode PASSTHROUGH: the tls routes of the
//     VirtualServices bound to the server, one filter chain per sniHosts
//     entry, a tcp_proxy to the route's destination; the TLS bytes are
//     forwarded as they are. A ClientHello no chain matches is closed.
//
//   - tls.mode MUTUAL and OPTIONAL_MUTUAL: as SIMPLE, plus a client
//     certificate check (downstreamTLS); the gateway drops a client's own
//     X-Forwarded-Client-Cert and sets it from a verified certificate.
//
// Departures: tls.mode ISTIO_MUTUAL and AUTO_PASSTHROUGH, certificates
// and CAs given as file paths (serverCertificate, caCertificates), CRLs and
// certificate pins, cipherSuites and min/max protocol versions are
// reported as Problems.

const (
	serverHTTP        = "HTTP"
	serverHTTPS       = "HTTPS"
	serverPassthrough = "TLS passthrough"

	// sdsPrefix names a credential the gateway reads from a Secret of its
	// own namespace (istiod's "kubernetes://" resource names).
	sdsPrefix = "kubernetes://"
)

// serverKindOf classifies a server serverKind accepted.
func serverKindOf(s *networkingapi.Server) string {
	switch strings.ToUpper(s.GetPort().GetProtocol()) {
	case "HTTPS":
		return serverHTTPS
	case "TLS":
		return serverPassthrough
	case "TCP", "MONGO", "REDIS", "MYSQL":
		return serverTCP
	}
	return serverHTTP
}

// serverKind checks server s at path of gw and returns its kind, or "" with
// a Problem when it cannot be served.
func (t *translator) serverKind(gw *networkingv1.Gateway, path string, s *networkingapi.Server) string {
	bad := func(format string, args ...any) string {
		t.problem(kindGateway, gw.Namespace, gw.Name, path+"."+format+"; server ignored", args...)
		return ""
	}
	tls := s.GetTls()
	switch strings.ToUpper(s.Port.Protocol) {
	case "HTTP", "HTTP2", "GRPC":
		if tls != nil && !proto.Equal(tls, &networkingapi.ServerTLSSettings{HttpsRedirect: tls.HttpsRedirect}) {
			t.problem(kindGateway, gw.Namespace, gw.Name, "%s.tls: TLS settings of an HTTP server other than httpsRedirect are ignored", path)
		}
		return serverHTTP
	case "HTTPS":
		switch {
		case tls == nil:
			return bad("tls: required for an HTTPS server")
		case tls.Mode != networkingapi.ServerTLSSettings_SIMPLE && !clientCertMode(tls.Mode):
			return bad("tls.mode: %s is not supported for HTTPS (SIMPLE, MUTUAL, OPTIONAL_MUTUAL)", tls.Mode)
		case clientCertMode(tls.Mode) && (tls.CaCertificates != "" || tls.CaCrl != "" ||
			len(tls.VerifyCertificateSpki) > 0 || len(tls.VerifyCertificateHash) > 0):
			return bad("tls: caCertificates, caCrl, verifyCertificateSpki and verifyCertificateHash are not supported " +
				"(the client CA comes from the Secret <credentialName>-cacert, or key ca.crt of the credential's Secret)")
		case tls.CredentialName == "":
			return bad("tls.credentialName: required (the name of a kubernetes.io/tls Secret in the gateway's namespace; file paths are not supported)")
		case strings.Contains(tls.CredentialName, "://"),
			// "<namespace>/<name>" only for Gateway API listeners, whose
			// certificateRefs and ReferenceGrants were checked (gateway_api.go).
			strings.Contains(tls.CredentialName, "/") && t.ingressRoutes[s] == nil:
			return bad("tls.credentialName: %q: want a Secret name of the gateway's namespace", tls.CredentialName)
		}
		if len(tls.CipherSuites) > 0 || tls.MinProtocolVersion != networkingapi.ServerTLSSettings_TLS_AUTO ||
			tls.MaxProtocolVersion != networkingapi.ServerTLSSettings_TLS_AUTO {
			t.problem(kindGateway, gw.Namespace, gw.Name, "%s.tls: cipherSuites and protocol versions are ignored (Go's defaults, TLS 1.2+)", path)
		}
		return serverHTTPS
	case "TLS":
		if tls == nil || tls.Mode != networkingapi.ServerTLSSettings_PASSTHROUGH {
			return bad("tls.mode: only PASSTHROUGH is supported for a TLS server")
		}
		return serverPassthrough
	case "TCP", "MONGO", "REDIS", "MYSQL":
		if tls != nil {
			return bad("tls: a %s server does not terminate TLS (use protocol TLS)", s.Port.Protocol)
		}
		return serverTCP
	default:
		return bad("port.protocol: %s is not supported (HTTP, HTTP2, GRPC, HTTPS, TLS, TCP)", s.Port.Protocol)
	}
}

// gatewayTLSListener adds the listener of a port with HTTPS and/or TLS
// passthrough servers to res; its filter chains select by SNI.
func (t *translator) gatewayTLSListener(res *xds.Resources, listen, port uint32, all []gatewayServer,
	vss []*networkingv1.VirtualService, refs map[string]clusterRef, authz gatewayAuthz) {
	l := &listenerv3.Listener{Name: "0.0.0.0_" + itoa(listen), Address: socketAddress("0.0.0.0", listen)}
	claims := sniClaims{}
	var servers, passthrough []gatewayServer
	for _, gs := range all {
		if serverKindOf(gs.server) == serverHTTPS {
			servers = append(servers, gs)
		} else {
			passthrough = append(passthrough, gs)
		}
	}
	if len(servers) > 0 {
		name := "https." + itoa(listen)
		rc, fault, cors := t.gatewayRoutes(name, port, servers, vss, refs)
		res.Routes = append(res.Routes, rc)
		for i, gs := range servers {
			chain := fmt.Sprintf("%s.%d", name, i)
			sni, ok := claims.claim(sniNames(gs.server.Hosts), chain)
			if !ok {
				t.problem(kindGateway, gs.gw.Namespace, gs.gw.Name, "spec.servers: HTTPS server on port %d: its hosts are already served by another server of the port; server ignored", port)
				continue
			}
			l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
				Name:             chain,
				FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(listen), ServerNames: wildcardNone(sni)},
				TransportSocket:  downstreamTLS(gs.server.Tls),
				Filters:          []*listenerv3.Filter{t.hcmFilter(name, fault, cors, authz.http(t, name, refs))},
			})
		}
	}
	if len(passthrough) > 0 {
		for _, vs := range vss {
			for _, gs := range passthrough {
				if !slices.ContainsFunc(vs.Spec.Gateways, func(g string) bool { return gatewayRef(g, vs.Namespace) == gs.key }) ||
					len(boundHosts(vs, gs.gw.Namespace, gs.server)) == 0 {
					continue
				}
				t.passthroughChains(l, vs, gs, listen, port, claims, refs, authz)
			}
		}
	}
	if len(l.FilterChains) > 0 {
		res.Listeners = append(res.Listeners, l)
	}
}

// passthroughChains adds a filter chain per sniHosts entry of the tls routes
// of vs that apply to server gs on port.
func (t *translator) passthroughChains(l *listenerv3.Listener, vs *networkingv1.VirtualService, gs gatewayServer, listen, port uint32,
	claims sniClaims, refs map[string]clusterRef, authz gatewayAuthz) {
	pc := &portConfig{port: &servicePort{number: port}, clusters: map[string]clusterRef{}, gateway: gs.key}
	c := &vsContext{t: t, vs: vs, pc: pc}
	for i, r := range vs.Spec.Tls {
		path := fmt.Sprintf("spec.tls[%d]", i)
		var sni []string
		for _, m := range r.GetMatch() {
			if (m.Port != 0 && m.Port != port) || (len(m.Gateways) > 0 && !slices.ContainsFunc(m.Gateways, func(g string) bool {
				return gatewayRef(g, vs.Namespace) == gs.key
			})) {
				continue
			}
			for _, h := range m.SniHosts {
				if slices.ContainsFunc(gs.server.Hosts, func(sh string) bool { _, host := cutNS(sh); return hostCovers(host, h) }) {
					sni = append(sni, strings.ToLower(h))
				}
			}
		}
		if len(sni) == 0 {
			continue
		}
		dests := c.tcpDestinations(path, r.GetRoute())
		if len(dests) == 0 {
			continue
		}
		chain := fmt.Sprintf("tls.%d.%s.%s.%d", listen, vs.Namespace, vs.Name, i)
		sni, ok := claims.claim(sni, chain)
		if !ok {
			t.problem(kindVS, vs.Namespace, vs.Name, "%s.match: every sniHosts entry on port %d of gateway %s is already routed; route ignored", path, port, gs.key)
			continue
		}
		tp := tcpProxyTo(chain, dests)
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			Name:             chain,
			FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(listen), ServerNames: wildcardNone(sni)},
			Filters:          t.tcpFilters(chain, tp, authz.pols),
		})
		for n, r := range pc.clusters {
			refs[n] = r
		}
	}
}

// cutNS splits a server host "<ns>/<host>" (no "/": any namespace).
func cutNS(h string) (ns, host string) {
	if ns, host, ok := strings.Cut(h, "/"); ok {
		return ns, host
	}
	return "*", h
}

// sniNames are the SNI names of a server's hosts, lower case, sorted; "*"
// alone when any name matches.
func sniNames(hosts []string) []string {
	var out []string
	for _, h := range hosts {
		_, host := cutNS(h)
		if host == "*" {
			return []string{"*"}
		}
		out = append(out, strings.ToLower(host))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// wildcardNone: a filter chain matching any SNI lists no server names.
func wildcardNone(names []string) []string {
	if slices.Contains(names, "*") {
		return nil
	}
	return names
}

// clientCertMode: the server checks client certificates.
func clientCertMode(m networkingapi.ServerTLSSettings_TLSmode) bool {
	return m == networkingapi.ServerTLSSettings_MUTUAL || m == networkingapi.ServerTLSSettings_OPTIONAL_MUTUAL
}

// downstreamTLS terminates TLS with the certificate the gateway resolves
// from Secret credentialName (HTTP/2 and HTTP/1.1 offered by ALPN). MUTUAL
// and OPTIONAL_MUTUAL check client certificates as istiod renders them:
// against the CA bundle of SDS name "<credentialName>-cacert" (the
// gateway reads the Secret of that name, or key ca.crt of the
// credential's own), with subjectAltNames as exact DNS or URI SANs.
func downstreamTLS(s *networkingapi.ServerTLSSettings) *corev3.TransportSocket {
	common := &tlsv3.CommonTlsContext{
		AlpnProtocols:                  []string{"h2", "http/1.1"},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: sdsPrefix + s.CredentialName}},
	}
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: common}
	if clientCertMode(s.Mode) {
		def := &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: exactSANs(s.SubjectAltNames)}
		common.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         def,
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: sdsPrefix + s.CredentialName + "-cacert"},
			}}
		ctx.RequireClientCertificate = wrapperspb.Bool(s.Mode == networkingapi.ServerTLSSettings_MUTUAL)
	}
	return &corev3.TransportSocket{Name: wellknown.TransportSocketTLS, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
}
