package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
)

// A certificate verifies for its host against the CA's pool, not for
// another host and not against another CA.
func TestIssuedCertificateVerifiesOnlyForItsHostAndCA(t *testing.T) {
	ca, other := New(t), New(t)
	certPEM, keyPEM := ca.Issue(t, "bookinfo.example.com")
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "bookinfo.example.com", Roots: ca.Pool}); err != nil {
		t.Errorf("own host, own CA: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other.example.com", Roots: ca.Pool}); err == nil {
		t.Error("verified for another host")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "bookinfo.example.com", Roots: other.Pool}); err == nil {
		t.Error("verified against another CA")
	}
}
