// Package credential reads a gateway's TLS server certificate from a
// Kubernetes Secret. The gateway (waypoint/proxy) serves what Parse
// returns and weft-control (control/waypoint/deploy) reports in a Gateway
// listener's status whether Parse accepts the Secret, so the two cannot
// disagree on what a usable Secret is.
package credential

import (
	"crypto/tls"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// Parse reads a Secret as Istio does: tls.crt/tls.key (type
// kubernetes.io/tls), else cert/key (generic). The certificate must parse
// and match the key; errors name the Secret and never hold key material.
func Parse(sec *corev1.Secret) (*tls.Certificate, error) {
	certPEM, keyPEM := sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]
	if len(certPEM) == 0 && len(keyPEM) == 0 {
		certPEM, keyPEM = sec.Data["cert"], sec.Data["key"]
	}
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return nil, fmt.Errorf("credential %q: Secret %s/%s has no tls.crt and tls.key (or cert and key)", sec.Name, sec.Namespace, sec.Name)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// X509KeyPair's errors describe the PEM, not the key bytes.
		return nil, fmt.Errorf("credential %q: Secret %s/%s: %w", sec.Name, sec.Namespace, sec.Name, err)
	}
	if pair.Leaf == nil {
		return nil, errors.New("credential: certificate not parsed")
	}
	return &pair, nil
}
