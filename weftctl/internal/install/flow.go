package install

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/weft-mesh/weft/control/ca"
	"github.com/weft-mesh/weft/pkg/mesh"
)

// Workload names the charts give weft-control's Deployment and the node
// agents' DaemonSet.
const (
	ControlDeployment = "weft-control"
	AgentDaemonSet    = "weft-node-agent"
	// agentContainer is the agent's container in the DaemonSet; uninstall
	// sets mesh.ReleasePodsEnv there (weft-node-agent --release-pods).
	agentContainer = "node-agent"
)

// Installer installs and removes Weft's releases in Namespace.
type Installer struct {
	Helm      Helm
	Kube      kubernetes.Interface
	Charts    fs.FS // holds base/, control/, node-agent/
	Namespace string
	Timeout   time.Duration // whole operation, including waits
	Progress  func(string)  // one line per step
}

// Install installs or upgrades the three releases in order with vals (per
// component). With wait it waits for weft-control before installing the
// agents (they need its CA), and for the agents at the end.
func (in Installer) Install(ctx context.Context, vals map[Component]map[string]any, wait bool) ([]Status, error) {
	ctx, cancel := context.WithTimeout(ctx, in.Timeout)
	defer cancel()
	releases := Releases(in.Namespace)
	charts := make([]*chart.Chart, len(releases))
	// Load and validate everything first: a bad value for the node agents
	// must not leave a half-upgraded mesh behind.
	for i, r := range releases {
		c, err := LoadChart(in.Charts, r.Chart)
		if err != nil {
			return nil, err
		}
		if err := Validate(c, vals[r.Component]); err != nil {
			return nil, fmt.Errorf("values for %s (release %s): %w", r.Component, r.Name, err)
		}
		charts[i] = c
	}
	var out []Status
	for i, r := range releases {
		in.Progress(fmt.Sprintf("%s: installing chart %s %s into %s", r.Name, charts[i].Name(), charts[i].Metadata.Version, r.Namespace))
		s, err := in.Helm.Apply(ctx, r, charts[i], vals[r.Component], in.Timeout)
		if err != nil {
			return out, err
		}
		in.Progress(fmt.Sprintf("%s: revision %d %s", r.Name, s.Revision, s.Status))
		out = append(out, s)
		if !wait {
			continue
		}
		switch r.Component {
		case Control:
			err = WaitDeployment(ctx, in.Kube, r.Namespace, ControlDeployment, in.Progress)
		case NodeAgent:
			err = WaitDaemonSet(ctx, in.Kube, r.Namespace, AgentDaemonSet, in.Progress)
		}
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// Validate checks vals against chart c's values.schema.json, as install
// would, before anything is installed.
func Validate(c *chart.Chart, vals map[string]any) error {
	merged, err := chartutil.CoalesceValues(c, vals)
	if err != nil {
		return err
	}
	if err := chartutil.ValidateAgainstSchema(c, merged); err != nil {
		return fmt.Errorf("rejected by the chart's values.schema.json:\n%w", err)
	}
	return nil
}

// UninstallResult is what weftctl uninstall did.
type UninstallResult struct {
	Releases []Status     `json:"releases"`
	Nodes    []NodeResult `json:"nodes"`
	// KeptCRDs is true when weft-base (the CRDs and so all mesh
	// configuration) was left installed.
	KeptCRDs bool `json:"keptCRDs"`
}

// Uninstall removes the node agents, cleans every node, then removes
// weft-control, and weft-base only with purge. A node that could not be
// cleaned fails it (ErrNodeCleanup) after the rest has run.
func (in Installer) Uninstall(ctx context.Context, purge bool) (UninstallResult, error) {
	ctx, cancel := context.WithTimeout(ctx, in.Timeout)
	defer cancel()
	res := UninstallResult{KeptCRDs: !purge}
	spec, selector, err := in.agentSpec(ctx)
	if err != nil {
		return res, err
	}
	if err := in.releasePods(ctx); err != nil {
		return res, err
	}
	var cleanErr error
	for _, r := range UninstallOrder(in.Namespace, purge) {
		in.Progress(fmt.Sprintf("%s: uninstalling from %s", r.Name, r.Namespace))
		s, err := in.Helm.Uninstall(r, in.Timeout)
		if err != nil {
			return res, err
		}
		in.Progress(fmt.Sprintf("%s: %s", r.Name, s.Status))
		res.Releases = append(res.Releases, s)
		if r.Component != NodeAgent {
			continue
		}
		if err := WaitPodsGone(ctx, in.Kube, r.Namespace, selector, in.Progress); err != nil {
			return res, err
		}
		in.Progress(fmt.Sprintf("cleaning every node with %s (weft-node-agent uninstall)", spec.Image))
		res.Nodes, cleanErr = CleanNodes(ctx, in.Kube, in.Namespace, spec, in.Progress)
		if cleanErr != nil && !errors.Is(cleanErr, ErrNodeCleanup) {
			return res, cleanErr
		}
	}
	// The control plane publishes the bundle while it runs: wait for it to
	// be gone first.
	if err := WaitPodsGone(ctx, in.Kube, in.Namespace, "app="+ControlDeployment, in.Progress); err != nil {
		return res, err
	}
	if err := in.removePublished(ctx, purge); err != nil {
		return res, err
	}
	if !purge {
		in.Progress("weft-base kept: its CRDs hold every VirtualService, AuthorizationPolicy, ... in the cluster (--purge removes it)")
	}
	return res, cleanErr
}

// removePublished deletes what weft-control wrote outside its charts: the
// trust bundle ConfigMap in every namespace (a reinstall publishes it
// again) and, with purge, the self-signed root CA it created (never a
// plug-in CA, Secret cacerts, which the user owns). Without purge the root
// stays so that a reinstall keeps the mesh's trust anchor.
func (in Installer) removePublished(ctx context.Context, purge bool) error {
	managed := metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=weft-control", FieldSelector: "metadata.name=" + ca.BundleConfigMapName}
	cms, err := in.Kube.CoreV1().ConfigMaps("").List(ctx, managed)
	if err != nil {
		return fmt.Errorf("list %s ConfigMaps: %w", ca.BundleConfigMapName, err)
	}
	n := 0
	for _, cm := range cms.Items {
		if cm.Name != ca.BundleConfigMapName {
			continue
		}
		n++
		if err := in.Kube.CoreV1().ConfigMaps(cm.Namespace).Delete(ctx, cm.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete ConfigMap %s/%s: %w", cm.Namespace, cm.Name, err)
		}
	}
	in.Progress(fmt.Sprintf("removed the trust bundle ConfigMap %s from %d namespaces", ca.BundleConfigMapName, n))
	if !purge {
		return nil
	}
	root, err := in.Kube.CoreV1().Secrets(in.Namespace).Get(ctx, ca.RootSecretName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("get Secret %s/%s: %w", in.Namespace, ca.RootSecretName, err)
	case root.Labels["app.kubernetes.io/managed-by"] != "weft-control":
		in.Progress(fmt.Sprintf("Secret %s/%s kept: weft-control did not create it", in.Namespace, ca.RootSecretName))
		return nil
	}
	if err := in.Kube.CoreV1().Secrets(in.Namespace).Delete(ctx, ca.RootSecretName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete Secret %s/%s: %w", in.Namespace, ca.RootSecretName, err)
	}
	in.Progress(fmt.Sprintf("removed the mesh's root CA (Secret %s/%s)", in.Namespace, ca.RootSecretName))
	return nil
}

// releasePods is the first step of an uninstall: the agents are rolled
// (surge and handover, like any update) to release mode, in which they
// unenrol every pod: enrolled pods' new connections go direct from then on,
// so none of them waits for an agent that is about to go (fail closed)
// while the nodes are cleaned. Nothing to do without agents.
func (in Installer) releasePods(ctx context.Context) error {
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":%q,"env":[{"name":%q,"value":"true"}]}]}}}}`, agentContainer, mesh.ReleasePodsEnv)
	_, err := in.Kube.AppsV1().DaemonSets(in.Namespace).Patch(ctx, AgentDaemonSet, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "weftctl"})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("switch the node agents to release mode: %w", err)
	}
	in.Progress("node agents: release mode (every pod unenrolled; new connections go direct)")
	return WaitDaemonSet(ctx, in.Kube, in.Namespace, AgentDaemonSet, in.Progress)
}

