// Package gatewaycreds serves a gateway's TLS credentials from Kubernetes
// Secrets (Istio's credentialName, Gateway API certificateRefs), read with
// the gateway pod's own token. Only weft-gateway links it: its Kubernetes
// client (client-go) is most of what a waypoint would otherwise load and
// keep resident without ever using it.
package gatewaycreds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/weft-mesh/weft/pkg/credential"
)

// SecretCertificates resolves "kubernetes://<name>" (or "<name>") to the
// Secret <name> of the gateway's own namespace: Istio's credentialName;
// and "kubernetes://<namespace>/<name>" (a Gateway API listener's
// certificateRef) to a Secret of the gateway's namespace or of one of the
// extra namespaces it was given (charts/gateway credentialNamespaces,
// where its Role lets it read Secrets). No other namespace is read,
// whatever the control plane asks for, and the control plane never gets
// a key. Secrets are watched, so a renewed certificate is used by the
// next handshake; parsed pairs are cached per Secret resourceVersion.
type SecretCertificates struct {
	ns      string                                       // the gateway's own
	listers map[string]corelisters.SecretNamespaceLister // by namespace
	synced  []cache.InformerSynced
	log     *slog.Logger
	ready   *prometheus.GaugeVec

	mu    sync.Mutex
	cache map[string]parsedSecret // by credential name
	cas   map[string]parsedCAs    // by "<namespace>/<Secret>"
}

type parsedCAs struct {
	version string
	pool    *x509.CertPool
	err     error
}

type parsedSecret struct {
	version string
	cert    *tls.Certificate
	err     error
}

// New watches the Secrets of namespace ns, the
// gateway's own, and of the extra namespaces until ctx ends (one
// namespaced watch each: no cluster-wide access is needed). The gauge
// weft_gateway_credential_ready{credential_name} (1 usable, 0 not) is
// registered on reg when non-nil.
func New(ctx context.Context, client kubernetes.Interface, ns string, extra []string, reg prometheus.Registerer,
	log *slog.Logger) (*SecretCertificates, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &SecretCertificates{ns: ns, listers: map[string]corelisters.SecretNamespaceLister{}, log: log,
		ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "weft_gateway_credential_ready",
			Help: "Whether the Secret a gateway TLS server names (credentialName) holds a usable certificate and key (1) or not (0), as of its last use."},
			[]string{"credential_name"}),
		cache: map[string]parsedSecret{}, cas: map[string]parsedCAs{}}
	if reg != nil {
		if err := reg.Register(s.ready); err != nil {
			return nil, err
		}
	}
	for _, n := range append([]string{ns}, extra...) {
		if _, dup := s.listers[n]; dup || n == "" {
			continue
		}
		f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(n))
		inf := f.Core().V1().Secrets()
		s.listers[n] = inf.Lister().Secrets(n)
		s.synced = append(s.synced, inf.Informer().HasSynced)
		f.Start(ctx.Done())
	}
	return s, nil
}

// hasSynced: every namespace's Secrets are listed.
func (s *SecretCertificates) hasSynced() bool {
	for _, f := range s.synced {
		if !f() {
			return false
		}
	}
	return true
}

