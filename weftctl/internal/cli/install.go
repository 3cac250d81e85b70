package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/weft-mesh/weft/charts"
	"github.com/weft-mesh/weft/weftctl/internal/install"
	"github.com/weft-mesh/weft/weftctl/internal/output"
)

// defaultInstallTimeout bounds install and uninstall unless --timeout is given.
const defaultInstallTimeout = 5 * time.Minute

// installFlags are install's and uninstall's own flags.
type installFlags struct {
	chartsDir  string
	valueFiles []string
	sets       []string
	wait       bool
	purge      bool
}

func newInstall(o *options) *cobra.Command {
	var f installFlags
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install or upgrade Weft (CRDs, control plane, node agents) with Helm",
		Long: `install installs Weft with the Helm SDK and the charts built into weftctl,
or upgrades it when it is installed: running it again with other values is an
upgrade, running it again with the same ones changes nothing but the Helm
revision. It installs three Helm releases, in this order:

  weft-base        charts/base        the CRDs Weft reads (Istio and Gateway API
                                      kinds); release record in namespace "default",
                                      as "helm install weft-base charts/base" keeps it
  weft-control     charts/control     the control plane, in -n (default weft-system,
                                      created if missing)
  weft-node-agent  charts/node-agent  the node agents (DaemonSet), in -n

They are the same releases the charts' README installs with the helm CLI, so
either tool can upgrade what the other installed ("helm list -A" shows them).

Values: -f FILE is YAML with one top-level key per chart: base, control and
nodeAgent, each holding that chart's values, e.g.

  control:
    replicaCount: 3
  nodeAgent:
    logLevel: debug

--set takes helm's --set syntax with the chart's key first:
--set control.replicaCount=3,nodeAgent.logLevel=debug. Later -f files override
earlier ones, --set overrides them all. Values not given are the charts'
defaults, also on upgrade (no --reuse-values): the command line is the whole
configuration. Every chart's values.schema.json checks its values before
anything is installed; a rejected value names the chart and the field.

With --wait (the default) install waits for weft-control's Deployment before
it installs the node agents (they need its CA), then for the agents'
DaemonSet on every node, printing progress to stderr. --timeout bounds the
whole command (default 5m here, whatever the global default says). The
namespace is -n when given, else --weft-namespace (env WEFT_NAMESPACE,
default weft-system).

It prints one row per release (-o table, json or yaml): release, namespace,
chart, chart version, revision and status.`,
		Example: `  weftctl install
  weftctl install --set control.replicaCount=1 -n weft-system
  weftctl install -f weft-values.yaml --set nodeAgent.logLevel=debug -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := o.format()
			if err != nil {
				return err
			}
			vals, err := f.values()
			if err != nil {
				return err
			}
			in, err := o.installer(cmd, f.chartsDir)
			if err != nil {
				return err
			}
			st, err := in.Install(cmd.Context(), vals, f.wait)
			if len(st) > 0 {
				if perr := output.Print(o.out, format, st, releaseTable(st)); perr != nil && err == nil {
					err = perr
				}
			}
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVarP(&f.valueFiles, "values", "f", nil, "YAML values file with top-level keys base, control, nodeAgent (repeatable)")
	fl.StringArrayVar(&f.sets, "set", nil, "values as <component>.<key>=<value>[,...], component base, control or nodeAgent (repeatable)")
	fl.BoolVar(&f.wait, "wait", true, "wait for weft-control and the node agents to be ready")
	fl.StringVar(&f.chartsDir, "charts", "", "load the charts from this directory (holding base/, control/, node-agent/) instead of the ones built in")
	return cmd
}

func newUninstall(o *options) *cobra.Command {
	var f installFlags
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove Weft: node agents, their state on every node, the control plane (CRDs only with --purge)",
		Long: `uninstall removes what install installed, in this order:

 1. the weft-node-agent release, then it waits for the agent pods to stop;
 2. every node's Weft state, which the agents leave behind on purpose (it
    keeps pods' traffic captured across agent restarts): the weft-cni entry
    in the node's CNI conflist and the weft-cni binary, the eBPF programs
    and maps pinned under the bpffs, the policy routing rule (fwmark
    0x1000, table 1500), the nftables table and the agents' CNI socket and
    spool under /var/run/weft. On each node a short-lived
    pod (nodeName set, host network, tolerating every taint, no API token)
    runs "weft-node-agent uninstall" with the agents' image and pull policy
    and the agents' CNI, bpffs and run host directories, as root with only
    CAP_NET_ADMIN. The result is printed per node; the pods are deleted
    afterwards. A node that fails keeps uninstall going but makes it exit
    non-zero, with the pod's exit code and the tail of its log;
 3. the weft-control release;
 4. the weft-base release, only with --purge. Without it the CRDs stay: their
    removal would delete every VirtualService, DestinationRule,
    AuthorizationPolicy, Gateway, HTTPRoute, ... in the cluster. Note that
    the CRDs carry helm.sh/resource-policy: keep, so even --purge removes the
    release record only; "kubectl delete crd <name>" removes a CRD and all
    objects of its kind.

Enrolled pods keep running and their traffic goes direct (plaintext) once
their node is cleaned; remove the istio.io/dataplane-mode labels as well.
Releases that are not installed are skipped, so uninstall can be re-run
after a partial failure; with no agent DaemonSet left, the cleanup pods use
the node-agent chart's default image and paths.

-n selects the namespace (else --weft-namespace, env WEFT_NAMESPACE, default
weft-system), --timeout bounds the whole command (default 5m here). The summary (-o table, json or yaml) lists each
release and node with its result.`,
		Example: `  weftctl uninstall
  weftctl uninstall --purge -o yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := o.format()
			if err != nil {
				return err
			}
			in, err := o.installer(cmd, f.chartsDir)
			if err != nil {
				return err
			}
			res, err := in.Uninstall(cmd.Context(), f.purge)
			for _, n := range res.Nodes {
				if !n.Cleaned && n.LogTail != "" {
					fmt.Fprintf(o.errOut, "--- node %s: log of %s ---\n%s\n", n.Node, n.Pod, n.LogTail)
				}
			}
			if perr := output.Print(o.out, format, res, uninstallTable(res)); perr != nil && err == nil {
				err = perr
			}
			if errors.Is(err, install.ErrNodeCleanup) {
				return fmt.Errorf("%w: see the nodes above; fix and re-run weftctl uninstall", err)
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&f.purge, "purge", false, "also uninstall weft-base (the release of the CRDs; the CRDs themselves are kept by their resource policy)")
	cmd.Flags().StringVar(&f.chartsDir, "charts", "", "load the charts from this directory instead of the ones built in (used for defaults when no agents are left)")
	return cmd
}

