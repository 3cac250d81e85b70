package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxCSRBytes bounds the size of a PEM CSR accepted by ParseCSR. Real CSRs
// are well under 4 KiB; anything larger is not worth parsing.
const MaxCSRBytes = 64 << 10

// ErrInvalidCSR is wrapped by every CSR validation failure, so callers can
// map the whole family with one errors.Is (the gRPC service answers
// InvalidArgument). Each failure also wraps one of the specific sentinels
// below.
var ErrInvalidCSR = errors.New("invalid certificate signing request")

// Specific CSR validation failures. Every error returned by ParseCSR and by
// the CSR checks of Authority.Sign is a *CSRError wrapping ErrInvalidCSR and
// exactly one of these.
var (
	ErrCSRMalformed        = errors.New("not a PEM-encoded PKCS#10 CSR")
	ErrCSRSignature        = errors.New("CSR signature does not verify")
	ErrCSRNoURISAN         = errors.New("CSR has no URI SAN")
	ErrCSRMultipleURISANs  = errors.New("CSR has more than one URI SAN")
	ErrCSRInvalidID        = errors.New("CSR URI SAN is not a valid SPIFFE ID")
	ErrCSRIdentityMismatch = errors.New("CSR identity does not match the requested identity")
	ErrCSRForeignDomain    = errors.New("CSR identity is not in this CA's trust domain")
	ErrCSRUnexpectedSAN    = errors.New("CSR has SANs other than the SPIFFE ID")
	ErrCSRRequestsCA       = errors.New("CSR requests CA or certificate-signing capabilities")
	ErrCSRWeakKey          = errors.New("CSR public key is too weak")
	ErrCSRUnsupportedKey   = errors.New("CSR public key algorithm is not supported")
)

// CSRError is a CSR validation failure. Its message never contains key
// material; it may name the requested SPIFFE ID and counts of offending
// fields, but not their values.
type CSRError struct {
	// Kind is one of the ErrCSR* sentinels.
	Kind error
	// Detail explains the failure for a human.
	Detail string
}

func (e *CSRError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("%v: %v", ErrInvalidCSR, e.Kind)
	}
	return fmt.Sprintf("%v: %v: %s", ErrInvalidCSR, e.Kind, e.Detail)
}

// Unwrap makes errors.Is match both ErrInvalidCSR and the specific Kind.
func (e *CSRError) Unwrap() []error { return []error{ErrInvalidCSR, e.Kind} }

func csrError(kind error, format string, args ...any) error {
	return &CSRError{Kind: kind, Detail: fmt.Sprintf(format, args...)}
}

var (
	oidExtensionBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidExtensionKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtensionSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
)

// ParseCSR decodes a PEM PKCS#10 CSR, validates it strictly for a workload
// X.509-SVID and returns it together with the SPIFFE ID it asks for:
//
//   - exactly one PEM block of type CERTIFICATE REQUEST (trailing whitespace
//     allowed), at most MaxCSRBytes;
//   - an ECDSA P-256/P-384, RSA 2048..8192 bit or Ed25519 public key;
//   - a valid self-signature;
//   - exactly one URI SAN, a well-formed SPIFFE ID, and no other SAN of any
//     type (DNS, IP, email, otherName, ...);
//   - no requested basicConstraints CA:true and no requested keyCertSign or
//     cRLSign key usage.
//
// The subject and any other requested extensions are ignored: the issued
// certificate is built from scratch, never copied from the CSR.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, spiffeid.ID, error) {
	if len(csrPEM) == 0 {
		return nil, spiffeid.ID{}, csrError(ErrCSRMalformed, "empty CSR")
	}
	if len(csrPEM) > MaxCSRBytes {
		return nil, spiffeid.ID{}, csrError(ErrCSRMalformed, "CSR is %d bytes, the limit is %d", len(csrPEM), MaxCSRBytes)
	}
	block, rest := pem.Decode(csrPEM)
	if block == nil {
		return nil, spiffeid.ID{}, csrError(ErrCSRMalformed, "no PEM block found")
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, spiffeid.ID{}, csrError(ErrCSRMalformed, "PEM block is %q, want \"CERTIFICATE REQUEST\"", block.Type)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, spiffeid.ID{}, csrError(ErrCSRMalformed, "unexpected data after the CSR PEM block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, spiffeid.ID{}, csrError(ErrCSRMalformed, "%v", err)
	}
	// The key is checked before the signature so that absurd keys (huge RSA
	// moduli) cost nothing.
	if err := checkPublicKey(csr); err != nil {
		return nil, spiffeid.ID{}, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, spiffeid.ID{}, csrError(ErrCSRSignature, "%v", err)
	}
	id, err := checkSANs(csr)
	if err != nil {
		return nil, spiffeid.ID{}, err
	}
	if err := checkRequestedExtensions(csr); err != nil {
		return nil, spiffeid.ID{}, err
	}
	return csr, id, nil
}