// Certificate returns the certificate of Secret sdsName, or why there is
// none (never with key material in the message).
func (s *SecretCertificates) Certificate(sdsName string) (*tls.Certificate, error) {
	name := strings.TrimPrefix(sdsName, "kubernetes://")
	if !s.hasSynced() {
		return nil, fmt.Errorf("credential %q: Secrets not listed yet", name)
	}
	ns, secretName, err := s.secretName(name)
	var sec *corev1.Secret
	version := ""
	if err == nil {
		sec, err = s.listers[ns].Get(secretName)
		switch {
		case apierrors.IsNotFound(err):
			err = fmt.Errorf("credential %q: no Secret %s in namespace %s", name, secretName, ns)
		case err != nil:
			err = fmt.Errorf("credential %q: %w", name, err)
		default:
			version = sec.ResourceVersion
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, had := s.cache[name]
	if err == nil && had && prev.version == version {
		return prev.cert, prev.err
	}
	var cert *tls.Certificate
	if err == nil {
		cert, err = credential.Parse(sec)
	}
	s.cache[name] = parsedSecret{version: version, cert: cert, err: err}
	switch {
	case err != nil && (!had || prev.err == nil || prev.err.Error() != err.Error()):
		s.log.Error("gateway credential unusable: handshakes that need it fail (its TLS servers, clusters presenting it)", "credential", name, "err", err)
	case err == nil && (!had || prev.version != version):
		s.log.Info("gateway credential loaded", "credential", name, "resourceVersion", version, "notAfter", cert.Leaf.NotAfter)
	}
	s.ready.WithLabelValues(name).Set(map[bool]float64{true: 1, false: 0}[err == nil])
	return cert, err
}

// CAs returns the CA bundle that "kubernetes://<credential>-cacert"
// names, where istiod's gateways find it: the Secret <credential>-cacert
// (key ca.crt, or cacert), else key ca.crt of the Secret <credential>.
// No bundle means no handshake (the chain fails closed).
func (s *SecretCertificates) CAs(sdsName string) (*x509.CertPool, error) {
	name := strings.TrimPrefix(sdsName, "kubernetes://")
	base, ok := strings.CutSuffix(name, "-cacert")
	if !ok || base == "" {
		return nil, fmt.Errorf("CA bundle %q: want <credentialName>-cacert", name)
	}
	if !s.hasSynced() {
		return nil, fmt.Errorf("CA bundle %q: Secrets not listed yet", name)
	}
	for _, c := range []struct {
		secret string
		keys   []string
	}{{name, []string{"ca.crt", "cacert"}}, {base, []string{"ca.crt"}}} {
		ns, secretName, err := s.secretName(c.secret)
		if err != nil {
			return nil, err
		}
		sec, err := s.listers[ns].Get(secretName)
		if apierrors.IsNotFound(err) {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("CA bundle %q: %w", name, err)
		}
		for _, k := range c.keys {
			if pem, ok := sec.Data[k]; ok {
				return s.caPool(ns+"/"+secretName, k, sec.ResourceVersion, pem)
			}
		}
	}
	return nil, fmt.Errorf("CA bundle %q: no Secret %s (key ca.crt) and no key ca.crt in Secret %s", name, name, base)
}

// caPool parses a PEM bundle once per Secret version.
func (s *SecretCertificates) caPool(secret, key, version string, pem []byte) (*x509.CertPool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.cas[secret]; ok && p.version == version {
		return p.pool, p.err
	}
	p := parsedCAs{version: version, pool: x509.NewCertPool()}
	if !p.pool.AppendCertsFromPEM(pem) {
		p.pool, p.err = nil, fmt.Errorf("CA bundle: key %s of Secret %s holds no PEM certificate", key, secret)
		s.log.Error("gateway CA bundle unusable: handshakes that need it (MUTUAL servers, originating clusters) fail", "secret", secret, "err", p.err)
	}
	s.cas[secret] = p
	return p.pool, p.err
}

// secretName is the namespace and name of the Secret credential name
// ("<name>": of the gateway's namespace; "<namespace>/<name>" for a
// Gateway API listener's certificateRef) means, in a namespace the
// gateway watches.
func (s *SecretCertificates) secretName(name string) (ns, secret string, err error) {
	ns, secret, qualified := strings.Cut(name, "/")
	if !qualified {
		return s.ns, name, nil
	}
	if _, ok := s.listers[ns]; !ok {
		return "", "", fmt.Errorf("credential %q: Secret of namespace %s: the gateway reads credentials from its own namespace (%s) and its credentialNamespaces only",
			name, ns, s.ns)
	}
	return ns, secret, nil
}
