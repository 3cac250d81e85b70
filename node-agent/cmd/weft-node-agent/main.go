// Command weft-node-agent is Weft's per-node agent (a DaemonSet): it enrols
// pods with eBPF, runs the HBONE tunnel proxy, holds the node's workload
// certificates and enforces L4 policy. See node-agent/README.md.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/weft-mesh/weft/bpf"
	"github.com/weft-mesh/weft/node-agent/agent"
	"github.com/weft-mesh/weft/node-agent/dns"
	"github.com/weft-mesh/weft/node-agent/kubeapi"
	"github.com/weft-mesh/weft/pkg/cli"
	"github.com/weft-mesh/weft/pkg/gomaxprocs"
	"github.com/weft-mesh/weft/pkg/mesh"
)

func main() {
	if err := command().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "weft-node-agent:", err)
		os.Exit(1)
	}
}

func command() *cobra.Command {
	var cfg agent.Config
	var logLevel string
	var accessLog, namespacesFromAPI, podLabelsFromAPI bool
	cmd := &cobra.Command{
		Use:           "weft-node-agent",
		Short:         "Weft node agent: eBPF capture, HBONE tunnel proxy, workload certificates, L4 policy",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Log, err = cli.Logger(os.Stderr, logLevel); err != nil {
				return err
			}
			if accessLog {
				w, stop := cli.AccessLog(os.Stdout)
				defer stop()
				cfg.AccessLog = w
			}
			if namespacesFromAPI || podLabelsFromAPI {
				api, err := kubeapi.InCluster("", "")
				if err != nil {
					return fmt.Errorf("--namespaces-from-api, --pod-labels-from-api: %w", err)
				}
				if namespacesFromAPI {
					cfg.NamespaceLabels = api.NamespaceLabels
				}
				if podLabelsFromAPI {
					cfg.PodLabels = api.PodLabels
				}
			}
			return cli.RunUntilSignal(func(ctx context.Context) error {
				gomaxprocs.Adapt(ctx, cfg.Log) // process-wide: here, not in Run, which tests call in their process
				agent.SetGCPercent(cfg.Log)
				return agent.Run(ctx, cfg)
			})
		},
	}
	agentFlags(cmd, &cfg)
	f := cmd.Flags()
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.BoolVar(&namespacesFromAPI, "namespaces-from-api", false, "at CNI ADD, when neither the control plane nor a remembered set says whether the pod's namespace is enrolled, read its labels from the API server (in-cluster token "+kubeapi.DefaultTokenFile+"), and fail the ADD if it cannot")
	f.BoolVar(&podLabelsFromAPI, "pod-labels-from-api", false, "at CNI ADD, read the new pod's labels from the API server (in-cluster token "+kubeapi.DefaultTokenFile+"): its own istio.io/dataplane-mode label (ambient, none) decides before its namespace's; a failed read leaves the namespace to decide")
	f.BoolVar(&accessLog, "access-log", true, "write one JSON line per connection to stdout (buffered: lines appear within a second)")

	cmd.AddCommand(mountBPFFSCommand(), earlyDemuxCommand(), uninstallCommand(&cfg, cmd), readyCommand(), installCNICommand(&cfg, cmd, &logLevel))
	return cmd
}

