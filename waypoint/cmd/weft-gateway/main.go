// Command weft-gateway is Weft's ingress and egress gateway: weft-waypoint
// in gateway mode (plain HTTP and TLS on the ports its Listeners name,
// HBONE to the mesh) that also serves the certificates of its TLS servers
// from Kubernetes Secrets (credentialName, certificateRefs), read with its
// own token. It is in the waypoint image; the gateway Deployments run it.
// See waypoint/README.md.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weft-mesh/weft/waypoint/command"
	"github.com/weft-mesh/weft/waypoint/daemon"
	"github.com/weft-mesh/weft/waypoint/gatewaycreds"
	"github.com/weft-mesh/weft/waypoint/proxy"
)

func main() {
	cmd := command.New("weft-gateway", "Weft gateway: ingress and egress L7 proxy (plain HTTP and TLS in, HBONE out) configured by Envoy xDS",
		daemon.ModeGateway, secrets)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "weft-gateway:", err)
		os.Exit(1)
	}
}

// secrets is gatewaycreds.FromCluster as a daemon.CertificateSource (no
// certificates: a nil interface, not a nil pointer in one).
func secrets(ctx context.Context, ns string, extra []string, reg prometheus.Registerer, log *slog.Logger) proxy.Certificates {
	if c := gatewaycreds.FromCluster(ctx, ns, extra, reg, log); c != nil {
		return c
	}
	return nil
}
