package waypoint

import (
	"cmp"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	wellknown "github.com/envoyproxy/go-control-plane/pkg/wellknown"
	networkingapi "istio.io/api/networking/v1alpha3"
)

// originateTLS is the transport socket of a cluster whose DestinationRule
// says tls.mode SIMPLE (TLS origination, e.g. at an egress gateway): SNI is
// tls.sni, else the service host; the server certificate is verified
// against tls.caCertificates (a file path read by the proxy, as in Istio),
// else the proxy's system roots, and must name the SNI host.
func originateTLS(s *networkingapi.ClientTLSSettings, host string) *corev3.TransportSocket {
	ctx := &tlsv3.UpstreamTlsContext{Sni: cmp.Or(s.GetSni(), host), CommonTlsContext: &tlsv3.CommonTlsContext{}}
	if ca := s.GetCaCertificates(); ca != "" {
		ctx.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{
			ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: ca}},
			},
		}
	}
	return &corev3.TransportSocket{Name: wellknown.TransportSocketTLS, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
}

// checkTLS reports the client TLS settings that are not translated. SIMPLE
// is translated (originateTLS); DISABLE and ISTIO_MUTUAL are what the mesh
// does anyway (HBONE carries mTLS).
func checkTLS(p func(string, ...any), path string, s *networkingapi.ClientTLSSettings) {
	if s == nil {
		return
	}
	switch s.Mode {
	case networkingapi.ClientTLSSettings_DISABLE, networkingapi.ClientTLSSettings_ISTIO_MUTUAL:
		return
	case networkingapi.ClientTLSSettings_SIMPLE:
	default:
		p("%s.tls: mode %s is not supported (SIMPLE originates TLS; the mesh itself uses HBONE); ignored", path, s.Mode)
		return
	}
	if s.CredentialName != "" {
		p("%s.tls.credentialName: not supported; use caCertificates (a path readable by the proxy) or the system roots", path)
	}
	if len(s.SubjectAltNames) > 0 {
		p("%s.tls.subjectAltNames: not supported; the certificate must name the SNI host", path)
	}
	if s.GetInsecureSkipVerify().GetValue() {
		p("%s.tls.insecureSkipVerify: not supported; the certificate is verified", path)
	}
}
