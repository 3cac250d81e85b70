package ca

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrInvalidTTL is returned for a negative requested lifetime.
var ErrInvalidTTL = errors.New("invalid certificate lifetime")

// ErrCAExpired is returned when the CA can no longer issue a certificate
// that is valid now.
var ErrCAExpired = errors.New("CA certificate has expired")

// backdate is how far NotBefore is set in the past to tolerate clock skew.
const backdate = time.Minute

// Sign validates csrPEM (see ParseCSR), checks that its only SAN is exactly
// id and that id is in this CA's trust domain, and issues an X.509-SVID. The
// returned chain is DER: the leaf first, then the intermediates between it
// and the root (none for a self-signed root). Roots are in Bundle.
//
// ttl 0 means the default (Options.DefaultTTL); it is capped at
// Options.MaxTTL and at the CA's own expiry. A negative ttl is
// ErrInvalidTTL. CSR problems are *CSRError (errors.Is ErrInvalidCSR).
func (a *Authority) Sign(csrPEM []byte, id spiffeid.ID, ttl time.Duration) ([][]byte, error) {
	csr, got, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	if got != id {
		return nil, csrError(ErrCSRIdentityMismatch, "CSR asks for %q, expected %q", got, id)
	}
	leaf, err := a.issue(csr, id, ttl)
	if err != nil {
		return nil, err
	}
	return a.chainDER(leaf), nil
}

// EffectiveTTL returns the lifetime a request for ttl gets before the CA's
// own expiry is taken into account: the default for 0, capped at MaxTTL.
func (a *Authority) EffectiveTTL(ttl time.Duration) (time.Duration, error) {
	switch {
	case ttl < 0:
		return 0, fmt.Errorf("%w: %s is negative", ErrInvalidTTL, ttl)
	case ttl == 0:
		return a.defaultTTL, nil
	case ttl > a.maxTTL:
		return a.maxTTL, nil
	}
	return ttl, nil
}

// issue signs an already validated CSR for id.
func (a *Authority) issue(csr *x509.CertificateRequest, id spiffeid.ID, ttl time.Duration) (*x509.Certificate, error) {
	if !id.MemberOf(a.td) {
		return nil, csrError(ErrCSRForeignDomain, "%q is not in trust domain %q", id, a.td)
	}
	ttl, err := a.EffectiveTTL(ttl)
	if err != nil {
		return nil, err
	}
	keyUsage := x509.KeyUsageDigitalSignature
	if _, ok := csr.PublicKey.(*rsa.PublicKey); ok {
		// Key encipherment only makes sense for RSA (TLS 1.2 RSA key
		// exchange); RFC 5480/8410 forbid it for EC and Ed25519 keys.
		keyUsage |= x509.KeyUsageKeyEncipherment
	}
	return a.create(&x509.Certificate{
		URIs:        []*url.URL{id.URL()},
		KeyUsage:    keyUsage,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, csr.PublicKey, ttl)
}

// create fills in serial, validity and constraints and signs tmpl.
func (a *Authority) create(tmpl *x509.Certificate, pub any, ttl time.Duration) (*x509.Certificate, error) {
	now := a.now()
	notAfter := now.Add(ttl)
	if notAfter.After(a.notAfter) {
		notAfter = a.notAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("%w at %s (%s); rotate the CA", ErrCAExpired, a.notAfter.UTC().Format(time.RFC3339), a.source)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = notAfter
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = false
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, pub, a.signer)
	if err != nil {
		// crypto/x509 errors describe the template or the algorithm, never
		// the private key.
		return nil, fmt.Errorf("signing certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the certificate just signed: %w", err)
	}
	return leaf, nil
}

// chainDER returns leaf followed by the CA chain, DER-encoded.
func (a *Authority) chainDER(leaf *x509.Certificate) [][]byte {
	out := make([][]byte, 0, 1+len(a.chain))
	out = append(out, leaf.Raw)
	for _, c := range a.chain {
		out = append(out, c.Raw)
	}
	return out
}

// EncodePEM encodes DER certificates as PEM strings, one per certificate.
func EncodePEM(ders [][]byte) []string {
	out := make([]string, len(ders))
	for i, d := range ders {
		out[i] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d}))
	}
	return out
}