func checkPublicKey(csr *x509.CertificateRequest) error {
	switch pub := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256(), elliptic.P384():
			return nil
		case elliptic.P224():
			return csrError(ErrCSRWeakKey, "ECDSA curve %s; use P-256 or P-384", pub.Curve.Params().Name)
		default:
			name := "unknown"
			if pub.Curve != nil && pub.Curve.Params() != nil {
				name = pub.Curve.Params().Name
			}
			return csrError(ErrCSRUnsupportedKey, "ECDSA curve %s; use P-256 or P-384", name)
		}
	case *rsa.PublicKey:
		bits := pub.N.BitLen()
		switch {
		case bits < 2048:
			return csrError(ErrCSRWeakKey, "RSA key of %d bits; at least 2048 are required", bits)
		case bits > 8192:
			return csrError(ErrCSRUnsupportedKey, "RSA key of %d bits; at most 8192 are accepted", bits)
		}
		return nil
	case ed25519.PublicKey:
		return nil
	default:
		return csrError(ErrCSRUnsupportedKey, "public key algorithm %v; use ECDSA P-256/P-384, RSA >= 2048 or Ed25519", csr.PublicKeyAlgorithm)
	}
}

func checkSANs(csr *x509.CertificateRequest) (spiffeid.ID, error) {
	if n := len(csr.DNSNames); n > 0 {
		return spiffeid.ID{}, csrError(ErrCSRUnexpectedSAN, "%d DNS SAN(s); only one URI SAN (the SPIFFE ID) is allowed", n)
	}
	if n := len(csr.IPAddresses); n > 0 {
		return spiffeid.ID{}, csrError(ErrCSRUnexpectedSAN, "%d IP SAN(s); only one URI SAN (the SPIFFE ID) is allowed", n)
	}
	if n := len(csr.EmailAddresses); n > 0 {
		return spiffeid.ID{}, csrError(ErrCSRUnexpectedSAN, "%d email SAN(s); only one URI SAN (the SPIFFE ID) is allowed", n)
	}
	// crypto/x509 silently drops SAN types it does not model (otherName,
	// directoryName, registeredID, ...): walk the raw extension as well.
	for _, ext := range csr.Extensions {
		if !ext.Id.Equal(oidExtensionSubjectAltName) {
			continue
		}
		if err := checkRawSANs(ext.Value); err != nil {
			return spiffeid.ID{}, err
		}
	}
	switch len(csr.URIs) {
	case 0:
		return spiffeid.ID{}, csrError(ErrCSRNoURISAN, "the SPIFFE ID must be the CSR's only SAN")
	case 1:
	default:
		return spiffeid.ID{}, csrError(ErrCSRMultipleURISANs, "%d URI SANs; exactly one is allowed", len(csr.URIs))
	}
	id, err := spiffeid.FromURI(csr.URIs[0])
	if err != nil {
		return spiffeid.ID{}, csrError(ErrCSRInvalidID, "%v", err)
	}
	return id, nil
}

// checkRawSANs rejects any GeneralName that is not a uniformResourceIdentifier.
func checkRawSANs(der []byte) error {
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(der, &seq)
	if err != nil || len(rest) != 0 || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
		return csrError(ErrCSRMalformed, "subjectAltName extension is not a SEQUENCE of GeneralName")
	}
	names := map[int]string{0: "otherName", 1: "email", 2: "DNS", 3: "x400Address", 4: "directoryName", 5: "ediPartyName", 7: "IP", 8: "registeredID"}
	data := seq.Bytes
	for len(data) > 0 {
		var gn asn1.RawValue
		data, err = asn1.Unmarshal(data, &gn)
		if err != nil {
			return csrError(ErrCSRMalformed, "subjectAltName extension: %v", err)
		}
		if gn.Class != asn1.ClassContextSpecific {
			return csrError(ErrCSRMalformed, "subjectAltName extension has a GeneralName of class %d", gn.Class)
		}
		if gn.Tag == 6 { // uniformResourceIdentifier
			continue
		}
		name, ok := names[gn.Tag]
		if !ok {
			name = fmt.Sprintf("tag %d", gn.Tag)
		}
		return csrError(ErrCSRUnexpectedSAN, "%s SAN present; only one URI SAN (the SPIFFE ID) is allowed", name)
	}
	return nil
}

type basicConstraints struct {
	IsCA       bool `asn1:"optional"`
	MaxPathLen int  `asn1:"optional,default:-1"`
}

func checkRequestedExtensions(csr *x509.CertificateRequest) error {
	for _, ext := range csr.Extensions {
		switch {
		case ext.Id.Equal(oidExtensionBasicConstraints):
			var bc basicConstraints
			rest, err := asn1.Unmarshal(ext.Value, &bc)
			if err != nil || len(rest) != 0 {
				return csrError(ErrCSRMalformed, "requested basicConstraints extension does not parse")
			}
			if bc.IsCA {
				return csrError(ErrCSRRequestsCA, "basicConstraints CA:true requested; workload certificates are never CAs")
			}
		case ext.Id.Equal(oidExtensionKeyUsage):
			var bits asn1.BitString
			rest, err := asn1.Unmarshal(ext.Value, &bits)
			if err != nil || len(rest) != 0 {
				return csrError(ErrCSRMalformed, "requested keyUsage extension does not parse")
			}
			// KeyUsage bit 5 is keyCertSign, bit 6 cRLSign (RFC 5280 4.2.1.3).
			var requested []string
			if bits.At(5) == 1 {
				requested = append(requested, "keyCertSign")
			}
			if bits.At(6) == 1 {
				requested = append(requested, "cRLSign")
			}
			if len(requested) > 0 {
				return csrError(ErrCSRRequestsCA, "key usage %s requested; workload certificates cannot sign certificates", strings.Join(requested, ", "))
			}
		}
	}
	return nil
}
