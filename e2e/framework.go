// Package e2e holds Weft's end-to-end suites. They run against a real local
// cluster (package e2e/cluster) and drive it the way users do: kubectl with
// the cluster's kubeconfig.
//
// The *_test.go files hold the suites, one topic each; what more than one
// suite uses lives in the framework files: framework.go (starting a cluster,
// running kubectl and helm, waiting), framework_install.go (installing Weft),
// framework_cluster.go (reading cluster state and component metrics) and
// framework_traffic.go (requests from the curl pod, load). Suites run in
// parallel, each on its own cluster, so the framework keeps no package-level
// mutable state: everything hangs off the suite's env.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/weft-mesh/weft/e2e/cluster"
)

// repoRoot is the repository root (this file lives in <root>/e2e).
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// requireE2E skips the test with the reason when its prerequisites are
// missing, unless WEFT_E2E_REQUIRE=1 (set by `make test` and CI), where a
// missing prerequisite fails the test instead: CI must never pass by skipping.
func requireE2E(t *testing.T) {
	t.Helper()
	var missing []string
	if testing.Short() {
		missing = append(missing, "-short given")
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "needs root (network namespaces, mounts, cgroups)")
	}
	for _, tool := range []string{"ip", "nsenter", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+" not in PATH")
		}
	}
	for _, f := range []string{filepath.Join(assetsDir(), "kube-apiserver"), filepath.Join(binDir(), "weft-kubelet")} {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, f+" missing (make kube-assets build)")
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "e2e prerequisites missing: " + strings.Join(missing, "; ")
	if os.Getenv("WEFT_E2E_REQUIRE") == "1" && !testing.Short() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func assetsDir() string {
	if d := os.Getenv("WEFT_KUBE_ASSETS"); d != "" {
		return d
	}
	return filepath.Join(repoRoot(), "_output/kube-assets/bin")
}

func binDir() string {
	if d := os.Getenv("WEFT_BIN_DIR"); d != "" {
		return d
	}
	return filepath.Join(repoRoot(), "_output/bin")
}

// env is a running cluster plus helpers to drive it like a user.
type env struct {
	c *cluster.Cluster
}

