package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestInstallUpgradeUninstall is issue #6's lifecycle proof with the built
// weftctl (Helm SDK, embedded charts): install, an upgrade that restarts
// every control plane and node agent pod while an enrolled client opens a
// new connection every 50 ms, and an uninstall after which no node holds
// any Weft state while Bookinfo keeps serving.
func TestInstallUpgradeUninstall(t *testing.T) {
	e := startCluster(t, "e2einst", 2, 9)
	weftctl := func(t *testing.T, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(binDir(), "weftctl"), args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+e.c.Kubeconfig)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		err := cmd.Run()
		t.Logf("weftctl %s (%s):\n%s%s", strings.Join(args, " "), time.Since(start).Round(100*time.Millisecond), stderr.String(), stdout.String())
		if err != nil {
			t.Fatalf("weftctl %s: %v", strings.Join(args, " "), err)
		}
		return stdout.String()
	}

	// a. Install, Bookinfo enrolled, traffic through the mesh.
	st := releaseStatuses(t, weftctl(t, "install", "-o", "json"))
	wantReleases(t, st, 1)
	// The helm CLI sees the releases weftctl made (same names and namespaces).
	helmList := e.mustRun(t, "helm", "list", "-A")
	for _, r := range []string{"weft-base", "weft-control", "weft-node-agent"} {
		if !strings.Contains(helmList, r) {
			t.Fatalf("helm list -A lacks %s:\n%s", r, helmList)
		}
	}
	if n := strings.TrimSpace(e.mustKubectl(t, "-n", controlNS, "get", "ds", "weft-node-agent", "-o", "jsonpath={.status.numberReady}")); n != "2" {
		t.Fatalf("node agents ready after install: %s, want 2", n)
	}

	root := repoRoot()
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/bookinfo/platform/kube/bookinfo.yaml"))
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/curl/curl.yaml"))
	e.mustKubectl(t, "wait", "--for=condition=Available", "deployment", "--all", "--timeout=180s")
	// The client on the other node than productpage: its requests cross the
	// fabric, so both nodes' agents carry them.
	ppNode := e.podNode(t, "default", "app=productpage")
	other := map[string]string{"node-0": "node-1", "node-1": "node-0"}[ppNode]
	e.mustKubectl(t, "patch", "deployment", "curl", "-p", fmt.Sprintf(`{"spec":{"template":{"spec":{"nodeName":%q}}}}`, other))
	e.mustKubectl(t, "rollout", "status", "deployment/curl", "--timeout=120s")
	e.mustKubectl(t, "label", "namespace", "default", "istio.io/dataplane-mode=ambient")
	e.waitEnrolled(t, 7) // 6 Bookinfo pods and curl
	if page := e.productpage(t, ""); !strings.Contains(page, "Book Reviews") {
		t.Fatalf("productpage through the mesh: %s", pageSummary(page))
	}
	eventually(t, "curl -> productpage counted as mutual TLS by productpage's agent", 30*time.Second, func() error {
		return e.meshConnections(ppNode)
	})
	nodeState := func(t *testing.T, want bool) {
		t.Helper()
		for i := range 2 {
			for _, err := range weftNodeState(e, i, want) {
				t.Error(err)
			}
		}
	}
	nodeState(t, true)

	// b. Upgrade that restarts every Weft pod, under load.
	oldPods := e.podUIDs(t, controlNS, "app in (weft-control,weft-node-agent)")
	stopLoad := e.startLoad(t, "http://productpage:9080/productpage")
	time.Sleep(2 * time.Second)
	rollStart := time.Now()
	st = releaseStatuses(t, weftctl(t, "install", "-o", "json",
		"--set", "control.podAnnotations.weft-e2e-rollout=r2,nodeAgent.podAnnotations.weft-e2e-rollout=r2"))
	rollout := time.Since(rollStart)
	time.Sleep(3 * time.Second)
	res := stopLoad(t, 50)
	wantReleases(t, st, 2)
	newPods := e.podUIDs(t, controlNS, "app in (weft-control,weft-node-agent)")
	for uid, name := range oldPods {
		if _, ok := newPods[uid]; ok {
			t.Errorf("pod %s was not restarted by the upgrade", name)
		}
	}
	if len(newPods) != 4 { // 2 control replicas, 2 agents
		t.Errorf("after the upgrade: %d Weft pods %v, want 4", len(newPods), newPods)
	}
	t.Logf("upgrade (control plane and node agents restarted) took %s; during it and 5 s around it: %s",
		rollout.Round(100*time.Millisecond), res)
	if res.failed+res.degraded > 0 || res.ok < 50 {
		t.Errorf("requests during the upgrade: %s, want no failure", res)
	}
	eventually(t, "new agents carry mesh traffic", 30*time.Second, func() error { return e.meshConnections(ppNode) })

	// c. Uninstall: no Weft state left on any node, Bookinfo serving.
	stopLoad = e.startLoad(t, "http://productpage:9080/productpage")
	time.Sleep(2 * time.Second)
	t.Log("load +2s: weftctl uninstall")
	out := weftctl(t, "uninstall")
	res = stopLoad(t, 20)
	t.Logf("requests while weftctl uninstall ran: %s", res)
	// The agents first release every pod (new connections go direct), so
	// none waits for an agent that is going away; a node not yet released
	// may still tunnel to a released pod, whose node keeps accepting
	// tunnels while it drains. A released pod's direct connections may
	// reuse the 4-tuples of the agents' recent connections: nothing the
	// agents leave on the node may stand in their way (docs/node-agent.md).
	noFailure := func(what string, res loadResult) {
		t.Helper()
		if res.failed+res.degraded > 0 || res.ok < 20 {
			t.Errorf("requests %s: %s, want no failure", what, res)
		}
	}
	noFailure("during the uninstall", res)
	for _, want := range []string{"cleaned", "weft-base", "kept"} {
		if !strings.Contains(out, want) {
			t.Errorf("uninstall summary lacks %q", want)
		}
	}
	nodeState(t, false)
	if pods := e.mustKubectl(t, "get", "pods", "-A", "-l", "app.kubernetes.io/name=weft-node-cleanup", "-o", "name"); strings.TrimSpace(pods) != "" {
		t.Errorf("cleanup pods left: %s", pods)
	}
	if objs := e.mustKubectl(t, "-n", controlNS, "get", "deploy,ds,svc,sa,pdb,cm,secret", "-o", "name"); strings.Contains(objs, "weft-control") || strings.Contains(objs, "weft-node-agent") || strings.Contains(objs, "sh.helm.release") {
		t.Errorf("objects left in %s:\n%s", controlNS, objs)
	}
	if cms := e.mustKubectl(t, "get", "cm", "-A", "--field-selector=metadata.name=weft-ca-root-cert", "-o", "name"); strings.TrimSpace(cms) != "" {
		t.Errorf("trust bundle ConfigMaps left by weft-control: %s", strings.Join(strings.Fields(cms), " "))
	}
	for _, crd := range []string{"virtualservices.networking.istio.io", "authorizationpolicies.security.istio.io", "httproutes.gateway.networking.k8s.io"} {
		e.mustKubectl(t, "get", "crd", crd)
	}
	stopLoad = e.startLoad(t, "http://productpage:9080/productpage")
	res = stopLoad(t, 20)
	t.Logf("Bookinfo after uninstall (plaintext): %s", res)
	noFailure("after the uninstall", res)
}

