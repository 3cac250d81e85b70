// Command weft-kubelet is the kubelet of weft's e2e clusters: it runs each
// container as a process in its pod's network namespace. See package
// github.com/weft-mesh/weft/e2e/kubelet.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/weft-mesh/weft/e2e/kubelet"
)

func main() {
	// Hidden modes (container-init, ...) re-exec this binary.
	kubelet.MaybeRunHidden(os.Args)

	var cfg kubelet.Config
	var verbose bool
	cmd := &cobra.Command{
		Use:           "weft-kubelet",
		Short:         "Kubelet for weft e2e clusters: containers are processes in network namespaces",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return kubelet.Run(ctx, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.NodeName, "node-name", "", "name of the Node to register")
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig with the node's client certificate")
	f.StringVar(&cfg.NodeIP, "node-ip", "", "node InternalIP (also the hostIP of pods)")
	f.StringVar(&cfg.PodCIDR, "pod-cidr", "", "spec.podCIDR of the Node")
	f.StringToStringVar(&cfg.NodeLabels, "node-labels", nil, "labels to add to the Node, key=value,... (e.g. topology.kubernetes.io/zone=zone-a)")
	f.StringVar(&cfg.RootDir, "root-dir", "", "node root directory; hostPath volumes resolve under it")
	f.StringVar(&cfg.StateDir, "state-dir", "", "kubelet state: pod dirs, logs, state files (default <root-dir>/var/lib/kubelet)")
	f.StringArrayVar(&cfg.ImageMaps, "image-map", nil, "image map YAML file (repeatable; later files win)")
	f.StringVar(&cfg.BinDir, "bin-dir", "", "expands ${BIN} in image maps (default $WEFT_BIN_DIR)")
	f.StringVar(&cfg.CNIConfDir, "cni-conf-dir", "", "CNI network config dir (first file by name is used)")
	f.StringVar(&cfg.CNIBinDir, "cni-bin-dir", "", "CNI plugin binaries dir")
	f.StringVar(&cfg.CNICacheDir, "cni-cache-dir", "", "CNI result cache dir (default <root-dir>/var/lib/cni/cache)")
	f.StringSliceVar(&cfg.ClusterDNS, "cluster-dns", nil, "cluster DNS server IP(s)")
	f.StringVar(&cfg.ClusterDomain, "cluster-domain", "cluster.local", "cluster DNS domain")
	f.StringVar(&cfg.TLSCertFile, "tls-cert-file", "", "serving certificate for the kubelet API")
	f.StringVar(&cfg.TLSKeyFile, "tls-private-key-file", "", "serving key for the kubelet API")
	f.StringVar(&cfg.ClientCAFile, "client-ca-file", "", "CA for client certificates (required and verified when set)")
	f.IntVar(&cfg.Port, "port", 10250, "kubelet API port")
	f.StringVar(&cfg.NetnsDir, "netns-dir", "/run/netns", "where pod network namespaces are bind-mounted")
	f.StringVar(&cfg.NetnsPrefix, "netns-prefix", "", "pod netns name prefix (default weft-<node-name>-)")
	f.StringVar(&cfg.CgroupParent, "cgroup-parent", "", "parent cgroup (relative to the pids hierarchy root)")
	f.BoolVarP(&verbose, "verbose", "v", false, "debug logging")
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "weft-kubelet:", err)
		os.Exit(1)
	}
}
