// Package ca is weft-control's certificate authority: it keeps the root of
// trust (a self-signed root in a Secret, or an Istio-style plug-in `cacerts`
// intermediate), validates and signs workload CSRs as SPIFFE X.509-SVIDs,
// authenticates callers with Kubernetes TokenReview, authorizes the identity
// they ask for, serves the CertificateService gRPC API, issues the control
// plane's own serving certificate and publishes the trust bundle to every
// namespace.
package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// Secret names and keys. The plug-in format is Istio's, so an existing
// `cacerts` Secret made for Istio works unchanged.
const (
	// PluginSecretName is the user-provided intermediate CA Secret.
	PluginSecretName = "cacerts"
	// RootSecretName is the self-signed root Weft creates when there is no
	// plug-in Secret.
	RootSecretName = "weft-ca-root"

	KeyCACert    = "ca-cert.pem"    // signing certificate
	KeyCAKey     = "ca-key.pem"     // its private key
	KeyRootCert  = "root-cert.pem"  // trust anchors (plug-in only)
	KeyCertChain = "cert-chain.pem" // ca-cert.pem up to the root (plug-in only)
)

// Defaults for Options.
const (
	DefaultTrustDomain = mesh.DefaultTrustDomain
	DefaultTTL         = 24 * time.Hour
	DefaultMaxTTL      = 7 * 24 * time.Hour
	DefaultRootTTL     = 10 * 365 * 24 * time.Hour
)

