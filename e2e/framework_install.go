package e2e

// Installing Weft into a test cluster the way a user does: helm and kubectl
// apply, then waiting until what was installed is ready.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// controlNS is the namespace the charts install Weft into.
const controlNS = "weft-system"

// installControlPlane installs charts/base and charts/control with helm,
// exactly as a user would, and waits for both replicas.
func (e *env) installControlPlane(t *testing.T) {
	t.Helper()
	e.installControlPlaneWith(t)
}

// installControlPlaneWith is installControlPlane with extra arguments to
// `helm install weft-control` (e.g. --set key=value).
func (e *env) installControlPlaneWith(t *testing.T, helmArgs ...string) {
	t.Helper()
	root := repoRoot()
	start := time.Now()
	e.mustRun(t, "helm", "install", "weft-base", filepath.Join(root, "charts/base"))
	e.mustRun(t, "helm", append([]string{"install", "weft-control", filepath.Join(root, "charts/control"), "-n", controlNS, "--create-namespace"}, helmArgs...)...)
	e.mustKubectl(t, "-n", controlNS, "rollout", "status", "deployment/weft-control", "--timeout=120s")
	with := ""
	if len(helmArgs) > 0 {
		with = " (" + strings.Join(helmArgs, " ") + ")"
	}
	t.Logf("control plane installed%s and ready in %s", with, time.Since(start).Round(100*time.Millisecond))
}

// installNodeAgent installs charts/node-agent with helm and waits for the
// DaemonSet.
func (e *env) installNodeAgent(t *testing.T) {
	t.Helper()
	start := time.Now()
	e.mustRun(t, "helm", "install", "weft-node-agent", filepath.Join(repoRoot(), "charts/node-agent"), "-n", controlNS)
	e.mustKubectl(t, "-n", controlNS, "rollout", "status", "daemonset/weft-node-agent", "--timeout=120s")
	t.Logf("node agents installed and ready in %s", time.Since(start).Round(100*time.Millisecond))
}

// waitEnrolled waits until the node agents of a two-node cluster report n
// enrolled pods in all (weft_node_agent_enrolled_pods).
func (e *env) waitEnrolled(t *testing.T, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d pods enrolled by their node agents", n), 60*time.Second, func() error {
		got := 0
		for _, node := range []string{"node-0", "node-1"} {
			v, err := e.agentMetric(node, "weft_node_agent_enrolled_pods")
			if err != nil {
				return err
			}
			got += int(v)
		}
		if got != n {
			return fmt.Errorf("%d pods enrolled, want %d", got, n)
		}
		return nil
	})
}

// applyYAML applies a manifest with kubectl, as a user would.
func (e *env) applyYAML(t *testing.T, doc string) {
	t.Helper()
	// Not under t.TempDir(): kubectl splits -f on commas, which subtest
	// names (and so their temp dirs) may contain.
	f, err := os.CreateTemp("", "weft-e2e-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(doc); err != nil {
		t.Fatal(err)
	}
	f.Close()
	e.mustKubectl(t, "apply", "-f", f.Name())
}
