package waypoint

import (
	"cmp"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	wellknown "github.com/envoyproxy/go-control-plane/pkg/wellknown"
	networkingapi "istio.io/api/networking/v1alpha3"
)

// originates: the DestinationRule TLS modes that originate TLS to the
// endpoints (e.g. at an egress gateway). DISABLE and ISTIO_MUTUAL are what
// the mesh does anyway (HBONE carries mTLS).
func originates(s *networkingapi.ClientTLSSettings) bool {
	return s.GetMode() == networkingapi.ClientTLSSettings_SIMPLE || s.GetMode() == networkingapi.ClientTLSSettings_MUTUAL
}

// originateTLS is the transport socket of a cluster whose DestinationRule
// says tls.mode SIMPLE or MUTUAL, rendered as istiod renders it. SNI is
// tls.sni, else the service host. The server certificate is always
// verified: against the CA bundle of SDS name "<credentialName>-cacert"
// (the gateway reads it from its own namespace), else tls.caCertificates
// (a file path read by the proxy), else the proxy's system roots; it must
// carry one of subjectAltNames, or without them name the SNI host. MUTUAL
// presents the certificate of Secret credentialName, else the files
// clientCertificate and privateKey.
func originateTLS(s *networkingapi.ClientTLSSettings, host string) *corev3.TransportSocket {
	common := &tlsv3.CommonTlsContext{}
	def := &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: exactSANs(s.GetSubjectAltNames())}
	switch {
	case s.GetCredentialName() != "":
		common.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         def,
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: sdsPrefix + s.GetCredentialName() + "-cacert"},
			}}
	case s.GetCaCertificates() != "" || len(def.MatchTypedSubjectAltNames) > 0:
		if ca := s.GetCaCertificates(); ca != "" {
			def.TrustedCa = fileSource(ca)
		}
		common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: def}
	}
	if s.GetMode() == networkingapi.ClientTLSSettings_MUTUAL {
		switch {
		case s.GetCredentialName() != "":
			common.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{{Name: sdsPrefix + s.GetCredentialName()}}
		case s.GetClientCertificate() != "" && s.GetPrivateKey() != "":
			common.TlsCertificates = []*tlsv3.TlsCertificate{{
				CertificateChain: fileSource(s.GetClientCertificate()), PrivateKey: fileSource(s.GetPrivateKey())}}
		}
	}
	ctx := &tlsv3.UpstreamTlsContext{Sni: cmp.Or(s.GetSni(), host), CommonTlsContext: common}
	return &corev3.TransportSocket{Name: wellknown.TransportSocketTLS, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
}

func fileSource(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

// exactSANs matches each name exactly as a DNS or a URI SAN, as istiod
// renders subjectAltNames.
func exactSANs(names []string) []*tlsv3.SubjectAltNameMatcher {
	var out []*tlsv3.SubjectAltNameMatcher
	for _, san := range names {
		for _, typ := range []tlsv3.SubjectAltNameMatcher_SanType{tlsv3.SubjectAltNameMatcher_DNS, tlsv3.SubjectAltNameMatcher_URI} {
			out = append(out, &tlsv3.SubjectAltNameMatcher{
				SanType: typ, Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: san}}})
		}
	}
	return out
}

// checkTLS reports the client TLS settings that are not translated.
func checkTLS(p func(string, ...any), path string, s *networkingapi.ClientTLSSettings) {
	switch {
	case s == nil || s.Mode == networkingapi.ClientTLSSettings_DISABLE || s.Mode == networkingapi.ClientTLSSettings_ISTIO_MUTUAL:
		return
	case !originates(s):
		p("%s.tls: mode %s is not supported (SIMPLE and MUTUAL originate TLS; the mesh itself uses HBONE); ignored", path, s.Mode)
		return
	}
	if s.GetInsecureSkipVerify().GetValue() {
		p("%s.tls.insecureSkipVerify: not supported; the certificate is verified", path)
	}
	if s.CredentialName != "" && (s.CaCertificates != "" || s.ClientCertificate != "" || s.PrivateKey != "") {
		p("%s.tls: credentialName and file paths (caCertificates, clientCertificate, privateKey) are exclusive; the files are ignored", path)
	}
	if s.CaCrl != "" {
		p("%s.tls.caCrl: not supported; ignored", path)
	}
	if s.Mode == networkingapi.ClientTLSSettings_MUTUAL && s.CredentialName == "" && (s.ClientCertificate == "" || s.PrivateKey == "") {
		p("%s.tls: mode MUTUAL without credentialName needs clientCertificate and privateKey; TLS is originated without a client certificate", path)
	}
}
