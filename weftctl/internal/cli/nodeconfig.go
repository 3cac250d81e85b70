package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/pkg/mesh"
	"github.com/weft-mesh/weft/weftctl/internal/kube"
	"github.com/weft-mesh/weft/weftctl/internal/nodeconfig"
	"github.com/weft-mesh/weft/weftctl/internal/output"
)

// NodeAgentSelector selects the node agent DaemonSet's pods
// (charts/node-agent).
const NodeAgentSelector = "app=weft-node-agent"

type nodeConfigFlags struct {
	node, workloadNode string
	adminPort          int
}

func newNodeConfig(o *options) *cobra.Command {
	nf := &nodeConfigFlags{}
	cmd := &cobra.Command{
		Use:   "node-config",
		Short: "Show a node agent's configuration: workloads, services, policies, certificates, connections",
		Long: `Reads a node agent's admin endpoint (/config_dump, /connections on
127.0.0.1:--admin-port of its node) through the API server: pods/portforward to
the weft-node-agent pod of the node. Choose the node with --node, or name a
pod (in -n) and the agent of its node is asked. With an explicit -n the
listings show that namespace only.`,
		Example: `  weftctl node-config workloads --node node-0
  weftctl node-config certificates -n default productpage-v1-6d4f8b7c9-abcde
  weftctl node-config services --node node-1 -o json`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&nf.node, "node", "", "node whose agent to ask")
	pf.IntVar(&nf.adminPort, "admin-port", mesh.AdminPort, "node agent admin port")
	for _, v := range dumpViews(o) {
		c := dumpViewCommand(o, nf, v)
		if v.use == "workloads" {
			c.Flags().StringVar(&nf.workloadNode, "workload-node", "", "only workloads running on this node")
		}
		cmd.AddCommand(c)
	}
	cmd.AddCommand(connectionsCommand(o, nf), rawDumpCommand(o, nf))
	return cmd
}

func (nf *nodeConfigFlags) validate(args []string) error {
	switch {
	case nf.node != "" && len(args) > 0:
		return errors.New("give --node or a pod, not both")
	case nf.node == "" && len(args) == 0:
		return errors.New("which node? give --node NODE or a pod name (its node's agent is asked)")
	case nf.adminPort <= 0 || nf.adminPort > 65535:
		return fmt.Errorf("--admin-port %d: out of range", nf.adminPort)
	}
	return nil
}

// agentGet finds the node agent of the node named by --node or a pod and
// GETs path from its admin port through the API server. It returns the body,
// the namespace filter the flags ask for and the agent pod's name.
func (o *options) agentGet(cmd *cobra.Command, nf *nodeConfigFlags, args []string, path string) ([]byte, nodeconfig.Filter, string, error) {
	filter := nodeconfig.Filter{WorkloadNode: nf.workloadNode}
	if err := nf.validate(args); err != nil {
		return nil, filter, "", err
	}
	c, err := o.client()
	if err != nil {
		return nil, filter, "", err
	}
	ctx, cancel := o.context(cmd)
	defer cancel()
	if c.NamespaceExplicit {
		filter.Namespace = c.Namespace
	}
	node := nf.node
	if len(args) == 1 {
		pod, err := c.Kube.CoreV1().Pods(c.Namespace).Get(ctx, args[0], metav1.GetOptions{})
		if err != nil {
			return nil, filter, "", fmt.Errorf("pod %s/%s: %w", c.Namespace, args[0], err)
		}
		if node = pod.Spec.NodeName; node == "" {
			return nil, filter, "", fmt.Errorf("pod %s/%s is not scheduled on a node yet", c.Namespace, args[0])
		}
	}
	agent, err := findNodeAgent(ctx, c, o.WeftNamespace, node)
	if err != nil {
		return nil, filter, "", err
	}
	body, err := c.PodGet(ctx, agent.Namespace, agent.Name, nf.adminPort, path)
	return body, filter, agent.Name, err
}