// installStatus is a row of weftctl install -o json.
type installStatus struct {
	Release, Namespace, Status string
	Revision                   int
}

func releaseStatuses(t *testing.T, out string) []installStatus {
	t.Helper()
	var st []installStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("weftctl install -o json: %v\n%s", err, out)
	}
	return st
}

func wantReleases(t *testing.T, st []installStatus, revision int) {
	t.Helper()
	want := []installStatus{
		{"weft-base", "default", "deployed", revision},
		{"weft-control", controlNS, "deployed", revision},
		{"weft-node-agent", controlNS, "deployed", revision},
	}
	if fmt.Sprint(st) != fmt.Sprint(want) {
		t.Fatalf("releases: %+v, want %+v", st, want)
	}
}

// meshConnections checks that node's agent counted connections from curl
// to productpage as mutual TLS, identified by curl's SPIFFE ID, to the
// productpage Service (the destination sees only the pod address).
func (e *env) meshConnections(node string) error {
	m, err := e.agentMetrics(node)
	if err != nil {
		return err
	}
	want := regexp.MustCompile(`istio_tcp_connections_opened_total\{[^}]*connection_security_policy="mutual_tls"[^}]*destination_service="productpage.default.svc.cluster.local"[^}]*destination_workload="productpage-v1"[^}]*reporter="destination"[^}]*source_principal="spiffe://cluster.local/ns/default/sa/curl"[^}]*\} [1-9]`)
	if !want.MatchString(m) {
		return fmt.Errorf("%s counts no mTLS connection curl -> productpage:\n%s", node, grepLines(m, "istio_tcp_connections_opened_total"))
	}
	return nil
}

