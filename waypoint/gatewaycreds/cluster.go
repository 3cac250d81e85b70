package gatewaycreds

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// FromCluster resolves the credentials of HTTPS servers from Secrets of
// the gateway's own namespace and of the extra namespaces, read with the
// pod's service account token (charts/gateway grants get/list/watch on
// Secrets of those namespaces only). Without API access it returns nil
// and says so: HTTPS servers then refuse handshakes, plain HTTP ones keep
// working.
func FromCluster(ctx context.Context, ns string, extra []string, reg prometheus.Registerer, log *slog.Logger) *SecretCertificates {
	rc, err := rest.InClusterConfig()
	if err != nil {
		log.Warn("no Kubernetes API access (is automountServiceAccountToken on?): HTTPS servers with a credentialName refuse handshakes", "err", err)
		return nil
	}
	rc.UserAgent = "weft-gateway"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		log.Warn("Kubernetes client: HTTPS servers with a credentialName refuse handshakes", "err", err)
		return nil
	}
	certs, err := New(ctx, client, ns, extra, reg, log)
	if err != nil {
		log.Warn("gateway credentials: HTTPS servers with a credentialName refuse handshakes", "err", err)
		return nil
	}
	return certs
}