func findNodeAgent(ctx context.Context, c *kube.Client, ns, node string) (*corev1.Pod, error) {
	pods, err := c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: NodeAgentSelector, FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, fmt.Errorf("list node agent pods in %s: %w", ns, err)
	}
	var best *corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
			continue
		}
		best = p
	}
	if best == nil {
		return nil, fmt.Errorf("no running weft-node-agent pod (%s) on node %s in namespace %s: is the node-agent chart installed there (--weft-namespace)?", NodeAgentSelector, node, ns)
	}
	return best, nil
}

// dumpView is a subcommand of node-config that shows one part of the
// agent's /config_dump.
type dumpView struct {
	use, short string
	render     func(d *nodeconfig.Dump, f nodeconfig.Filter) (any, output.Tabular)
}

func dumpViews(o *options) []dumpView {
	return []dumpView{
		{"workloads", "Workloads the agent knows (identity, tunnel protocol, waypoint)", func(d *nodeconfig.Dump, f nodeconfig.Filter) (any, output.Tabular) {
			v := nodeconfig.WorkloadRows(d, f)
			return v, v
		}},
		{"services", "Services the agent knows (VIPs, ports, waypoint, endpoints)", func(d *nodeconfig.Dump, f nodeconfig.Filter) (any, output.Tabular) {
			v := nodeconfig.ServiceRows(d, f)
			return v, v
		}},
		{"policies", "L4 authorization policies the agent enforces", func(d *nodeconfig.Dump, f nodeconfig.Filter) (any, output.Tabular) {
			v := nodeconfig.PolicyRows(d, f)
			return v, v
		}},
		{"certificates", "Workload certificates the agent holds (identity, serial, validity; never keys)", func(d *nodeconfig.Dump, f nodeconfig.Filter) (any, output.Tabular) {
			v := nodeconfig.CertificateRows(d, f, time.Now())
			return v, v
		}},
	}
}

// dumpViewCommand fetches the agent's /config_dump and prints the part v
// shows, warning when the agent has no configuration yet (the listing
// would be empty or stale for a reason the user cannot see).
func dumpViewCommand(o *options, nf *nodeConfigFlags, v dumpView) *cobra.Command {
	return &cobra.Command{
		Use:   v.use + " [POD]",
		Short: v.short,
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := o.format()
			if err != nil {
				return err
			}
			body, filter, agent, err := o.agentGet(cmd, nf, args, "/config_dump")
			if err != nil {
				return err
			}
			d, err := nodeconfig.ParseDump(body)
			if err != nil {
				return err
			}
			if !d.Synced {
				fmt.Fprintf(o.errOut, "warning: node agent %s has not received its configuration from the control plane yet\n", agent)
			}
			val, t := v.render(d, filter)
			return output.Print(o.out, f, val, t)
		},
	}
}

func connectionsCommand(o *options, nf *nodeConfigFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "connections [POD]",
		Short: "Connections the agent is proxying now",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := o.format()
			if err != nil {
				return err
			}
			body, filter, _, err := o.agentGet(cmd, nf, args, "/connections")
			if err != nil {
				return err
			}
			conns, err := nodeconfig.ParseConnections(body, filter, time.Now())
			if err != nil {
				return err
			}
			return output.Print(o.out, f, conns, conns)
		},
	}
}

func rawDumpCommand(o *options, nf *nodeConfigFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "dump [POD]",
		Short: "The agent's raw /config_dump (JSON)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, _, _, err := o.agentGet(cmd, nf, args, "/config_dump")
			if err != nil {
				return err
			}
			_, err = o.out.Write(indented(body))
			return err
		},
	}
}

// indented is a JSON body indented for reading: the agent writes its dump
// compact, streamed, and leaves the indenting to the reader's machine.
// A body that is not JSON is returned as it came.
func indented(body []byte) []byte {
	var b bytes.Buffer
	if err := json.Indent(&b, body, "", "  "); err != nil {
		return body
	}
	return b.Bytes()
}