// agentFlags binds the agent's Config to its command line flags.
func agentFlags(cmd *cobra.Command, cfg *agent.Config) {
	f := cmd.Flags()
	f.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	f.StringVar(&cfg.ControlAddress, "control-address", mesh.ControlAddress(), "weft-control's xDS and CA endpoint (TLS)")
	f.StringVar(&cfg.CARootCert, "ca-root-cert", "/etc/weft/ca-root/root-cert.pem", "trust anchors for the control plane (ConfigMap weft-ca-root-cert)")
	f.StringVar(&cfg.TokenFile, "token-file", "/var/run/secrets/weft/token", "projected service-account token with audience weft-ca")
	f.StringVar(&cfg.BPFDir, "bpf-dir", "/sys/fs/bpf/weft", "where capture maps and links are pinned (on a bpffs)")
	f.StringVar(&cfg.CNIBinDir, "cni-bin-dir", "/host/opt/cni/bin", "the node's CNI plugin directory, as mounted here")
	f.StringVar(&cfg.CNIConfDir, "cni-conf-dir", "/host/etc/cni/net.d", "the node's CNI configuration directory, as mounted here")
	f.StringVar(&cfg.CNIPlugin, "cni-plugin", "", "weft-cni binary to install (default: next to this executable)")
	f.BoolVar(&cfg.InstallCNI, "install-cni", true, "install weft-cni into --cni-bin-dir and --cni-conf-dir and keep it installed (false: a separate container does, weft-node-agent install-cni)")
	f.StringVar(&cfg.RunDir, "run-dir", "/var/run/weft", "CNI socket and spool; must be the same path on the node")
	f.StringVar(&cfg.Uplink, "uplink", "", "interface traffic from other nodes arrives on (default: the default route's)")
	f.Uint16Var(&cfg.OutboundPort, "outbound-port", mesh.OutboundPort, "transparent listener for enrolled pods' outbound traffic")
	f.Uint16Var(&cfg.InboundPlaintextPort, "inbound-plaintext-port", mesh.InboundPlaintextPort, "transparent listener for plaintext traffic to enrolled pods")
	f.Uint16Var(&cfg.InboundNATPort, "inbound-nat-port", mesh.InboundNATPort, "transparent listener for plaintext traffic DNATed to enrolled pods (NodePort, LoadBalancer, hostPort)")
	// The flag's name until it said which inbound listener it sets.
	f.Uint16Var(&cfg.InboundPlaintextPort, "inbound-port", mesh.InboundPlaintextPort, "")
	_ = f.MarkDeprecated("inbound-port", "use --inbound-plaintext-port")
	f.Uint16Var(&cfg.HBONEPort, "hbone-port", mesh.HBONEPort, "HBONE (mTLS tunnel) port")
	f.BoolVar(&cfg.DNSCapture, "dns-capture", os.Getenv("WEFT_DNS_CAPTURE") == "true", "answer enrolled pods' DNS queries for mesh hosts (Services, ServiceEntries) and forward the rest to the server they asked (env WEFT_DNS_CAPTURE=true)")
	f.Uint16Var(&cfg.DNSPort, "dns-port", dns.Port, "the DNS proxy's port (UDP and TCP) on 127.0.0.1")
	f.StringVar(&cfg.MetricsAddress, "metrics-address", mesh.Addr("", mesh.MetricsPort), "Prometheus /metrics")
	f.StringVar(&cfg.ReadinessAddress, "readiness-address", mesh.Addr("", mesh.ReadinessPort), "/healthz/ready and /healthz/live")
	f.StringVar(&cfg.AdminAddress, "admin-address", mesh.Addr("127.0.0.1", mesh.AdminPort), "admin: /config_dump, /connections (keep it on loopback)")
	f.IntVar(&cfg.MaxConnections, "max-connections", 16384, "open connections per proxy listener before new ones wait in the accept queue (0: no cap)")
	f.IntVar(&cfg.MaxConnectionsPerSource, "max-connections-per-source", 4096, "open connections one source address (a pod, a client) may hold of the outbound and inbound plaintext listeners, and one peer identity of the HBONE listener; beyond it its new ones are reset (outbound, plaintext) or closed after the TLS handshake (HBONE) (0: no cap)")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", 5*time.Minute, "how long an unenrolled pod's proxied connections are kept")
	f.StringVar(&cfg.ReadyFile, "ready-file", "", "a file that exists exactly while this agent is ready (for an exec readiness probe: weft-node-agent ready --ready-file F)")
	f.BoolVar(&cfg.ReleasePods, "release-pods", os.Getenv(mesh.ReleasePodsEnv) == "true", "enrol no pod and unenrol every pod (first step of an uninstall; env "+mesh.ReleasePodsEnv+"=true)")
	f.DurationVar(&cfg.HandoverWait, "handover-wait", 5*time.Second, "when stopping, how long to keep serving while waiting for a successor agent on this node to be ready")
	f.DurationVar(&cfg.ShutdownDrain, "shutdown-drain", 15*time.Second, "when handing over to a successor, how long open connections may take to finish before they are closed")
}

