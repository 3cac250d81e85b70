package credential

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/pkg/testpki"
)

// TestParse: a kubernetes.io/tls Secret and a generic cert/key one are
// usable; a missing key, a certificate that is not PEM and a key that
// does not match are errors naming the Secret, without key material.
func TestParse(t *testing.T) {
	pki := testpki.New(t)
	crt, key := pki.Issue(t, "a.example.com")
	_, otherKey := pki.Issue(t, "b.example.com")
	secret := func(data map[string][]byte) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "weft-ingress", Name: "cred"}, Data: data}
	}
	for _, c := range []struct {
		name string
		data map[string][]byte
		err  string // "" when usable
	}{
		{"kubernetes.io/tls", map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key}, ""},
		{"generic cert/key", map[string][]byte{"cert": crt, "key": key}, ""},
		{"no key", map[string][]byte{corev1.TLSCertKey: crt}, "has no tls.crt and tls.key"},
		{"not PEM", map[string][]byte{corev1.TLSCertKey: []byte("garbage"), corev1.TLSPrivateKeyKey: key}, "weft-ingress/cred"},
		{"key of another certificate", map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: otherKey}, "weft-ingress/cred"},
	} {
		cert, err := Parse(secret(c.data))
		switch {
		case c.err == "" && (err != nil || cert.Leaf.Subject.CommonName != "a.example.com"):
			t.Errorf("%s: %v, want the a.example.com certificate", c.name, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err) || strings.Contains(err.Error(), "PRIVATE KEY")):
			t.Errorf("%s: error %v, want one containing %q and no key material", c.name, err, c.err)
		}
	}
}
