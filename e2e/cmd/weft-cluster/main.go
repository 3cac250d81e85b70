// Command weft-cluster drives the local cluster: a real Kubernetes control
// plane and container-less nodes made of network namespaces (see
// e2e/cluster). `up` starts a supervisor in the background and returns when
// the cluster is ready; `down` stops it and removes leftovers of any earlier
// run; `status` reports what is running.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weft-mesh/weft/e2e/cluster"
)

func main() {
	if err := rootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "weft-cluster:", err)
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	var cfg cluster.Config
	var timeout time.Duration
	root := &cobra.Command{
		Use:           "weft-cluster",
		Short:         "Run a local Kubernetes cluster with container-less nodes",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&cfg.Name, "name", envOr("WEFT_CLUSTER_NAME", "weft"), "cluster name (prefixes its namespaces and cgroup)")
	pf.StringVar(&cfg.StateDir, "state-dir", os.Getenv("WEFT_CLUSTER_STATE_DIR"), "state directory (default _output/clusters/<name>)")

	addStartFlags := func(c *cobra.Command) {
		f := c.Flags()
		f.IntVar(&cfg.Nodes, "nodes", 2, "number of nodes")
		f.StringVar(&cfg.AssetsDir, "assets-dir", envOr("WEFT_KUBE_ASSETS", "_output/kube-assets/bin"), "third-party binaries (make kube-assets)")
		f.StringVar(&cfg.BinDir, "bin-dir", envOr("WEFT_BIN_DIR", "_output/bin"), "Weft's binaries (make build)")
		f.StringArrayVar(&cfg.ImageMaps, "image-map", nil, "image map file for the kubelets (repeatable)")
		f.IntVar(&cfg.APIPort, "api-port", 6443, "host loopback port forwarded to kube-apiserver (0 = any free port)")
		f.IntVar(&cfg.Index, "index", 0, "address plan index (0-15), to run several clusters at once")
		f.StringVar(&cfg.Region, "region", "region-1", "the nodes' topology.kubernetes.io/region label")
		f.StringSliceVar(&cfg.Zones, "zones", nil, "the nodes' topology.kubernetes.io/zone labels, node i in the i-th modulo their number (default zone-a, zone-b, ... one per node)")
		f.DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait for the cluster to become ready")
	}

	up := &cobra.Command{
		Use:   "up",
		Short: "Start the cluster in the background and wait until it is ready",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return up(cfg, timeout)
		},
	}
	addStartFlags(up)

	run := &cobra.Command{
		Use:    "run",
		Short:  "Run the cluster in the foreground until interrupted",
		Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runForeground(cfg, timeout)
		},
	}
	addStartFlags(run)

	down := &cobra.Command{
		Use:   "down",
		Short: "Stop the cluster and remove everything it left on the machine",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Defaults()
			if err := cluster.Down(cfg.Name, cfg.StateDir); err != nil {
				return err
			}
			fmt.Printf("cluster %q is down (logs kept in %s)\n", cfg.Name, filepath.Join(cfg.StateDir, "logs"))
			return nil
		},
	}

	status := &cobra.Command{
		Use:   "status",
		Short: "Show whether the cluster is up and the state of its nodes",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Defaults()
			return status(cmd.Context(), cfg)
		},
	}
	root.AddCommand(up, run, down, status)
	return root
}

