package gatewaycreds

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/pkg/testpki"
)

// serialOf is the serial number of a PEM certificate.
func serialOf(t *testing.T, certPEM []byte) int64 {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("no PEM certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.Int64()
}

func tlsSecret(ns, name string, certPEM, keyPEM []byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "1"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM}}
}

// TestSecretCertificates: credentials resolve from Secrets of the
// gateway's own namespace, and namespace-qualified ones also from its
// extra namespaces, never another (kubernetes.io/tls and generic cert/key),
// a renewed Secret is picked up, and missing or invalid ones are errors
// naming the Secret (without key material) and set the ready gauge to 0.
func TestSecretCertificates(t *testing.T) {
	pki := testpki.New(t)
	c1, k1 := pki.Issue(t, "bookinfo.example.com")
	c2, k2 := pki.Issue(t, "generic.example.com")
	other, otherKey := pki.Issue(t, "other.example.com")
	generic := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "weft-ingress", Name: "generic"},
		Data: map[string][]byte{"cert": c2, "key": k2}}
	bad := tlsSecret("weft-ingress", "bad", c1, k2) // key does not match
	client := fake.NewClientset(tlsSecret("weft-ingress", "bookinfo-credential", c1, k1), generic, bad,
		tlsSecret("default", "elsewhere", other, otherKey), tlsSecret("apps", "apps-cert", other, otherKey))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	sc, err := New(ctx, client, "weft-ingress", []string{"apps"}, reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	await.True(t, "the secret cache to sync", sc.hasSynced)

	serial := func(name string) (int64, error) {
		c, err := sc.Certificate(name)
		if err != nil {
			return 0, err
		}
		return c.Leaf.SerialNumber.Int64(), nil
	}
	if s, err := serial("kubernetes://bookinfo-credential"); err != nil || s != serialOf(t, c1) {
		t.Fatalf("kubernetes://bookinfo-credential: serial %d, %v; want %d", s, err, serialOf(t, c1))
	}
	if s, err := serial("generic"); err != nil || s != serialOf(t, c2) {
		t.Fatalf("generic cert/key Secret: serial %d, %v; want %d", s, err, serialOf(t, c2))
	}
	if _, err := serial("kubernetes://elsewhere"); err == nil || !strings.Contains(err.Error(), "no Secret elsewhere in namespace weft-ingress") {
		t.Fatalf("a Secret of another namespace: %v, want not found in weft-ingress", err)
	}
	// A Gateway API certificateRef names its namespace: the gateway's own
	// resolves, another is refused even though that Secret exists.
	if s, err := serial("kubernetes://weft-ingress/bookinfo-credential"); err != nil || s != serialOf(t, c1) {
		t.Fatalf("kubernetes://weft-ingress/bookinfo-credential: serial %d, %v; want %d", s, err, serialOf(t, c1))
	}
	if _, err := serial("kubernetes://default/elsewhere"); err == nil || !strings.Contains(err.Error(), "own namespace (weft-ingress) and its credentialNamespaces only") {
		t.Fatalf("a namespace-qualified Secret of another namespace: %v, want refused", err)
	}
	// An extra namespace (credentialNamespaces) is read; its Secrets are
	// not credentials without the namespace.
	if s, err := serial("kubernetes://apps/apps-cert"); err != nil || s != serialOf(t, other) {
		t.Fatalf("kubernetes://apps/apps-cert: serial %d, %v; want %d", s, err, serialOf(t, other))
	}
	if _, err := serial("kubernetes://apps-cert"); err == nil {
		t.Fatal("kubernetes://apps-cert resolved from namespace apps; want the gateway's own namespace only")
	}
	if _, err := serial("kubernetes://bad"); err == nil || strings.Contains(err.Error(), "PRIVATE KEY") || !strings.Contains(err.Error(), "weft-ingress/bad") {
		t.Fatalf("mismatched key: %v, want an error naming the Secret, without key material", err)
	}
	if v := testutil.ToFloat64(sc.ready.WithLabelValues("bad")); v != 0 {
		t.Fatalf("weft_gateway_credential_ready{bad} = %v, want 0", v)
	}
	if v := testutil.ToFloat64(sc.ready.WithLabelValues("bookinfo-credential")); v != 1 {
		t.Fatalf("weft_gateway_credential_ready{bookinfo-credential} = %v, want 1", v)
	}

	// Renewal: the next lookup serves the new certificate.
	c3, k3 := pki.Issue(t, "bookinfo.example.com")
	renewed := tlsSecret("weft-ingress", "bookinfo-credential", c3, k3)
	renewed.ResourceVersion = "2"
	if _, err := client.CoreV1().Secrets("weft-ingress").Update(ctx, renewed, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	await.True(t, "the rotated credential served", func() bool { s, _ := serial("bookinfo-credential"); return s == serialOf(t, c3) })
	if err := client.CoreV1().Secrets("weft-ingress").Delete(ctx, "bookinfo-credential", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	await.True(t, "the deleted credential gone", func() bool { _, err := serial("bookinfo-credential"); return err != nil })
}

// TestSecretCAs: "<credential>-cacert" resolves where istiod's
// gateways look, the Secret <credential>-cacert first (ca.crt or cacert),
// then key ca.crt of the credential's own Secret; a bundle without a PEM
// certificate, a missing one and another namespace are errors.
func TestSecretCAs(t *testing.T) {
	ca, other := testpki.New(t), testpki.New(t)
	sec := func(ns, name string, data map[string][]byte) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "1"}, Data: data}
	}
	client := fake.NewClientset(
		sec("weft-ingress", "split-cacert", map[string][]byte{"cacert": ca.CertPEM()}),
		sec("weft-ingress", "split", map[string][]byte{"ca.crt": other.CertPEM()}), // the -cacert Secret wins
		sec("weft-ingress", "combined", map[string][]byte{"ca.crt": ca.CertPEM()}),
		sec("weft-ingress", "nocas", map[string][]byte{"tls.crt": ca.CertPEM()}),
		sec("weft-ingress", "garbage-cacert", map[string][]byte{"ca.crt": []byte("not a certificate")}),
		sec("default", "elsewhere", map[string][]byte{"ca.crt": ca.CertPEM()}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sc, err := New(ctx, client, "weft-ingress", nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	await.True(t, "the secret cache to sync", sc.hasSynced)
	leaf, _ := ca.Issue(t, "client.example.com")
	b, _ := pem.Decode(leaf)
	cert, _ := x509.ParseCertificate(b.Bytes)
	for _, name := range []string{"kubernetes://split-cacert", "kubernetes://combined-cacert"} {
		pool, err := sc.CAs(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s: a certificate of the CA does not verify: %v", name, err)
		}
	}
	for _, name := range []string{"kubernetes://nocas-cacert", "kubernetes://garbage-cacert", "kubernetes://missing-cacert",
		"kubernetes://default/elsewhere-cacert", "kubernetes://combined"} {
		if _, err := sc.CAs(name); err == nil {
			t.Errorf("%s: resolved, want an error", name)
		}
	}
}