func (f installFlags) values() (map[install.Component]map[string]any, error) {
	var files [][]byte
	for _, p := range f.valueFiles {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("-f: %w", err)
		}
		files = append(files, b)
	}
	return install.ParseValues(files, f.sets)
}

// installer connects an Installer: Weft's namespace is -n when given (as
// for helm), else --weft-namespace; --timeout defaults to 5m here.
func (o *options) installer(cmd *cobra.Command, chartsDir string) (install.Installer, error) {
	var fsys fs.FS = charts.FS
	if chartsDir != "" {
		fsys = os.DirFS(chartsDir)
	}
	c, err := o.client()
	if err != nil {
		return install.Installer{}, err
	}
	ns := o.WeftNamespace
	if o.Namespace != "" {
		ns = o.Namespace
	}
	timeout := o.Timeout
	if !cmd.Flags().Changed("timeout") {
		timeout = defaultInstallTimeout
	}
	return install.Installer{
		Helm: install.Helm{Kubeconfig: o.Kubeconfig, Context: o.Context,
			Log: slog.NewTextHandler(o.errOut, &slog.HandlerOptions{Level: slog.LevelWarn})},
		Kube: c.Kube, Charts: fsys, Namespace: ns, Timeout: timeout,
		Progress: func(s string) { fmt.Fprintln(o.errOut, s) },
	}, nil
}

type releaseTable []install.Status

func (releaseTable) Header() []string {
	return []string{"RELEASE", "NAMESPACE", "CHART", "VERSION", "REVISION", "STATUS"}
}

func (t releaseTable) Rows() [][]string {
	rows := make([][]string, len(t))
	for i, s := range t {
		rows[i] = []string{s.Release, s.Namespace, s.Chart, s.ChartVersion, revision(s.Revision), s.Status}
	}
	return rows
}

func revision(r int) string {
	if r == 0 {
		return ""
	}
	return strconv.Itoa(r)
}

type uninstallTable install.UninstallResult

func (uninstallTable) Header() []string { return []string{"STEP", "NAME", "RESULT", "DETAILS"} }

func (t uninstallTable) Rows() [][]string {
	var rows [][]string
	release := func(s install.Status) {
		rows = append(rows, []string{"release", s.Release, s.Status, fmt.Sprintf("namespace %s, last revision %s", s.Namespace, revision(s.Revision))})
	}
	// In the order they ran: the agents, the nodes, the rest.
	if len(t.Releases) > 0 {
		release(t.Releases[0])
	}
	rows = append(rows, t.nodeRows()...)
	for _, s := range t.Releases[min(1, len(t.Releases)):] {
		release(s)
	}
	if t.KeptCRDs {
		rows = append(rows, []string{"release", "weft-base", "kept", "CRDs and all mesh configuration kept (--purge uninstalls the release)"})
	}
	return rows
}

func (t uninstallTable) nodeRows() [][]string {
	var rows [][]string
	for _, n := range t.Nodes {
		res, details := "cleaned", ""
		if !n.Cleaned {
			res, details = "FAILED", n.Message
			if n.ExitCode != nil {
				details = fmt.Sprintf("exit code %d: %s", *n.ExitCode, details)
			}
		}
		rows = append(rows, []string{"node", n.Node, res, details})
	}
	return rows
}
