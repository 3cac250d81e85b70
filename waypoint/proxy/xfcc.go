package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
)

// xfccHeader is Envoy's x-forwarded-client-cert.
const xfccHeader = "X-Forwarded-Client-Cert"

// setClientCertHeader applies istiod's XFCC defaults: the client's own
// header is dropped, since only a proxy that verified a client
// certificate can vouch for it (an application trusting the header must
// not get a forged one): Envoy's SANITIZE on waypoints, as Istio's
// waypoints; SANITIZE_SET on gateways, whose header, after a client
// certificate the gateway verified (tls.mode MUTUAL), says which in
// Envoy's format: the SHA-256 of its DER, its subject, its URI and DNS
// SANs.
func setClientCertHeader(h http.Header, rs *requestState) {
	h.Del(xfccHeader)
	if !rs.edge {
		return
	}
	st := rs.tls
	if st == nil || len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return
	}
	cert := st.PeerCertificates[0]
	sum := sha256.Sum256(cert.Raw)
	var b strings.Builder
	b.WriteString("Hash=")
	b.WriteString(hex.EncodeToString(sum[:]))
	b.WriteString(`;Subject="`)
	b.WriteString(strings.ReplaceAll(cert.Subject.String(), `"`, `\"`))
	b.WriteString(`"`)
	for _, u := range cert.URIs {
		b.WriteString(";URI=")
		b.WriteString(xfccValue(u.String()))
	}
	for _, d := range cert.DNSNames {
		b.WriteString(";DNS=")
		b.WriteString(xfccValue(d))
	}
	h.Set(xfccHeader, b.String())
}

// xfccValue quotes a value holding one of XFCC's separators, as Envoy does.
func xfccValue(v string) string {
	if !strings.ContainsAny(v, `,;="`) {
		return v
	}
	return `"` + strings.ReplaceAll(v, `"`, `\"`) + `"`
}