// startCluster brings up a cluster named for the test and tears it down at
// the end, printing the component logs' tails when the test failed.
//
// Suites run in parallel (up to go test's -parallel, GOMAXPROCS by default):
// each cluster has its own address plan (index), network namespaces, state
// directory and processes, and nothing on the host is shared between them.
func startCluster(t *testing.T, name string, nodes, index int) *env {
	t.Helper()
	requireE2E(t)
	t.Parallel()
	state := filepath.Join(repoRoot(), "_output/e2e", name)
	cfg := cluster.Config{
		Name: name, Nodes: nodes, Index: index, StateDir: state,
		AssetsDir: assetsDir(), BinDir: binDir(),
		ImageMaps: []string{
			filepath.Join(repoRoot(), "samples/bookinfo/images.yaml"),
			filepath.Join(repoRoot(), "hack/local-images.yaml"),
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := os.MkdirAll(filepath.Join(state, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(state, "logs", "harness.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	log := slog.New(slog.NewTextHandler(logf, nil))
	start := time.Now()
	c, err := cluster.Start(ctx, cfg, log)
	if err != nil {
		dumpLogs(t, filepath.Join(state, "logs"))
		t.Fatalf("start cluster: %v", err)
	}
	t.Logf("cluster %s with %d nodes ready in %s", name, nodes, time.Since(start).Round(100*time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			e := &env{c: c}
			if out, err := e.kubectl("get", "pods", "-A", "-o", "wide", "--field-selector=status.phase!=Running", "--request-timeout=10s"); err == nil {
				t.Logf("pods not running at the failure:\n%s", out)
			}
			// A Gateway that never became Programmed says why in its
			// conditions; the column view alone does not.
			if out, err := e.kubectl("get", "gateways.gateway.networking.k8s.io", "-A", "--request-timeout=10s",
				"-o", `jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}: {range .status.conditions[*]}{.type}={.status}/{.reason} {end}{"\n"}{end}`); err == nil {
				t.Logf("gateways at the failure:\n%s", out)
			}
			dumpLogs(t, filepath.Join(state, "logs"))
			dumpWeftPodLogs(t, state)
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})
	return &env{c: c}
}

// kubectl runs the cluster's kubectl with the admin kubeconfig.
func (e *env) kubectl(args ...string) (string, error) {
	return e.run("kubectl", args...)
}

// run runs a kube-assets tool with the admin kubeconfig, for at most 3
// minutes.
func (e *env) run(tool string, args ...string) (string, error) {
	return e.runFor(3*time.Minute, tool, args...)
}

// runFor is run with another time limit.
func (e *env) runFor(limit time.Duration, tool string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(assetsDir(), tool), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.c.Kubeconfig)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func (e *env) mustKubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := e.kubectl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// eventually retries f until it returns nil or the timeout passes.
func eventually(t *testing.T, what string, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, timeout, err)
}

// dumpLogs prints a short digest of the component logs: CI shows only the
// tail of a failed test's output, and the failure message itself comes just
// before this digest, so it stays small. The full logs stay in dir.
func dumpLogs(t *testing.T, dir string) {
	entries, _ := os.ReadDir(dir)
	var b strings.Builder
	fmt.Fprintf(&b, "component logs in %s; digest:", dir)
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if lines := logDigest(e.Name(), string(data)); len(lines) > 0 {
			fmt.Fprintf(&b, "\n==> %s <==\n%s", e.Name(), strings.Join(lines, "\n"))
		}
	}
	t.Log(b.String())
}

// logDigest picks the lines of a component log worth printing: the last few
// of a kubelet (pod and container lifecycle), and only the last warnings and
// errors of the Kubernetes components, minus start-up noise that every
// healthy run has. Lines are cut to keep the digest readable.
func logDigest(name, data string) []string {
	lines := strings.Split(strings.TrimRight(data, "\n"), "\n")
	keep, n := lines, 6
	if !strings.HasPrefix(name, "kubelet-") && name != "harness.log" {
		keep = nil
		for _, l := range lines {
			if isProblemLine(l) {
				keep = append(keep, l)
			}
		}
		n = 3
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	out := make([]string, len(keep))
	for i, l := range keep {
		if len(l) > 240 {
			l = l[:240] + "..."
		}
		out[i] = l
	}
	return out
}

// dumpWeftPodLogs prints the last warnings and errors of Weft's own pods
// (node agents, control plane, gateways), those deleted during the test
// too (weft-kubelet keeps their logs): a data-path failure's cause is
// usually there, and a rollout or an uninstall removes the pod.
func dumpWeftPodLogs(t *testing.T, state string) {
	if report := weftPodProblems(state); report != "" {
		t.Logf("Weft pods' last warnings and errors:%s", report)
	}
}

// weftPodProblems is dumpWeftPodLogs' report: per Weft pod log under the
// cluster's state (each node's kubelet keeps live pods' logs in pods/,
// deleted pods' in deleted-pods/), its last warnings and errors.
func weftPodProblems(state string) string {
	var logs []string
	for _, dir := range []string{"pods", "deleted-pods"} {
		found, _ := filepath.Glob(filepath.Join(state, "nodes", "*", "root", "var", "lib", "kubelet", dir, "*", "*", "*.log"))
		logs = append(logs, found...)
	}
	var b strings.Builder
	for _, l := range logs {
		rel, _ := filepath.Rel(state, l)
		if !strings.Contains(rel, "weft") {
			continue
		}
		data, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		if lines := logDigest(filepath.Base(l), string(data)); len(lines) > 0 {
			fmt.Fprintf(&b, "\n==> %s <==\n%s", rel, strings.Join(lines, "\n"))
		}
	}
	return b.String()
}

func isProblemLine(l string) bool {
	for _, noise := range []string{"extension-apiserver-authentication", "nodePortAddresses is unset", "requestheader-client-ca-file"} {
		if strings.Contains(l, noise) {
			return false
		}
	}
	lower := strings.ToLower(l) // slog's JSON says "WARN", zap's "warn"
	return strings.HasPrefix(l, "E") || strings.HasPrefix(l, "W") || strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") ||
		strings.Contains(lower, `"level":"warn"`) || strings.Contains(lower, `"level":"error"`)
}

// mustRun is run that fails the test on error.
func (e *env) mustRun(t *testing.T, tool string, args ...string) string {
	t.Helper()
	out, err := e.run(tool, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// grepLines is the lines of s that contain substr.
func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
