// Package command is the command line of weft-waypoint and weft-gateway:
// the same flags and daemon; weft-gateway also reads its TLS credentials
// from Secrets (waypoint/gatewaycreds), which weft-waypoint does not link.
package command

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/weft-mesh/weft/pkg/cli"
	"github.com/weft-mesh/weft/pkg/gomaxprocs"
	"github.com/weft-mesh/weft/pkg/mesh"
	"github.com/weft-mesh/weft/waypoint/daemon"
)

// New is the command line of a waypoint binary: use is its name, mode
// the --mode it runs in by default, certs where a gateway's TLS
// credentials come from (nil in weft-waypoint, which cannot run as a
// gateway).
func New(use, short, mode string, certs daemon.CertificateSource) *cobra.Command {
	cfg := daemon.Config{Certificates: certs}
	var logLevel, gateway string
	var accessLog bool
	defGateway := ""
	if ns, name := os.Getenv("POD_NAMESPACE"), os.Getenv("GATEWAY_NAME"); ns != "" && name != "" {
		defGateway = ns + "/" + name
	}
	cmd := &cobra.Command{
		Use:           use,
		Short:         short,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Log, err = cli.Logger(os.Stderr, logLevel); err != nil {
				return err
			}
			ns, name, ok := strings.Cut(gateway, "/")
			if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
				return fmt.Errorf("--gateway %q: want <namespace>/<name> (or set POD_NAMESPACE and GATEWAY_NAME)", gateway)
			}
			cfg.Namespace, cfg.Gateway = ns, name
			if accessLog {
				w, stop := cli.AccessLog(os.Stdout)
				defer stop()
				cfg.AccessLog = w
			}
			return cli.RunUntilSignal(func(ctx context.Context) error {
				gomaxprocs.Adapt(ctx, cfg.Log) // process-wide: here, not in Run, which tests call in their process
				return daemon.Run(ctx, cfg)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Mode, "mode", mode, "waypoint (HBONE from node agents) or gateway (an ingress gateway: plain HTTP on the ports its Listeners name; node ID gateway~<namespace>/<service account>~<pod>)")
	f.StringVar(&gateway, "gateway", defGateway, "the waypoint Gateway this pod serves, <namespace>/<name> (default $POD_NAMESPACE/$GATEWAY_NAME)")
	f.StringVar(&cfg.PodName, "pod-name", os.Getenv("POD_NAME"), "this pod's name, part of the xDS node ID (default $POD_NAME)")
	f.StringVar(&cfg.ServiceAccount, "service-account", os.Getenv("SERVICE_ACCOUNT"), "service account of this pod, for its SPIFFE ID (default $SERVICE_ACCOUNT, else the gateway name)")
	f.StringVar(&cfg.TrustDomain, "trust-domain", mesh.DefaultTrustDomain, "the mesh trust domain")
	f.StringVar(&cfg.ControlAddress, "control-address", mesh.ControlAddress(), "weft-control's xDS and CA endpoint (TLS)")
	f.StringVar(&cfg.CARootCert, "ca-root-cert", "/etc/weft/ca-root/root-cert.pem", "trust anchors for the control plane (ConfigMap weft-ca-root-cert)")
	f.StringVar(&cfg.TokenFile, "token-file", "/var/run/secrets/weft/token", "projected service-account token with audience weft-ca")
	f.StringVar(&cfg.HBONEAddress, "hbone-address", mesh.Addr("", mesh.HBONEPort), "HBONE listener (mTLS tunnel from node agents)")
	f.StringVar(&cfg.MetricsAddress, "metrics-address", mesh.Addr("", mesh.MetricsPort), "Prometheus /metrics and /stats/prometheus")
	f.StringVar(&cfg.ReadinessAddress, "readiness-address", mesh.Addr("", mesh.ReadinessPort), "/healthz/ready and /healthz/live")
	f.StringVar(&cfg.AdminAddress, "admin-address", mesh.Addr("127.0.0.1", mesh.AdminPort), "admin: /config_dump, /certs (keep it on loopback)")
	f.StringSliceVar(&cfg.CredentialNamespaces, "credential-namespaces", nil, "gateway mode: namespaces besides its own whose Secrets it may serve as Gateway API listener certificates (its Role must let it read them; charts/gateway credentialNamespaces)")
	f.DurationVar(&cfg.DrainDuration, "drain-duration", 5*time.Second, "after SIGTERM, how long to keep serving, not ready, while clients learn the waypoint is going (Istio's terminationDrainDuration; keep it below the pod's terminationGracePeriodSeconds)")
	f.IntVar(&cfg.MaxConnections, "max-connections", 16384, "open connections per traffic listener (HBONE, each gateway port) before new ones wait in the accept queue (0: no cap)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.BoolVar(&accessLog, "access-log", true, "write one JSON line per request to stdout (buffered: lines appear within a second)")
	return cmd
}
