package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// parseTLSMatch reads the SNI part of a filter chain: the
// filter_chain_match server_names (a gateway's TLS port, a waypoint's
// VirtualService tls routes) and a gateway's DownstreamTlsContext
// transport socket naming its certificate by SDS name
// (control/waypoint/gateway_tls.go and tlsroute.go emit them). Anything
// the gateway would not honour is rejected rather than served with weaker
// TLS.
func parseTLSMatch(c *chain, fc *listenerv3.FilterChain) error {
	for _, n := range fc.GetFilterChainMatch().GetServerNames() {
		n = strings.ToLower(n)
		if n == "" || (strings.Contains(n, "*") && !strings.HasPrefix(n, "*.")) || strings.Count(n, "*") > 1 {
			return fmt.Errorf("server_names %q: want a name or *.<domain>", n)
		}
		c.serverNames = append(c.serverNames, n)
	}
	ts := fc.GetTransportSocket()
	if ts == nil {
		return nil
	}
	msg, err := ts.GetTypedConfig().UnmarshalNew()
	if err != nil {
		return fmt.Errorf("transport_socket %q: %w", ts.GetName(), err)
	}
	d, ok := msg.(*tlsv3.DownstreamTlsContext)
	if !ok {
		return fmt.Errorf("transport_socket %q: %T is not supported (DownstreamTlsContext only)", ts.GetName(), msg)
	}
	common := d.GetCommonTlsContext()
	switch {
	case d.GetRequireClientCertificate().GetValue() || common.GetValidationContextType() != nil:
		return errors.New("transport_socket: client certificate validation (MUTUAL) is not supported")
	case len(common.GetTlsCertificates()) > 0:
		return errors.New("transport_socket: inline tls_certificates are not supported; name the certificate with tls_certificate_sds_secret_configs")
	case len(common.GetTlsCertificateSdsSecretConfigs()) != 1 || common.GetTlsCertificateSdsSecretConfigs()[0].GetName() == "":
		return errors.New("transport_socket: want exactly one named tls_certificate_sds_secret_configs")
	}
	c.tlsCert = common.GetTlsCertificateSdsSecretConfigs()[0].GetName()
	return nil
}

// covers reports whether c applies to dst by port and address.
func (c *chain) covers(dst netip.AddrPort) bool {
	if c.port != 0 && c.port != uint32(dst.Port()) {
		return false
	}
	return len(c.prefixes) == 0 || slices.ContainsFunc(c.prefixes, func(p netip.Prefix) bool { return p.Contains(dst.Addr()) })
}

// needsSNI reports whether a connection to dst must be routed by its
// ClientHello: some chain for dst terminates TLS or matches names (a
// gateway's TLS port, a waypoint's VirtualService tls routes).
func (cs *chainSet) needsSNI(dst netip.AddrPort) bool {
	for _, c := range cs.all {
		if (c.tlsCert != "" || len(c.serverNames) > 0) && c.covers(dst) {
			return true
		}
	}
	return false
}

// matchSNI picks the chain for dst and a ClientHello's server name as
// Envoy does: an exact name first, then the longest matching wildcard,
// then the chain match picks among those without server names (also for
// no SNI, or no ClientHello at all); nil when none matches.
func (cs *chainSet) matchSNI(dst netip.AddrPort, sni string) *chain {
	sni = strings.ToLower(strings.TrimSuffix(sni, "."))
	var best *chain
	bestScore := 0
	for _, c := range cs.all {
		if len(c.serverNames) == 0 || !c.covers(dst) {
			continue
		}
		for _, n := range c.serverNames {
			score := 0
			switch {
			case n == sni:
				score = 1 << 20
			case strings.HasPrefix(n, "*.") && strings.HasSuffix(sni, n[1:]) && len(sni) > len(n)-1:
				score = len(n)
			}
			if score > bestScore {
				best, bestScore = c, score
			}
		}
	}
	if best != nil {
		return best
	}
	return cs.match(dst)
}
