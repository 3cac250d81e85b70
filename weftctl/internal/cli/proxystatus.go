package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/pkg/mesh"
	"github.com/weft-mesh/weft/weftctl/internal/kube"
	"github.com/weft-mesh/weft/weftctl/internal/output"
	"github.com/weft-mesh/weft/weftctl/internal/proxystatus"
	"github.com/weft-mesh/weft/weftctl/internal/waypoint"
)

// Selectors of weft-control's pods (charts/control) and of waypoint pods
// (control/waypoint/deploy).
const (
	ControlSelector  = "app=weft-control"
	WaypointSelector = "app.kubernetes.io/name=weft-waypoint," + waypoint.LabelGatewayName
)

func newProxyStatus(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "proxy-status",
		Short: "Whether every node agent and waypoint is connected to weft-control and has the latest configuration",
		Long: `Asks every weft-control replica which xDS clients it serves and which
configuration version each acknowledged (/debug/syncz on port ` + strconv.Itoa(mesh.MonitoringPort) + `, read
through the API server's pods/portforward), and joins that with the pods
that should be connected: one node agent per node (the DaemonSet's pods)
and every waypoint pod.

STATUS is SYNCED (acknowledged the latest version its replica holds), STALE
(connected, not yet acknowledged the latest), NACK (rejected it), NOT
CONNECTED (no replica has a stream from the pod) or UNKNOWN (a replica did
not answer).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := o.format()
			if err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			ctx, cancel := o.context(cmd)
			defer cancel()
			running, err := runningControls(ctx, c, o.WeftNamespace)
			if err != nil {
				return err
			}
			// The replicas answer while the expected proxies are listed.
			replicas := fetchSyncz(ctx, c, running)
			expected, err := expectedProxies(ctx, c, o.WeftNamespace)
			if err != nil {
				return err
			}
			r := proxystatus.Build(expected, replicas(), time.Now())
			for _, e := range r.Errors {
				fmt.Fprintf(o.errOut, "warning: %s\n", e)
			}
			return output.Print(o.out, f, r, r)
		},
	}
}

// GatewaySelector selects the pods of charts/gateway (ingress and egress).
const GatewaySelector = "app.kubernetes.io/part-of=weft,app.kubernetes.io/component in (ingress-gateway,egress-gateway,gateway)"

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// runningControls lists the weft-control pods of ns that are running and
// not being deleted; none is an error.
func runningControls(ctx context.Context, c *kube.Client, ns string) ([]corev1.Pod, error) {
	controls, err := c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: ControlSelector})
	if err != nil {
		return nil, fmt.Errorf("list weft-control pods in %s: %w", ns, err)
	}
	var running []corev1.Pod
	for _, p := range controls.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			running = append(running, p)
		}
	}
	if len(running) == 0 {
		return nil, fmt.Errorf("no running weft-control pod (%s) in namespace %s (--weft-namespace)", ControlSelector, ns)
	}
	return running, nil
}

// fetchSyncz asks every control pod for its /debug/syncz, all at once, and
// returns a function that waits for the answers.
func fetchSyncz(ctx context.Context, c *kube.Client, pods []corev1.Pod) (wait func() []proxystatus.Replica) {
	replicas := make([]proxystatus.Replica, len(pods))
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Go(func() {
			replicas[i].Pod = p.Name
			body, err := c.PodGet(ctx, p.Namespace, p.Name, mesh.MonitoringPort, "/debug/syncz")
			if err != nil {
				replicas[i].Err = err
				return
			}
			var s proxystatus.Syncz
			if err := json.Unmarshal(body, &s); err != nil {
				replicas[i].Err = fmt.Errorf("decode /debug/syncz: %w", err)
				return
			}
			replicas[i].Syncz = &s
		})
	}
	return func() []proxystatus.Replica {
		wg.Wait()
		return replicas
	}
}

// expectedProxies are the pods that should hold an xDS stream: the node
// agents of ns (one per scheduled node), every waypoint and every gateway
// pod, leaving out pods being deleted.
func expectedProxies(ctx context.Context, c *kube.Client, ns string) ([]proxystatus.Expected, error) {
	var expected []proxystatus.Expected
	agents, err := c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: NodeAgentSelector})
	if err != nil {
		return nil, fmt.Errorf("list node agent pods: %w", err)
	}
	for _, p := range agents.Items {
		if p.DeletionTimestamp == nil && p.Spec.NodeName != "" {
			expected = append(expected, proxystatus.Expected{Kind: proxystatus.NodeAgent, Namespace: p.Namespace, Pod: p.Name,
				Node: p.Spec.NodeName, Ready: podReady(&p)})
		}
	}
	wps, err := c.Kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: WaypointSelector})
	if err != nil {
		return nil, fmt.Errorf("list waypoint pods: %w", err)
	}
	for _, p := range wps.Items {
		if p.DeletionTimestamp == nil {
			expected = append(expected, proxystatus.Expected{Kind: proxystatus.Waypoint, Namespace: p.Namespace, Pod: p.Name,
				Node: p.Spec.NodeName, Gateway: p.Labels[waypoint.LabelGatewayName], Ready: podReady(&p)})
		}
	}
	gws, err := c.Kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: GatewaySelector})
	if err != nil {
		return nil, fmt.Errorf("list gateway pods: %w", err)
	}
	for _, p := range gws.Items {
		if p.DeletionTimestamp == nil {
			expected = append(expected, proxystatus.Expected{Kind: proxystatus.Gateway, Namespace: p.Namespace, Pod: p.Name,
				Node: p.Spec.NodeName, ServiceAccount: cmp.Or(p.Spec.ServiceAccountName, "default"), Ready: podReady(&p)})
		}
	}
	return expected, nil
}
