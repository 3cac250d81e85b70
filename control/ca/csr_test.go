package ca

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
)

func mustASN1(t *testing.T, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseCSRAndSign(t *testing.T) {
	testKeys(t)
	a := newTestAuthority(t, Options{})
	id := workloadID(t, testTD, "default", "bookinfo-productpage")
	uri := id.String()

	caTrue := pkix.Extension{Id: oidExtensionBasicConstraints, Value: mustASN1(t, basicConstraints{IsCA: true, MaxPathLen: -1})}
	caFalse := pkix.Extension{Id: oidExtensionBasicConstraints, Value: mustASN1(t, basicConstraints{IsCA: false, MaxPathLen: -1})}
	// keyUsage BIT STRING with digitalSignature (bit 0) and keyCertSign (bit 5).
	certSign := pkix.Extension{Id: oidExtensionKeyUsage, Value: mustASN1(t, asn1.BitString{Bytes: []byte{0x84}, BitLength: 6})}
	digitalSig := pkix.Extension{Id: oidExtensionKeyUsage, Value: mustASN1(t, asn1.BitString{Bytes: []byte{0x80}, BitLength: 1})}
	// A SAN extension with the URI and a registeredID, which crypto/x509
	// does not surface.
	rawSAN := mustASN1(t, []asn1.RawValue{
		{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(uri)},
		{Class: asn1.ClassContextSpecific, Tag: 8, Bytes: mustASN1(t, asn1.ObjectIdentifier{1, 2, 3})[2:]},
	})
	otherSAN := pkix.Extension{Id: oidExtensionSubjectAltName, Value: rawSAN}

	ipCSR := func() []byte {
		tmpl := &x509.CertificateRequest{IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}, URIs: []*url.URL{id.URL()}}
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, keyP256)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}
	badSignature := func() []byte {
		block, _ := pem.Decode(makeCSR(t, csrSpec{key: keyP256, uris: []string{uri}}))
		block.Bytes[len(block.Bytes)-3] ^= 0xff
		return pem.EncodeToMemory(block)
	}

	tests := []struct {
		name string
		csr  []byte
		want error // nil = issued
	}{
		{"ECDSA P-256", makeCSR(t, csrSpec{key: keyP256, uris: []string{uri}}), nil},
		{"ECDSA P-384", makeCSR(t, csrSpec{key: keyP384, uris: []string{uri}}), nil},
		{"RSA 2048", makeCSR(t, csrSpec{key: keyRSA2k, uris: []string{uri}}), nil},
		{"Ed25519", makeCSR(t, csrSpec{key: keyEd, uris: []string{uri}}), nil},
		{"CA:false and digitalSignature requested", makeCSR(t, csrSpec{key: keyP256, uris: []string{uri}, exts: []pkix.Extension{caFalse, digitalSig}}), nil},
		{"no SAN", makeCSR(t, csrSpec{key: keyP256}), ErrCSRNoURISAN},
		{"two URI SANs", makeCSR(t, csrSpec{key: keyP256, uris: []string{uri, workloadID(t, testTD, "default", "other").String()}}), ErrCSRMultipleURISANs},
		{"DNS SAN", makeCSR(t, csrSpec{key: keyP256, uris: []string{uri}, dns: []string{"productpage.default.svc"}}), ErrCSRUnexpectedSAN},
		{"email SAN", makeCSR(t, csrSpec{key: keyP256, uris: []string{uri}, emails: []string{"a@b.c"}}), ErrCSRUnexpectedSAN},
		{"IP SAN", ipCSR(), ErrCSRUnexpectedSAN},
		{"registeredID SAN", makeCSR(t, csrSpec{key: keyP256, exts: []pkix.Extension{otherSAN}}), ErrCSRUnexpectedSAN},
		{"wrong identity", makeCSR(t, csrSpec{key: keyP256, uris: []string{workloadID(t, testTD, "default", "reviews").String()}}), ErrCSRIdentityMismatch},
		{"not a SPIFFE ID", makeCSR(t, csrSpec{key: keyP256, uris: []string{"https://example.com/x"}}), ErrCSRInvalidID},
		{"CA:true requested", makeCSR(t, csrSpec{key: keyP256, uris: []string{uri}, exts: []pkix.Extension{caTrue}}), ErrCSRRequestsCA},
		{"keyCertSign requested", makeCSR(t, csrSpec{key: keyP256, uris: []string{uri}, exts: []pkix.Extension{certSign}}), ErrCSRRequestsCA},
		{"RSA 1024", makeCSR(t, csrSpec{key: keyRSA1k, uris: []string{uri}}), ErrCSRWeakKey},
		{"ECDSA P-224", makeCSR(t, csrSpec{key: keyP224, uris: []string{uri}}), ErrCSRWeakKey},
		{"ECDSA P-521", makeCSR(t, csrSpec{key: keyP521, uris: []string{uri}}), ErrCSRUnsupportedKey},
		{"garbage", []byte("-----BEGIN CERTIFICATE REQUEST-----\nbm9wZQ==\n-----END CERTIFICATE REQUEST-----\n"), ErrCSRMalformed},
		{"not PEM", []byte("hello"), ErrCSRMalformed},
		{"empty", nil, ErrCSRMalformed},
		{"wrong PEM type", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Certificate().Raw}), ErrCSRMalformed},
		{"two PEM blocks", append(makeCSR(t, csrSpec{key: keyP256, uris: []string{uri}}), makeCSR(t, csrSpec{key: keyP256, uris: []string{uri}})...), ErrCSRMalformed},
		{"too large", []byte(strings.Repeat("A", MaxCSRBytes+1)), ErrCSRMalformed},
		{"bad signature", badSignature(), ErrCSRSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			chain, err := a.Sign(tc.csr, id, 0)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Sign: %v", err)
				}
				leaf, err := x509.ParseCertificate(chain[0])
				if err != nil {
					t.Fatal(err)
				}
				if len(leaf.URIs) != 1 || leaf.URIs[0].String() != uri || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
					t.Errorf("leaf SANs: URIs %v DNS %v IP %v email %v", leaf.URIs, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
				}
				if leaf.IsCA {
					t.Error("leaf is a CA")
				}
				return
			}
			if err == nil {
				t.Fatalf("Sign succeeded, want %v", tc.want)
			}
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrInvalidCSR) {
				t.Fatalf("Sign error %q: want errors.Is %v and ErrInvalidCSR", err, tc.want)
			}
			var ce *CSRError
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not a *CSRError", err)
			}
		})
	}
}
