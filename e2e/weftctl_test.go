package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestWeftctl drives the built weftctl binary against a real cluster the
// way the user's story does: a namespace waypoint applied and enrolled,
// listed, the node agents' view of the Bookinfo workloads and their
// certificates (read through pods/portforward), every proxy in sync with
// the control plane, and the waypoint deleted with its label.
func TestWeftctl(t *testing.T) {
	e := startCluster(t, "e2ectl2", 2, 7)
	root := repoRoot()
	bin := filepath.Join(binDir(), "weftctl")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s missing (make build): %v", bin, err)
	}
	e.installControlPlane(t)
	e.installNodeAgent(t)
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/bookinfo/platform/kube/bookinfo.yaml"))
	e.mustKubectl(t, "wait", "--for=condition=Available", "deployment", "--all", "--timeout=180s")
	e.mustKubectl(t, "label", "namespace", "default", "istio.io/dataplane-mode=ambient")

	weftctl := func(args ...string) (string, string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+e.c.Kubeconfig)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if err != nil {
			err = fmt.Errorf("weftctl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
		}
		return stdout.String(), stderr.String(), err
	}
	mustWeftctl := func(t *testing.T, args ...string) (string, string) {
		t.Helper()
		out, errOut, err := weftctl(args...)
		if err != nil {
			t.Fatal(err)
		}
		return out, errOut
	}
	jsonOf := func(t *testing.T, out string, v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("decode %q: %v", out, err)
		}
	}

	t.Run("version", func(t *testing.T) {
		out, _ := mustWeftctl(t, "version", "-o", "json")
		var v struct {
			Client struct{ Version string }
			Server *struct{ Images []string }
		}
		jsonOf(t, out, &v)
		if v.Client.Version == "" || v.Server == nil || len(v.Server.Images) == 0 || !strings.Contains(v.Server.Images[0], "control") {
			t.Fatalf("version: %s", out)
		}
		t.Logf("version: %s", strings.Join(strings.Fields(out), " "))
	})

	t.Run("waypoint apply --enroll-namespace --wait", func(t *testing.T) {
		start := time.Now()
		_, errOut := mustWeftctl(t, "waypoint", "apply", "-n", "default", "--enroll-namespace", "--wait")
		t.Logf("applied and programmed in %s:\n%s", time.Since(start).Round(100*time.Millisecond), errOut)
		if got := e.mustKubectl(t, "get", "gateway", "waypoint", "-o", `jsonpath={.status.conditions[?(@.type=="Programmed")].status} {.spec.gatewayClassName} {.metadata.labels.istio\.io/waypoint-for}`); got != "True weft-waypoint service" {
			t.Fatalf("gateway: %q", got)
		}
		if got := e.mustKubectl(t, "get", "namespace", "default", "-o", `jsonpath={.metadata.labels.istio\.io/use-waypoint}`); got != "waypoint" {
			t.Fatalf("namespace label istio.io/use-waypoint = %q", got)
		}
		// Applying again is idempotent.
		mustWeftctl(t, "waypoint", "apply", "-n", "default", "--enroll-namespace")
	})

	t.Run("analyze: clean Bookinfo passes, a missing subset fails with exit 1", func(t *testing.T) {
		root := repoRoot()
		e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/bookinfo/networking/destination-rule-all.yaml"))
		e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/bookinfo/networking/virtual-service-all-v1.yaml"))
		if out, _, err := weftctl("analyze", "-n", "default"); err != nil {
			t.Fatalf("clean Bookinfo: %v\n%s", err, out)
		}
		e.applyYAML(t, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v9}
`)
		out, _, err := weftctl("analyze", "-n", "default", "-o", "json")
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(out, "SubsetNotFound") {
			t.Fatalf("missing subset: exit %v, output %s", err, out)
		}
		e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/bookinfo/networking/virtual-service-all-v1.yaml"))
	})

	t.Run("waypoint list", func(t *testing.T) {
		out, _ := mustWeftctl(t, "waypoint", "list", "-n", "default", "-o", "json")
		var rows []struct {
			Namespace, Name, For, Programmed, Address string
			UsedBy                                    []struct{ Kind, Name string }
		}
		jsonOf(t, out, &rows)
		if len(rows) != 1 || rows[0].Name != "waypoint" || rows[0].For != "service" || rows[0].Programmed != "True" || rows[0].Address == "" ||
			len(rows[0].UsedBy) != 1 || rows[0].UsedBy[0].Kind != "Namespace" || rows[0].UsedBy[0].Name != "default" {
			t.Fatalf("waypoint list: %s", out)
		}
		table, _ := mustWeftctl(t, "waypoint", "list", "-A")
		t.Logf("waypoint list -A:\n%s", table)
		status, _ := mustWeftctl(t, "waypoint", "status", "waypoint", "-n", "default")
		t.Logf("waypoint status:\n%s", status)
	})

	// The Bookinfo pods of node-0 with their service accounts.
	type pod struct{ name, sa string }
	var onNode0 []pod
	out := e.mustKubectl(t, "get", "pods", "-n", "default", "-l", "!gateway.networking.k8s.io/gateway-name", "-o",
		`jsonpath={range .items[*]}{.spec.nodeName} {.metadata.name} {.spec.serviceAccountName}{"\n"}{end}`)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "node-0" {
			onNode0 = append(onNode0, pod{f[1], f[2]})
		}
	}
	if len(onNode0) == 0 {
		t.Fatalf("no Bookinfo pod on node-0:\n%s", out)
	}

	t.Run("node-config workloads --node node-0", func(t *testing.T) {
		var table string
		eventually(t, "node-0's agent lists its Bookinfo pods with SPIFFE identities over HBONE", 60*time.Second, func() error {
			out, _, err := weftctl("node-config", "workloads", "--node", "node-0", "-o", "json")
			if err != nil {
				return err
			}
			var rows []struct{ Name, Namespace, Node, Identity, Protocol string }
			if err := json.Unmarshal([]byte(out), &rows); err != nil {
				return err
			}
			for _, p := range onNode0 {
				i := slices.IndexFunc(rows, func(r struct{ Name, Namespace, Node, Identity, Protocol string }) bool {
					return r.Name == p.name && r.Namespace == "default"
				})
				if i < 0 {
					return fmt.Errorf("pod %s missing from %s", p.name, out)
				}
				r := rows[i]
				if want := "/ns/default/sa/" + p.sa; !strings.HasPrefix(r.Identity, "spiffe://") || !strings.HasSuffix(r.Identity, want) || r.Protocol != "HBONE" || r.Node != "node-0" {
					return fmt.Errorf("pod %s: %+v, want identity spiffe://.../ns/default/sa/%s over HBONE on node-0", p.name, r, p.sa)
				}
			}
			table, _, err = weftctl("node-config", "workloads", "--node", "node-0", "-n", "default")
			return err
		})
		t.Logf("node-config workloads --node node-0 -n default:\n%s", table)
		// A pod name finds its node's agent.
		out, _ := mustWeftctl(t, "node-config", "services", "-n", "default", onNode0[0].name)
		if !strings.Contains(out, "productpage.default.svc") {
			t.Fatalf("node-config services of %s's node:\n%s", onNode0[0].name, out)
		}
		t.Logf("node-config services %s:\n%s", onNode0[0].name, out)
	})

	t.Run("node-config certificates without key material", func(t *testing.T) {
		eventually(t, "certificates of node-0's service accounts", 60*time.Second, func() error {
			out, _, err := weftctl("node-config", "certificates", "--node", "node-0", "-o", "json")
			if err != nil {
				return err
			}
			var rows []struct{ Identity, State, Serial, ExpiresIn string }
			if err := json.Unmarshal([]byte(out), &rows); err != nil {
				return err
			}
			for _, p := range onNode0 {
				if !slices.ContainsFunc(rows, func(r struct{ Identity, State, Serial, ExpiresIn string }) bool {
					return strings.HasSuffix(r.Identity, "/ns/default/sa/"+p.sa) && r.State == "VALID" && r.Serial != "" && r.ExpiresIn != ""
				}) {
					return fmt.Errorf("no valid certificate for service account %s: %s", p.sa, out)
				}
			}
			return nil
		})
		for _, format := range []string{"table", "json", "yaml"} {
			out, _ := mustWeftctl(t, "node-config", "certificates", "--node", "node-0", "-o", format)
			for _, bad := range []string{"-----BEGIN", "PRIVATE KEY", "CERTIFICATE-----"} {
				if strings.Contains(out, bad) {
					t.Fatalf("-o %s shows %q:\n%s", format, bad, out)
				}
			}
			if format == "table" {
				t.Logf("node-config certificates --node node-0:\n%s", out)
			}
		}
	})

	t.Run("proxy-status", func(t *testing.T) {
		var table string
		eventually(t, "both node agents and the waypoint SYNCED", 60*time.Second, func() error {
			out, _, err := weftctl("proxy-status", "-o", "json")
			if err != nil {
				return err
			}
			var r struct {
				Proxies []struct{ Kind, Namespace, Pod, Node, Status, ControlPlane string }
			}
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				return err
			}
			synced := map[string]bool{}
			for _, p := range r.Proxies {
				if p.Status == "SYNCED" {
					synced[p.Kind+" "+p.Node] = true
				}
				if p.Kind == "waypoint" && strings.HasPrefix(p.Pod, "waypoint-") && p.Status == "SYNCED" {
					synced["waypoint"] = true
				}
				if p.Status != "SYNCED" {
					return fmt.Errorf("%s %s/%s: %s", p.Kind, p.Namespace, p.Pod, p.Status)
				}
			}
			for _, want := range []string{"node-agent node-0", "node-agent node-1", "waypoint"} {
				if !synced[want] {
					return fmt.Errorf("%s not SYNCED: %s", want, out)
				}
			}
			table, _, err = weftctl("proxy-status")
			return err
		})
		t.Logf("proxy-status:\n%s", table)
	})

	t.Run("waypoint delete", func(t *testing.T) {
		_, errOut := mustWeftctl(t, "waypoint", "delete", "waypoint", "-n", "default")
		t.Logf("waypoint delete:\n%s", errOut)
		if !strings.Contains(errOut, "removed label istio.io/use-waypoint=waypoint from namespace default") {
			t.Fatalf("no note about the removed namespace label: %s", errOut)
		}
		if out, err := e.kubectl("get", "gateway", "waypoint", "-n", "default"); err == nil || !strings.Contains(err.Error(), "NotFound") {
			t.Fatalf("gateway still there: %s %v", out, err)
		}
		if got := e.mustKubectl(t, "get", "namespace", "default", "-o", `jsonpath={.metadata.labels}`); strings.Contains(got, "use-waypoint") {
			t.Fatalf("namespace labels after delete: %s", got)
		}
		out, _ := mustWeftctl(t, "waypoint", "list", "-o", "json")
		if strings.TrimSpace(out) != "[]" {
			t.Fatalf("waypoint list after delete: %s", out)
		}
		if _, _, err := weftctl("waypoint", "delete", "waypoint"); err == nil {
			t.Fatal("deleting a missing waypoint succeeded")
		}
	})

	t.Run("waypoint apply --service-account", func(t *testing.T) {
		_, errOut := mustWeftctl(t, "waypoint", "apply", "-n", "default", "--service-account", "bookinfo-reviews", "--wait")
		t.Logf("per-service-account waypoint:\n%s", errOut)
		if got := e.mustKubectl(t, "get", "gateway", "bookinfo-reviews-waypoint", "-o", `jsonpath={.metadata.labels.istio\.io/waypoint-for}`); got != "all" {
			t.Fatalf("waypoint-for = %q", got)
		}
		if got := e.mustKubectl(t, "get", "service", "-l", "istio.io/use-waypoint=bookinfo-reviews-waypoint", "-o", "jsonpath={.items[*].metadata.name}"); got != "reviews" {
			t.Fatalf("services labelled: %q, want only reviews", got)
		}
		pods := strings.Fields(e.mustKubectl(t, "get", "pod", "-l", "istio.io/use-waypoint=bookinfo-reviews-waypoint", "-o", "jsonpath={.items[*].spec.serviceAccountName}"))
		if len(pods) != 3 || slices.ContainsFunc(pods, func(sa string) bool { return sa != "bookinfo-reviews" }) {
			t.Fatalf("pods labelled run as %v, want the 3 reviews pods", pods)
		}
		// The node agents route exactly the reviews workloads and Service
		// through it.
		eventually(t, "only reviews uses the waypoint", 60*time.Second, func() error {
			out, _, err := weftctl("node-config", "workloads", "--node", "node-1", "-n", "default", "-o", "json")
			if err != nil {
				return err
			}
			var rows []struct{ Name, ServiceAccount, Waypoint string }
			if err := json.Unmarshal([]byte(out), &rows); err != nil {
				return err
			}
			for _, r := range rows {
				want := ""
				if r.ServiceAccount == "bookinfo-reviews" {
					want = "bookinfo-reviews-waypoint.default.svc.cluster.local"
				}
				if r.Waypoint != want {
					return fmt.Errorf("workload %s (sa %s) waypoint %q, want %q", r.Name, r.ServiceAccount, r.Waypoint, want)
				}
			}
			out, _, err = weftctl("node-config", "services", "--node", "node-1", "-n", "default", "-o", "json")
			if err != nil {
				return err
			}
			var svcs []struct{ Name, Waypoint string }
			if err := json.Unmarshal([]byte(out), &svcs); err != nil {
				return err
			}
			for _, s := range svcs {
				if (s.Name == "reviews") != (s.Waypoint != "") {
					return fmt.Errorf("service %s waypoint %q", s.Name, s.Waypoint)
				}
			}
			return nil
		})
		_, errOut = mustWeftctl(t, "waypoint", "delete", "bookinfo-reviews-waypoint", "-n", "default")
		t.Logf("delete:\n%s", errOut)
		if got := e.mustKubectl(t, "get", "service,pod", "-l", "istio.io/use-waypoint", "-o", "name"); strings.TrimSpace(got) != "" {
			t.Fatalf("labels left after delete: %s", got)
		}
	})
}
