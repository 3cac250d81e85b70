package proxy

import (
	"crypto/x509"
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
	case len(common.GetTlsCertificates()) > 0:
		return errors.New("transport_socket: inline tls_certificates are not supported; name the certificate with tls_certificate_sds_secret_configs")
	case len(common.GetTlsCertificateSdsSecretConfigs()) != 1 || common.GetTlsCertificateSdsSecretConfigs()[0].GetName() == "":
		return errors.New("transport_socket: want exactly one named tls_certificate_sds_secret_configs")
	}
	c.tlsCert = common.GetTlsCertificateSdsSecretConfigs()[0].GetName()
	c.clientAuth, err = parseClientAuth(d)
	return err
}

// clientAuth is how a terminating chain checks client certificates
// (istiod's MUTUAL and OPTIONAL_MUTUAL): against the CA bundle an SDS name
// resolves to (Certificates.CAs), with the subject alternative names
// it accepts (empty: any).
type clientAuth struct {
	caName   string
	required bool
	sans     []sanMatch
}

// verify checks a verified client certificate's SANs (none listed: any
// certificate of the CA).
func (a *clientAuth) verify(cert *x509.Certificate) error {
	if len(a.sans) == 0 || acceptsSAN(cert, a.sans) {
		return nil
	}
	return errors.New("client certificate: no subject alternative name is accepted")
}

// parseClientAuth reads the validation context of d: an SDS name, alone or
// in a combined context whose default part only matches SANs exactly.
// Anything else (inline CAs, pins, other matchers) is refused rather than
// checked less strictly than configured.
func parseClientAuth(d *tlsv3.DownstreamTlsContext) (*clientAuth, error) {
	common := d.GetCommonTlsContext()
	var sds *tlsv3.SdsSecretConfig
	var def *tlsv3.CertificateValidationContext
	switch v := common.GetValidationContextType().(type) {
	case nil:
		if d.GetRequireClientCertificate().GetValue() {
			return nil, errors.New("transport_socket: require_client_certificate without a validation context")
		}
		return nil, nil
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		sds = v.ValidationContextSdsSecretConfig
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		sds, def = v.CombinedValidationContext.GetValidationContextSdsSecretConfig(), v.CombinedValidationContext.GetDefaultValidationContext()
	default:
		return nil, fmt.Errorf("transport_socket: validation context %T is not supported (an SDS name)", v)
	}
	if sds.GetName() == "" || sds.GetSdsConfig() != nil {
		return nil, errors.New("transport_socket: the client CA must be named by SDS (validation_context_sds_secret_config name)")
	}
	sans, err := parseSANs(def.GetMatchTypedSubjectAltNames())
	if err != nil {
		return nil, err
	}
	a := &clientAuth{caName: sds.GetName(), required: d.GetRequireClientCertificate().GetValue(), sans: sans}
	//lint:ignore SA1019 the deprecated untyped matchers are refused, not ignored
	if len(def.GetMatchSubjectAltNames()) > 0 || len(def.GetVerifyCertificateSpki()) > 0 || len(def.GetVerifyCertificateHash()) > 0 ||
		def.GetTrustedCa() != nil || def.GetCrl() != nil || def.GetTrustChainVerification() != tlsv3.CertificateValidationContext_VERIFY_TRUST_CHAIN {
		return nil, errors.New("transport_socket: the default validation context may only match subject alt names exactly (match_typed_subject_alt_names)")
	}
	return a, nil
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