// podUIDs maps the UIDs of ns's pods matching selector to their names.
func (e *env) podUIDs(t *testing.T, ns, selector string) map[string]string {
	t.Helper()
	out := e.mustKubectl(t, "-n", ns, "get", "pods", "-l", selector, "-o", `jsonpath={range .items[*]}{.metadata.uid} {.metadata.name}{"\n"}{end}`)
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			m[f[0]] = f[1]
		}
	}
	return m
}

// weftNodeState lists how node i's Weft state differs from want (true: all
// present, false: all gone): weft-cni in the conflist and bin dir, the BPF
// pins, the policy routing rule and table, the nftables table.
func weftNodeState(e *env, i int, want bool) []error {
	root := filepath.Join(repoRoot(), "_output/e2e/e2einst/nodes", fmt.Sprintf("node-%d", i), "root")
	netnsExec := func(args ...string) (string, error) {
		out, err := exec.Command("ip", append([]string{"netns", "exec", e.c.NodeNetns(i)}, args...)...).CombinedOutput()
		return string(out), err
	}
	var errs []error
	check := func(what string, present bool, detail string) {
		if present != want {
			errs = append(errs, fmt.Errorf("node-%d: %s present=%v, want %v %s", i, what, present, want, detail))
		}
	}
	conf, err := os.ReadFile(filepath.Join(root, "etc/cni/net.d/10-weft.conflist"))
	if err != nil {
		return []error{err}
	}
	check("weft-cni entry in the CNI conflist", strings.Contains(string(conf), `"weft-cni"`), string(conf))
	_, err = os.Stat(filepath.Join(root, "opt/cni/bin/weft-cni"))
	check("weft-cni binary", err == nil, "")
	pins, _ := filepath.Glob(filepath.Join(root, "sys/fs/bpf/weft/*"))
	_, err = os.Stat(filepath.Join(root, "sys/fs/bpf/weft"))
	check("BPF pins under /sys/fs/bpf/weft", err == nil, fmt.Sprint(pins))
	rules, err := netnsExec("ip", "rule", "show")
	if err != nil {
		return append(errs, fmt.Errorf("ip rule: %v: %s", err, rules))
	}
	check("ip rule fwmark 0x1000/table 1500", strings.Contains(rules, "lookup 1500"), rules)
	routes, _ := netnsExec("ip", "route", "show", "table", "1500")
	check("routes in table 1500", strings.TrimSpace(routes) != "", routes)
	_, err = netnsExec("nft", "list", "table", "inet", "weft-capture")
	check("nftables table inet weft-capture", err == nil, "")
	return errs
}
