// Package cli is weftctl's command tree (cobra): flags, validation and the
// calls to the cluster. What the commands compute and print lives in the
// feature packages (waypoint, nodeconfig, proxystatus, output).
package cli

import (
	"context"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/weft-mesh/weft/pkg/mesh"
	"github.com/weft-mesh/weft/weftctl/internal/kube"
	"github.com/weft-mesh/weft/weftctl/internal/output"
)

// DefaultWeftNamespace is where the charts install weft-control and the
// node agents.
const DefaultWeftNamespace = mesh.SystemNamespace

// options are the flags every command shares.
type options struct {
	kube.Flags
	WeftNamespace string // --weft-namespace
	Output        string // -o
	Timeout       time.Duration

	out, errOut io.Writer
	connect     func(kube.Flags) (*kube.Client, error)
}

func (o *options) format() (output.Format, error) { return output.ParseFormat(o.Output) }

func (o *options) client() (*kube.Client, error) { return o.connect(o.Flags) }

func (o *options) context(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), o.Timeout)
}

// NewRoot builds the command tree writing to out and errOut.
func NewRoot(out, errOut io.Writer) *cobra.Command {
	return newRoot(&options{out: out, errOut: errOut, connect: kube.Connect})
}

func newRoot(o *options) *cobra.Command {
	root := &cobra.Command{
		Use:   "weftctl",
		Short: "Operate the Weft service mesh: waypoints, node agent configuration, proxy status",
		Long: `weftctl operates a Weft mesh through the Kubernetes API server only
(kubeconfig as kubectl finds it: --kubeconfig, KUBECONFIG, ~/.kube/config).
Admin endpoints of node agents and weft-control are read through the API
server's pods/portforward subresource, never by connecting to pods.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(o.out)
	root.SetErr(o.errOut)
	pf := root.PersistentFlags()
	pf.StringVar(&o.Kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default: KUBECONFIG, then ~/.kube/config)")
	pf.StringVar(&o.Context, "context", "", "kubeconfig context to use")
	pf.StringVarP(&o.Namespace, "namespace", "n", "", "namespace (default: the context's namespace, else default)")
	pf.StringVar(&o.WeftNamespace, "weft-namespace", envOr("WEFT_NAMESPACE", DefaultWeftNamespace), "namespace of weft-control and the node agents (env WEFT_NAMESPACE)")
	pf.StringVarP(&o.Output, "output", "o", "table", "output format: table, json or yaml")
	pf.DurationVar(&o.Timeout, "timeout", 2*time.Minute, "give up after this long (including --wait)")
	root.AddCommand(newVersion(o), newWaypoint(o), newNodeConfig(o), newProxyStatus(o), newAnalyze(o), newDashboard(o), newInstall(o), newUninstall(o))
	return root
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
