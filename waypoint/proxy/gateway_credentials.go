package proxy

import (
	"context"
	"crypto/tls"
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

// Certificates resolves the SDS name of a TLS filter chain's certificate.
type Certificates interface {
	Certificate(sdsName string) (*tls.Certificate, error)
}

// SecretCertificates resolves "kubernetes://<name>" (or "<name>") to the
// Secret <name> of one namespace, the gateway's own: Istio's credentialName.
// The key never leaves the gateway's namespace and the control plane never
// reads it. Secrets are watched, so a renewed certificate is used by the
// next handshake; parsed pairs are cached per Secret resourceVersion.
type SecretCertificates struct {
	ns     string
	lister corelisters.SecretNamespaceLister
	synced cache.InformerSynced
	log    *slog.Logger
	ready  *prometheus.GaugeVec

	mu    sync.Mutex
	cache map[string]parsedSecret // by Secret name
}

type parsedSecret struct {
	version string
	cert    *tls.Certificate
	err     error
}

// NewSecretCertificates watches the Secrets of namespace ns until ctx ends.
// The gauge weft_gateway_credential_ready{credential_name} (1 usable, 0
// not) is registered on reg when non-nil.
func NewSecretCertificates(ctx context.Context, client kubernetes.Interface, ns string, reg prometheus.Registerer, log *slog.Logger) (*SecretCertificates, error) {
	if log == nil {
		log = slog.Default()
	}
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns))
	inf := f.Core().V1().Secrets()
	s := &SecretCertificates{ns: ns, lister: inf.Lister().Secrets(ns), synced: inf.Informer().HasSynced, log: log,
		ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "weft_gateway_credential_ready",
			Help: "Whether the Secret a gateway TLS server names (credentialName) holds a usable certificate and key (1) or not (0), as of its last use."},
			[]string{"credential_name"}),
		cache: map[string]parsedSecret{}}
	if reg != nil {
		if err := reg.Register(s.ready); err != nil {
			return nil, err
		}
	}
	f.Start(ctx.Done())
	return s, nil
}

// Certificate returns the certificate of Secret sdsName, or why there is
// none (never with key material in the message).
func (s *SecretCertificates) Certificate(sdsName string) (*tls.Certificate, error) {
	name := strings.TrimPrefix(sdsName, "kubernetes://")
	if !s.synced() {
		return nil, fmt.Errorf("credential %q: Secrets of namespace %s not listed yet", name, s.ns)
	}
	secretName, err := s.secretName(name)
	var sec *corev1.Secret
	version := ""
	if err == nil {
		sec, err = s.lister.Get(secretName)
		switch {
		case apierrors.IsNotFound(err):
			err = fmt.Errorf("credential %q: no Secret %s in namespace %s (the gateway reads credentials from its own namespace only)", name, secretName, s.ns)
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
		s.log.Error("gateway credential unusable: its TLS servers refuse handshakes", "credential", name, "err", err)
	case err == nil && (!had || prev.version != version):
		s.log.Info("gateway credential loaded", "credential", name, "resourceVersion", version, "notAfter", cert.Leaf.NotAfter)
	}
	s.ready.WithLabelValues(name).Set(map[bool]float64{true: 1, false: 0}[err == nil])
	return cert, err
}

// secretName is the name of the Secret of the gateway's namespace that
// credential name ("<name>", or "<namespace>/<name>" for a Gateway API
// listener's certificateRef) means. Only the gateway's own namespace is
// read, whatever the control plane asks for.
func (s *SecretCertificates) secretName(name string) (string, error) {
	ns, n, qualified := strings.Cut(name, "/")
	if !qualified {
		return name, nil
	}
	if ns != s.ns {
		return "", fmt.Errorf("credential %q: Secret of namespace %s: the gateway reads credentials from its own namespace (%s) only", name, ns, s.ns)
	}
	return n, nil
}
