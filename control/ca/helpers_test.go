package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	testTD  = spiffeid.RequireTrustDomainFromString("cluster.local")
	otherTD = spiffeid.RequireTrustDomainFromString("other.example")
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func workloadID(t testing.TB, td spiffeid.TrustDomain, ns, sa string) spiffeid.ID {
	t.Helper()
	id, err := spiffeid.FromSegments(td, "ns", ns, "sa", sa)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Keys are generated once per test binary: RSA generation is slow on two
// cores.
var (
	keysOnce sync.Once
	keyP256  *ecdsa.PrivateKey
	keyP384  *ecdsa.PrivateKey
	keyP224  *ecdsa.PrivateKey
	keyP521  *ecdsa.PrivateKey
	keyRSA2k *rsa.PrivateKey
	keyRSA1k *rsa.PrivateKey
	keyEd    ed25519.PrivateKey
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		must := func(e error) {
			if e != nil && err == nil {
				err = e
			}
		}
		var e error
		keyP256, e = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(e)
		keyP384, e = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		must(e)
		keyP224, e = ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
		must(e)
		keyP521, e = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
		must(e)
		keyRSA2k, e = rsa.GenerateKey(rand.Reader, 2048)
		must(e)
		keyRSA1k, e = rsa.GenerateKey(rand.Reader, 1024)
		must(e)
		_, keyEd, e = ed25519.GenerateKey(rand.Reader)
		must(e)
		if err != nil {
			panic(err)
		}
	})
}

type csrSpec struct {
	key    crypto.Signer
	uris   []string
	dns    []string
	emails []string
	exts   []pkix.Extension
}

func makeCSR(t testing.TB, s csrSpec) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{DNSNames: s.dns, EmailAddresses: s.emails, ExtraExtensions: s.exts}
	for _, u := range s.uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, s.key)
	if err != nil {
		t.Fatalf("creating CSR: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testCA is a self-made CA hierarchy for tests.
type testCA struct {
	key  crypto.Signer
	cert *x509.Certificate
}

func newSelfSigned(t testing.TB, cn string, notAfter time.Time) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{key: key, cert: cert}
}

// child issues a certificate under c; isCA selects an intermediate.
func (c *testCA) child(t testing.TB, cn string, isCA bool, notAfter time.Time) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := randomSerial()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              notAfter,
		IsCA:                  isCA,
		BasicConstraintsValid: true,
	}
	if isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{key: key, cert: cert}
}

func certPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func keyPEM(t testing.TB, k crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// newTestAuthority returns an Authority on a fresh self-signed root.
func newTestAuthority(t testing.TB, opts Options) *Authority {
	t.Helper()
	root := newSelfSigned(t, "test root", time.Now().Add(10*365*24*time.Hour))
	if opts.Logger == nil {
		opts.Logger = discardLogger()
	}
	a, err := NewAuthority(root.key, root.cert, nil, []*x509.Certificate{root.cert}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
