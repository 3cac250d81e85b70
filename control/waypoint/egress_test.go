package waypoint

import (
	"strings"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingapi "istio.io/api/networking/v1alpha3"
)

// TestOriginateMutualTLS: MUTUAL with credentialName is rendered as istiod
// renders it (the client certificate and the CA bundle by SDS, SANs as
// exact DNS or URI matches); with file paths, the files.
func TestOriginateMutualTLS(t *testing.T) {
	upstream := func(s *networkingapi.ClientTLSSettings) *tlsv3.UpstreamTlsContext {
		var ctx tlsv3.UpstreamTlsContext
		if err := originateTLS(s, "my-nginx.mesh-external.svc.cluster.local").GetTypedConfig().UnmarshalTo(&ctx); err != nil {
			t.Fatal(err)
		}
		return &ctx
	}
	ctx := upstream(&networkingapi.ClientTLSSettings{Mode: networkingapi.ClientTLSSettings_MUTUAL, CredentialName: "client-credential",
		SubjectAltNames: []string{"my-nginx.mesh-external.svc.cluster.local"}})
	common := ctx.GetCommonTlsContext()
	if ctx.GetSni() != "my-nginx.mesh-external.svc.cluster.local" {
		t.Errorf("sni %q, want the host", ctx.GetSni())
	}
	if certs := common.GetTlsCertificateSdsSecretConfigs(); len(certs) != 1 || certs[0].GetName() != "kubernetes://client-credential" {
		t.Errorf("client certificate by SDS %v, want kubernetes://client-credential", certs)
	}
	combined := common.GetCombinedValidationContext()
	if combined.GetValidationContextSdsSecretConfig().GetName() != "kubernetes://client-credential-cacert" {
		t.Errorf("CA by SDS %v, want kubernetes://client-credential-cacert", combined.GetValidationContextSdsSecretConfig())
	}
	if sans := combined.GetDefaultValidationContext().GetMatchTypedSubjectAltNames(); len(sans) != 2 ||
		sans[0].GetSanType() != tlsv3.SubjectAltNameMatcher_DNS || sans[1].GetSanType() != tlsv3.SubjectAltNameMatcher_URI {
		t.Errorf("SAN matchers %v, want the name as DNS and as URI", sans)
	}

	ctx = upstream(&networkingapi.ClientTLSSettings{Mode: networkingapi.ClientTLSSettings_MUTUAL, Sni: "x.example.com",
		ClientCertificate: "/etc/certs/cert.pem", PrivateKey: "/etc/certs/key.pem", CaCertificates: "/etc/certs/ca.pem"})
	common = ctx.GetCommonTlsContext()
	if c := common.GetTlsCertificates(); len(c) != 1 || c[0].GetCertificateChain().GetFilename() != "/etc/certs/cert.pem" ||
		c[0].GetPrivateKey().GetFilename() != "/etc/certs/key.pem" {
		t.Errorf("client certificate files %v", c)
	}
	if ca := common.GetValidationContext().GetTrustedCa().GetFilename(); ca != "/etc/certs/ca.pem" || ctx.GetSni() != "x.example.com" {
		t.Errorf("trusted CA %q, SNI %q", ca, ctx.GetSni())
	}

	// SIMPLE presents no certificate, even with credentialName (its CA only).
	ctx = upstream(&networkingapi.ClientTLSSettings{Mode: networkingapi.ClientTLSSettings_SIMPLE, CredentialName: "client-credential"})
	if len(ctx.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()) != 0 {
		t.Error("SIMPLE presents a client certificate")
	}
}

// TestCheckClientTLS: what cannot be honoured is reported.
func TestCheckClientTLS(t *testing.T) {
	for _, c := range []struct {
		s    *networkingapi.ClientTLSSettings
		want string // "" when clean
	}{
		{&networkingapi.ClientTLSSettings{Mode: networkingapi.ClientTLSSettings_MUTUAL, CredentialName: "c"}, ""},
		{&networkingapi.ClientTLSSettings{Mode: networkingapi.ClientTLSSettings_SIMPLE, SubjectAltNames: []string{"a"}}, ""},
		{&networkingapi.ClientTLSSettings{Mode: networkingapi.ClientTLSSettings_MUTUAL}, "needs clientCertificate and privateKey"},
		{&networkingapi.ClientTLSSettings{Mode: networkingapi.ClientTLSSettings_SIMPLE, InsecureSkipVerify: wrapperspb.Bool(true)}, "insecureSkipVerify"},
		{&networkingapi.ClientTLSSettings{Mode: networkingapi.ClientTLSSettings_MUTUAL, CredentialName: "c", PrivateKey: "/k"}, "exclusive"},
		{&networkingapi.ClientTLSSettings{Mode: networkingapi.ClientTLSSettings_SIMPLE, CaCrl: "/crl"}, "caCrl"},
	} {
		var got []string
		checkTLS(func(f string, a ...any) { got = append(got, f) }, "spec.trafficPolicy", c.s)
		switch {
		case c.want == "" && len(got) > 0:
			t.Errorf("%v: reported %v", c.s, got)
		case c.want != "" && (len(got) != 1 || !strings.Contains(got[0], c.want)):
			t.Errorf("%v: reported %v, want %q", c.s, got, c.want)
		}
	}
}
