package proxy

import (
	"errors"
	"fmt"
	"strings"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// parseTLSMatch reads the SNI part of a gateway filter chain: the
// filter_chain_match server_names and a DownstreamTlsContext transport
// socket naming its certificate by SDS name (control/waypoint/gateway_tls.go
// emits them). Anything the gateway would not honour is rejected rather
// than served with weaker TLS.
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

// needsSNI reports whether a connection to port must be routed by its
// ClientHello: some chain of the port terminates TLS or matches names.
func (cs *chainSet) needsSNI(port uint16) bool {
	for _, c := range cs.all {
		if (c.port == 0 || c.port == uint32(port)) && (c.tlsCert != "" || len(c.serverNames) > 0) {
			return true
		}
	}
	return false
}

// matchSNI picks the chain of port for a ClientHello's server name as
// Envoy does: an exact name first, then the longest matching wildcard,
// then a chain without server names; nil when none matches.
func (cs *chainSet) matchSNI(port uint16, sni string) *chain {
	sni = strings.ToLower(strings.TrimSuffix(sni, "."))
	var best *chain
	bestScore := -1
	for _, c := range cs.all {
		if c.port != 0 && c.port != uint32(port) {
			continue
		}
		score := -1
		if len(c.serverNames) == 0 {
			score = 0
		}
		for _, n := range c.serverNames {
			switch {
			case n == sni:
				score = max(score, 1<<20)
			case strings.HasPrefix(n, "*.") && strings.HasSuffix(sni, n[1:]) && len(sni) > len(n)-1:
				score = max(score, len(n))
			}
		}
		if score > bestScore {
			best, bestScore = c, score
		}
	}
	return best
}