// agentSpec copies the running agents' image and host paths; with no
// agents left it falls back to the node-agent chart's defaults.
func (in Installer) agentSpec(ctx context.Context) (AgentSpec, string, error) {
	ds, err := in.Kube.AppsV1().DaemonSets(in.Namespace).Get(ctx, AgentDaemonSet, metav1.GetOptions{})
	if err == nil {
		spec, err := AgentSpecFromDaemonSet(ds)
		if err != nil {
			return spec, "", err
		}
		sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
		if err != nil {
			return spec, "", err
		}
		return spec, sel.String(), nil
	}
	if !apierrors.IsNotFound(err) {
		return AgentSpec{}, "", fmt.Errorf("get daemonset %s/%s: %w", in.Namespace, AgentDaemonSet, err)
	}
	c, err := LoadChart(in.Charts, "node-agent")
	if err != nil {
		return AgentSpec{}, "", err
	}
	img, _ := c.Values["image"].(map[string]any)
	hub, _ := img["hub"].(string)
	image := fmt.Sprintf("%s/node-agent:%s", hub, c.AppVersion())
	in.Progress(fmt.Sprintf("no daemonset %s/%s: cleaning nodes with the chart's defaults (%s)", in.Namespace, AgentDaemonSet, image))
	return DefaultAgentSpec(image), "app.kubernetes.io/name=" + AgentDaemonSet, nil
}