// up starts `weft-cluster run` as a detached supervisor and waits until it
// reports the cluster ready, or prints why it failed.
func up(cfg cluster.Config, timeout time.Duration) error {
	cfg.Defaults()
	args := []string{"run", "--name", cfg.Name, "--state-dir", cfg.StateDir, "--nodes", fmt.Sprint(cfg.Nodes),
		"--assets-dir", cfg.AssetsDir, "--bin-dir", cfg.BinDir, "--api-port", fmt.Sprint(cfg.APIPort),
		"--index", fmt.Sprint(cfg.Index), "--timeout", timeout.String()}
	for _, m := range cfg.ImageMaps {
		args = append(args, "--image-map", m)
	}
	args = append(args, "--region", cfg.Region, "--zones", strings.Join(cfg.Zones, ","))
	if st, err := cluster.ReadState(cfg.StateDir); err == nil && cluster.ProcessAlive(st.PID) {
		return fmt.Errorf("cluster %q is already up (pid %d): export KUBECONFIG=%s, or run `weft-cluster down --name %s` first", cfg.Name, st.PID, st.Kubeconfig, cfg.Name)
	}
	logDir := filepath.Join(cfg.StateDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(logDir, "supervisor.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fmt.Printf("starting cluster %q with %d nodes (supervisor pid %d, log %s)...\n", cfg.Name, cfg.Nodes, cmd.Process.Pid, logPath)
	start := time.Now()
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("cluster %q failed to start (%v); it removed what it had made (log %s):\n%s", cfg.Name, err, logPath, failure(logPath))
		case <-time.After(250 * time.Millisecond):
		}
		if st, err := cluster.ReadState(cfg.StateDir); err == nil && st.PID == cmd.Process.Pid {
			fmt.Printf("cluster %q is up in %s\n\n  export KUBECONFIG=%s\n  kubectl get nodes -o wide\n\n", cfg.Name, time.Since(start).Round(time.Second), st.Kubeconfig)
			return nil
		}
	}
}

func runForeground(cfg cluster.Config, timeout time.Duration) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	// A signal while starting cancels the start (which then tears down).
	sigCtx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(sigCtx, timeout)
	c, err := cluster.Start(ctx, cfg, log)
	cancel()
	if err != nil {
		stopSignals()
		return err
	}
	log.Info("cluster ready", "name", c.Config.Name, "kubeconfig", c.Kubeconfig, "apiPort", c.Config.APIPort)
	<-sigCtx.Done()
	stopSignals()
	log.Info("stopping cluster")
	return c.Stop()
}

func status(ctx context.Context, cfg cluster.Config) error {
	st, err := cluster.ReadState(cfg.StateDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cluster %q is not up (no state in %s)", cfg.Name, cfg.StateDir)
		}
		return err
	}
	if !cluster.ProcessAlive(st.PID) {
		return fmt.Errorf("cluster %q is not running: its supervisor (pid %d) is gone; run `weft-cluster down --name %s` to clean up", cfg.Name, st.PID, cfg.Name)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", st.Kubeconfig)
	if err != nil {
		return err
	}
	rc.Timeout = 5 * time.Second
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("cluster %q: supervisor pid %d is running but the API server does not answer: %w", cfg.Name, st.PID, err)
	}
	fmt.Printf("cluster %q up since %s (supervisor pid %d)\nAPI server: https://127.0.0.1:%d\nexport KUBECONFIG=%s\n\n",
		st.Name, st.Started.Format(time.RFC3339), st.PID, st.APIPort, st.Kubeconfig)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tREADY\tINTERNAL-IP\tPOD-CIDR")
	for _, n := range nodes.Items {
		ready := "False"
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				ready = string(c.Status)
			}
		}
		var addr string
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				addr = a.Address
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", n.Name, ready, addr, n.Spec.PodCIDR)
	}
	return w.Flush()
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// failure is the error the supervisor ended with (main prints it last,
// after "weft-cluster: "), or else the last lines of its log.
func failure(logPath string) string {
	data, err := os.ReadFile(logPath)
	if err != nil {
		return err.Error()
	}
	text := strings.TrimRight(string(data), "\n")
	const prefix = "\nweft-cluster: "
	if i := strings.LastIndex(text, prefix); i >= 0 {
		return text[i+len(prefix):]
	}
	lines := strings.Split(text, "\n")
	return "  " + strings.Join(lines[max(0, len(lines)-15):], "\n  ")
}