// mountBPFFSCommand is the init container that makes sure a bpffs is
// mounted where the agent pins its maps.
func mountBPFFSCommand() *cobra.Command {
	var bpffsPath string
	mount := &cobra.Command{
		Use:   "mount-bpffs",
		Short: "Mount a bpffs at --path unless one is there (init container)",
		Args:  cobra.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return bpf.EnsureBPFFS(bpffsPath) },
	}
	mount.Flags().StringVar(&bpffsPath, "path", "/sys/fs/bpf", "where the bpffs must be")
	return mount
}

// earlyDemuxCommand is the init container that turns TCP early demux off
// on the node.
func earlyDemuxCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "disable-tcp-early-demux",
		Short: "Set net.ipv4.tcp_early_demux=0 in this network namespace, the node's (init container; see docs/node-agent.md)",
		Args:  cobra.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return bpf.DisableTCPEarlyDemux() },
	}
}

// uninstallCommand cleans the node. It shares the flags that say where the
// agent's files are with the root command (and so cfg, which they set).
func uninstallCommand(cfg *agent.Config, root *cobra.Command) *cobra.Command {
	uninstall := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove everything agents left on this node (CNI entry and binary, eBPF pins, routing rule, nftables table); run with the agent stopped",
		Args:  cobra.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return agent.Uninstall(*cfg) },
	}
	for _, f := range []string{"bpf-dir", "cni-bin-dir", "cni-conf-dir", "run-dir"} {
		uninstall.Flags().AddFlag(root.Flags().Lookup(f))
	}
	return uninstall
}

// installCNICommand is the DaemonSet's install-cni container: the only
// part with write access to the node's CNI directories. It shares the
// flags that say where they are with the root command.
func installCNICommand(cfg *agent.Config, root *cobra.Command, logLevel *string) *cobra.Command {
	install := &cobra.Command{
		Use:   "install-cni",
		Short: "Install weft-cni once a node agent serves its socket on this node, and keep it installed (the DaemonSet's install-cni container)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var err error
			if cfg.Log, err = cli.Logger(os.Stderr, *logLevel); err != nil {
				return err
			}
			if cfg.ReadinessTaint != "" {
				api, err := kubeapi.InCluster("", "")
				if err != nil {
					return fmt.Errorf("--readiness-taint: %w", err)
				}
				cfg.RemoveNodeTaint = api.RemoveNodeTaint
			}
			return cli.RunUntilSignal(func(ctx context.Context) error { return agent.RunCNIInstaller(ctx, *cfg) })
		},
	}
	install.Flags().StringVar(&cfg.ReadinessTaint, "readiness-taint", "", "once weft-cni is installed, remove the taint with this key from --node-name (nodes registered with it get no pods before the plugin is there; in-cluster token "+kubeapi.DefaultTokenFile+"); empty: none")
	for _, f := range []string{"cni-bin-dir", "cni-conf-dir", "cni-plugin", "run-dir", "log-level", "node-name"} {
		install.Flags().AddFlag(root.Flags().Lookup(f))
	}
	return install
}

// readyCommand is the DaemonSet's exec readiness probe: the agent of this
// container is ready exactly while its ready file exists.
func readyCommand() *cobra.Command {
	var readyFile string
	readyCmd := &cobra.Command{
		Use:   "ready",
		Short: "Exit 0 if the agent of this container is ready (its --ready-file exists); the DaemonSet's readiness probe",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if _, err := os.Stat(readyFile); err != nil {
				return fmt.Errorf("not ready: %w", err)
			}
			return nil
		},
	}
	readyCmd.Flags().StringVar(&readyFile, "ready-file", "/tmp/weft-agent-ready", "the agent's --ready-file")
	return readyCmd
}
