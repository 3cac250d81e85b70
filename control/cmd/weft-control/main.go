// Command weft-control is Weft's control plane: it watches the cluster,
// translates it into workload-discovery resources (node agents) and Envoy
// resources (waypoints, proxyless gRPC) served over xDS, deploys waypoints
// for Gateways of class weft-waypoint, and is the mesh's certificate
// authority. See control/README.md.
package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/weft-mesh/weft/control/server"
	"github.com/weft-mesh/weft/control/waypoint"
	"github.com/weft-mesh/weft/pkg/cli"
	"github.com/weft-mesh/weft/pkg/mesh"
)

func main() {
	var opts server.Options
	var logLevel, pathNormalization, extensionProviders string
	cmd := &cobra.Command{
		Use:           "weft-control",
		Short:         "Weft control plane: workload discovery over xDS and the mesh CA",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch opts.WaypointPullPolicy {
			case "Always", "IfNotPresent", "Never":
			default:
				return fmt.Errorf("--waypoint-image-pull-policy %q: want Always, IfNotPresent or Never", opts.WaypointPullPolicy)
			}
			if opts.WaypointGOMAXPROCS < 0 {
				return fmt.Errorf("--waypoint-gomaxprocs %d: want a number of Ps, or 0 to follow the load", opts.WaypointGOMAXPROCS)
			}
			if err := checkOTLPEndpoint(opts.WaypointTracingEndpoint); err != nil {
				return fmt.Errorf("--waypoint-tracing-endpoint: %w", err)
			}
			var err error
			if opts.PathNormalization, err = waypoint.ParsePathNormalization(pathNormalization); err != nil {
				return fmt.Errorf("--path-normalization: %w", err)
			}
			if opts.ExtensionProviders, err = waypoint.ParseExtensionProviders([]byte(extensionProviders)); err != nil {
				return fmt.Errorf("--extension-providers: %w", err)
			}
			if opts.Log, err = cli.Logger(os.Stderr, logLevel); err != nil {
				return err
			}
			return cli.RunUntilSignal(func(ctx context.Context) error { return server.Run(ctx, opts) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig (default: in-cluster config)")
	f.StringVar(&opts.Namespace, "namespace", envOr("POD_NAMESPACE", mesh.SystemNamespace), "namespace of the control plane (CA Secrets, leader lease; its service accounts read all of /debug and /dashboard)")
	f.StringVar(&opts.PodName, "pod-name", envOr("POD_NAME", hostname()), "identity in leader election")
	f.StringVar(&opts.TrustDomain, "trust-domain", mesh.DefaultTrustDomain, "SPIFFE trust domain")
	f.StringVar(&opts.ClusterID, "cluster-id", mesh.DefaultClusterID, "cluster name in workload uids")
	f.StringVar(&opts.DomainSuffix, "domain-suffix", mesh.DefaultDomainSuffix, "cluster DNS domain")
	f.StringVar(&opts.RootNamespace, "root-namespace", "", "namespace whose policies apply mesh-wide (default: --namespace)")
	f.StringVar(&opts.XDSAddress, "xds-address", mesh.Addr("", mesh.XDSPort), "gRPC over TLS: xDS and CA")
	f.StringVar(&opts.MonitoringAddress, "monitoring-address", mesh.Addr("", mesh.MonitoringPort), "HTTP: /metrics, /ready, /healthz (open); /debug/syncz, /dashboard (port-forward or a service-account token for --ca-audience)")
	f.DurationVar(&opts.CertTTL, "cert-ttl", 24*time.Hour, "default workload certificate lifetime")
	f.DurationVar(&opts.MaxCertTTL, "max-cert-ttl", 7*24*time.Hour, "longest workload certificate lifetime a caller may ask for")
	f.StringVar(&opts.CAAudience, "ca-audience", "weft-ca", "audience of the service-account tokens callers present")
	f.StringVar(&opts.NodeAgentServiceAccount, "node-agent-service-account", "weft-system/weft-node-agent", "namespace/name of the node agents' service account")
	f.StringVar(&opts.ServiceName, "service-name", "weft-control", "Service name (the serving certificate's DNS names)")
	f.BoolVar(&opts.LeaderElect, "leader-elect", true, "elect a leader for cluster writes (trust bundle ConfigMaps)")
	f.IntVar(&opts.MaxStreamsPerSource, "max-xds-streams-per-source", server.DefaultMaxStreamsPerSource, "xDS streams one address may hold open at once; more are refused (ResourceExhausted) before their token is reviewed")
	f.DurationVar(&opts.Debounce, "debounce", 100*time.Millisecond, "quiet period before a cluster change is pushed")
	f.StringVar(&opts.WaypointImage, "waypoint-image", "ghcr.io/weft-mesh/waypoint:latest", "weft-waypoint image of the waypoint Deployments (the chart passes its own version)")
	f.StringVar(&opts.WaypointPullPolicy, "waypoint-image-pull-policy", "IfNotPresent", "pull policy of the waypoint image: Always, IfNotPresent or Never")
	f.IntVar(&opts.WaypointGOMAXPROCS, "waypoint-gomaxprocs", 0, "GOMAXPROCS of the waypoint and gateway Deployments; 0: each follows its load (docs/operations.md#gomaxprocs-follows-the-load)")
	f.StringVar(&opts.WaypointGODEBUG, "waypoint-godebug", mesh.ProxyGODEBUG, "GODEBUG of the waypoint and gateway Deployments; the default keeps Go's sysmon from being woken by nearly every socket call below full load (docs/operations.md#go-runtime); empty: none")
	f.StringVar(&opts.WaypointTracingEndpoint, "waypoint-tracing-endpoint", "", "OTLP/HTTP endpoint the waypoints send spans to, e.g. http://otel-collector.observability:4318 (OTEL_EXPORTER_OTLP_ENDPOINT of the waypoint pods); empty: no spans")
	f.StringVar(&opts.ServiceAccount, "service-account", "weft-control", "weft-control's service account (in --namespace), which a deployed ingress gateway's RoleBindings let check its certificate Secrets")
	f.StringVar(&opts.GatewaySecretsRole, "gateway-secrets-role", "", "ClusterRole (read Secrets) bound to the gateway Weft deploys for a Gateway of class weft, in its namespace and where its certificateRefs point; empty: none (its HTTPS listeners do not resolve)")
	f.StringVar(&opts.SecretCheckRole, "gateway-secret-check-role", "", "ClusterRole (get Secrets) bound to --service-account in the same namespaces, to check a listener's certificate")
	f.StringVar(&pathNormalization, "path-normalization", "BASE", "how waypoints and gateways normalize request paths before routing and policy (Istio's meshConfig.pathNormalization): NONE, BASE (or DEFAULT), MERGE_SLASHES or DECODE_AND_MERGE_SLASHES")
	f.StringVar(&extensionProviders, "extension-providers", "", "Istio's meshConfig.extensionProviders as a JSON list: the external authorizers (envoyExtAuthzGrpc, envoyExtAuthzHttp) CUSTOM AuthorizationPolicies name and the tracing (opentelemetry) and access log (envoyFileAccessLog) providers Telemetry resources name")
	f.BoolVar(&opts.Dashboard, "dashboard", true, "serve the live mesh dashboard on the monitoring address (/dashboard; scrapes the node agents and waypoints only while it is viewed)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "weft-control:", err)
		os.Exit(1)
	}
}

// checkOTLPEndpoint accepts "" (off) or an http(s) URL with a host, as
// OTEL_EXPORTER_OTLP_ENDPOINT wants it.
func checkOTLPEndpoint(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q: want an http:// or https:// URL with a host, e.g. http://otel-collector.observability:4318", s)
	}
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}