// Options configure an Authority. The zero value is usable.
type Options struct {
	// TrustDomain of every identity this CA issues. Default "cluster.local".
	TrustDomain spiffeid.TrustDomain
	// DefaultTTL is the workload certificate lifetime when the caller asks
	// for none. Default 24h.
	DefaultTTL time.Duration
	// MaxTTL caps any requested lifetime. Default 7 days. Raised to
	// DefaultTTL if smaller.
	MaxTTL time.Duration
	// RootTTL is the lifetime of a newly created self-signed root. Default
	// 10 years. Ignored when a root already exists.
	RootTTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger for lifecycle messages. Default slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.TrustDomain.IsZero() {
		o.TrustDomain = spiffeid.RequireTrustDomainFromString(DefaultTrustDomain)
	}
	if o.DefaultTTL <= 0 {
		o.DefaultTTL = DefaultTTL
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = DefaultMaxTTL
	}
	if o.MaxTTL < o.DefaultTTL {
		o.MaxTTL = o.DefaultTTL
	}
	if o.RootTTL <= 0 {
		o.RootTTL = DefaultRootTTL
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Authority signs workload and serving certificates. It is safe for
// concurrent use. Its private key is only ever held in memory.
type Authority struct {
	td         spiffeid.TrustDomain
	signer     crypto.Signer
	cert       *x509.Certificate   // signing certificate
	chain      []*x509.Certificate // sent after a leaf: cert and intermediates, never a root
	roots      []*x509.Certificate // trust bundle
	rootsPEM   []byte
	notAfter   time.Time // earliest NotAfter on the path to the root
	defaultTTL time.Duration
	maxTTL     time.Duration
	now        func() time.Time
	source     string
}

// NewAuthority builds an Authority from a signing key and certificate, the
// intermediates between that certificate and a root (any order; roots and
// the certificate itself are ignored if present) and the trust anchors. It
// checks that the key matches the certificate, that the certificate is a CA
// that is currently valid, and that it chains to one of roots. If cert is a
// self-signed root, pass it in roots too.
func NewAuthority(signer crypto.Signer, cert *x509.Certificate, intermediates, roots []*x509.Certificate, opts Options) (*Authority, error) {
	opts = opts.withDefaults()
	if signer == nil || cert == nil {
		return nil, errors.New("signing key and certificate are required")
	}
	if len(roots) == 0 {
		return nil, errors.New("at least one root certificate is required")
	}
	if err := keyMatchesCert(signer, cert); err != nil {
		return nil, err
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, errors.New("signing certificate is not a CA certificate (basicConstraints CA:true is missing)")
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("signing certificate lacks the keyCertSign key usage")
	}
	now := opts.Now()
	if now.After(cert.NotAfter) {
		return nil, fmt.Errorf("signing certificate expired at %s; rotate the CA", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	rootPool := x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	interPool := x509.NewCertPool()
	for _, c := range intermediates {
		interPool.AddCert(c)
	}
	chains, err := cert.Verify(x509.VerifyOptions{
		Roots:         rootPool,
		Intermediates: interPool,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		CurrentTime:   now,
	})
	if err != nil {
		return nil, fmt.Errorf("signing certificate does not chain to the root certificates: %w", err)
	}
	path := chains[0]
	for _, c := range chains[1:] {
		if len(c) < len(path) {
			path = c
		}
	}
	notAfter := cert.NotAfter
	for _, c := range path {
		if c.NotAfter.Before(notAfter) {
			notAfter = c.NotAfter
		}
	}
	// path = [cert, intermediates..., root]; a leaf is followed by all but
	// the root (nothing at all when cert is the root itself).
	var chain []*x509.Certificate
	if len(path) > 1 {
		chain = append(chain, path[:len(path)-1]...)
	}
	var rootsPEM bytes.Buffer
	for _, r := range roots {
		_ = pem.Encode(&rootsPEM, &pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})
	}
	return &Authority{
		td:         opts.TrustDomain,
		signer:     signer,
		cert:       cert,
		chain:      chain,
		roots:      append([]*x509.Certificate(nil), roots...),
		rootsPEM:   rootsPEM.Bytes(),
		notAfter:   notAfter,
		defaultTTL: opts.DefaultTTL,
		maxTTL:     opts.MaxTTL,
		now:        opts.Now,
		source:     "in-memory",
	}, nil
}

// TrustDomain of the identities this Authority issues.
func (a *Authority) TrustDomain() spiffeid.TrustDomain { return a.td }

// Source names where the signing key came from ("Secret ns/name").
func (a *Authority) Source() string { return a.source }

// Certificate is the signing certificate (a root or an intermediate).
func (a *Authority) Certificate() *x509.Certificate { return a.cert }

// NotAfter is the earliest expiry on the signing certificate's path to the
// root; no certificate outlives it.
func (a *Authority) NotAfter() time.Time { return a.notAfter }

// Bundle returns the root certificates workloads trust.
func (a *Authority) Bundle() []*x509.Certificate {
	return append([]*x509.Certificate(nil), a.roots...)
}

// BundlePEM returns the roots as concatenated PEM CERTIFICATE blocks.
func (a *Authority) BundlePEM() []byte { return bytes.Clone(a.rootsPEM) }

// LoadOrCreateRoot returns the Authority for namespace (weft-control's own).
//
// If Secret `cacerts` exists it is used as a plug-in intermediate CA in
// Istio's format (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem):
// the key must match the certificate, the certificate must be a valid CA and
// must chain to root-cert.pem through cert-chain.pem; any problem is an
// error naming the Secret and key. Otherwise the self-signed root in Secret
// `weft-ca-root` (ca-cert.pem, ca-key.pem) is used, and created (ECDSA
// P-256, valid opts.RootTTL) if it does not exist. Creation is race-safe
// across replicas: when Create reports AlreadyExists the winner's Secret is
// read back and used. An existing Secret is never overwritten, even if it is
// unusable: that is an error for a human to resolve.
//
// It needs get on secrets in namespace and create when no root exists yet.
func LoadOrCreateRoot(ctx context.Context, client kubernetes.Interface, namespace string, opts Options) (*Authority, error) {
	opts = opts.withDefaults()
	secrets := client.CoreV1().Secrets(namespace)

	plugin, err := secrets.Get(ctx, PluginSecretName, metav1.GetOptions{})
	switch {
	case err == nil:
		a, err := authorityFromPlugin(plugin, opts)
		if err != nil {
			return nil, err
		}
		opts.Logger.Info("CA uses plug-in intermediate", "secret", namespace+"/"+PluginSecretName,
			"subject", a.cert.Subject.String(), "notAfter", a.notAfter, "roots", len(a.roots))
		return a, nil
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("reading Secret %s/%s: %w (weft-control needs get on secrets in its namespace)", namespace, PluginSecretName, err)
	}

	root, err := secrets.Get(ctx, RootSecretName, metav1.GetOptions{})
	switch {
	case err == nil:
		return loadedRoot(root, opts, "loaded")
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("reading Secret %s/%s: %w (weft-control needs get on secrets in its namespace)", namespace, RootSecretName, err)
	}

	fresh, err := newRootSecret(namespace, opts)
	if err != nil {
		return nil, err
	}
	created, err := secrets.Create(ctx, fresh, metav1.CreateOptions{})
	switch {
	case err == nil:
		return loadedRoot(created, opts, "created")
	case apierrors.IsAlreadyExists(err):
		// Another replica won the race: use its root, never ours.
		winner, err := secrets.Get(ctx, RootSecretName, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("reading Secret %s/%s created by another replica: %w", namespace, RootSecretName, err)
		}
		return loadedRoot(winner, opts, "loaded (created concurrently by another replica)")
	default:
		return nil, fmt.Errorf("creating Secret %s/%s: %w (weft-control needs create on secrets in its namespace)", namespace, RootSecretName, err)
	}
}

func loadedRoot(s *corev1.Secret, opts Options, how string) (*Authority, error) {
	a, err := authorityFromRoot(s, opts)
	if err != nil {
		return nil, err
	}
	opts.Logger.Info("CA root "+how, "secret", s.Namespace+"/"+s.Name,
		"subject", a.cert.Subject.String(), "notAfter", a.notAfter)
	return a, nil
}

func authorityFromRoot(s *corev1.Secret, opts Options) (*Authority, error) {
	where := fmt.Sprintf("Secret %s/%s", s.Namespace, s.Name)
	certs, err := secretCerts(s, KeyCACert, true)
	if err != nil {
		return nil, err
	}
	key, err := secretKey(s, KeyCAKey)
	if err != nil {
		return nil, err
	}
	cert := certs[0]
	a, err := NewAuthority(key, cert, certs[1:], []*x509.Certificate{cert}, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %q/%q: %w; fix or delete the Secret (deleting it makes a new root: every workload certificate must then be reissued)", where, KeyCACert, KeyCAKey, err)
	}
	a.source = where
	return a, nil
}

func authorityFromPlugin(s *corev1.Secret, opts Options) (*Authority, error) {
	where := fmt.Sprintf("Secret %s/%s", s.Namespace, s.Name)
	caCerts, err := secretCerts(s, KeyCACert, true)
	if err != nil {
		return nil, err
	}
	key, err := secretKey(s, KeyCAKey)
	if err != nil {
		return nil, err
	}
	roots, err := secretCerts(s, KeyRootCert, true)
	if err != nil {
		return nil, err
	}
	chain, err := secretCerts(s, KeyCertChain, false)
	if err != nil {
		return nil, err
	}
	cert := caCerts[0]
	if err := keyMatchesCert(key, cert); err != nil {
		return nil, fmt.Errorf("%s: %q does not belong to %q: %w", where, KeyCAKey, KeyCACert, err)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("%s: %q (subject %q) is not a CA certificate (basicConstraints CA:true is missing)", where, KeyCACert, cert.Subject.String())
	}
	intermediates := append(append([]*x509.Certificate(nil), caCerts[1:]...), chain...)
	a, err := NewAuthority(key, cert, intermediates, roots, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %q with %q and %q: %w", where, KeyCACert, KeyCertChain, KeyRootCert, err)
	}
	a.source = where
	return a, nil
}

// secretCerts parses every CERTIFICATE block under key.
func secretCerts(s *corev1.Secret, key string, required bool) ([]*x509.Certificate, error) {
	where := fmt.Sprintf("Secret %s/%s", s.Namespace, s.Name)
	data, ok := s.Data[key]
	if !ok || len(bytes.TrimSpace(data)) == 0 {
		if required {
			return nil, fmt.Errorf("%s: key %q is missing or empty", where, key)
		}
		return nil, nil
	}
	certs, err := parseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: key %q: %w", where, key, err)
	}
	return certs, nil
}

func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			if len(bytes.TrimSpace(rest)) != 0 {
				return nil, errors.New("contains data that is not PEM")
			}
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q where CERTIFICATE was expected", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return certs, nil
}

// secretKey parses the private key under key. Errors never include the key.
func secretKey(s *corev1.Secret, key string) (crypto.Signer, error) {
	where := fmt.Sprintf("Secret %s/%s", s.Namespace, s.Name)
	data, ok := s.Data[key]
	if !ok || len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%s: key %q is missing or empty", where, key)
	}
	signer, err := parsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: key %q: %w", where, key, err)
	}
	return signer, nil
}

func parsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block (want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key (want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)", block.Type)
	}
	if err != nil {
		// Parser errors describe structure, never key bytes.
		return nil, fmt.Errorf("%s does not parse: %w", block.Type, err)
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	default:
		return nil, fmt.Errorf("unsupported private key type %T", key)
	}
}

func keyMatchesCert(signer crypto.Signer, cert *x509.Certificate) error {
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return errors.New("private key does not match the certificate's public key")
	}
	return nil
}

func newRootSecret(namespace string, opts Options) (*corev1.Secret, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA root key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := opts.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{opts.TrustDomain.Name()},
			CommonName:   "Weft root CA",
		},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(opts.RootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-signing CA root: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding CA root key: %w", err)
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      RootSecretName,
			Namespace: namespace,
			Labels:    map[string]string{"app.kubernetes.io/managed-by": "weft-control"},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{
			KeyCACert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			KeyCAKey:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		},
	}, nil
}

// randomSerial returns a positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("generating serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}
