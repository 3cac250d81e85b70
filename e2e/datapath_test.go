package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weft-mesh/weft/e2e/probe"
)

// matrixPath is a column of the data-path matrix: the probe client pod that
// runs the behaviours and the server it runs them against.
type matrixPath struct {
	name    string
	ns, pod string // the client pod
	host    string // the server: the probe Service of a namespace
	role    pathRole
	// proof: labels of the istio_tcp_connections_opened_total series that
	// the server node's agent counts this path's connections in as their
	// destination (mesh and refused paths).
	proof []string
	// istio lists the cells, by behaviour, where Istio ambient itself
	// differs from the baseline: they must show Istio's outcome instead.
	istio map[string]istioCell
}

type istioCell struct{ outcome, why string }

type pathRole int

const (
	baseline pathRole = iota // unenrolled: what every mesh path must match
	meshPath                 // must behave exactly like the baseline
	refused                  // must refuse every behaviour, the same way
)

// matrixPaths are the fast subset's paths (issue #12). The servers run on
// node-0; "across nodes" clients on node-1. Each path's traffic is to a
// Service (its name), as applications address each other.
var matrixPaths = []matrixPath{
	{name: "unenrolled (baseline)", ns: "mx-plain", pod: "client", host: "probe.mx-plain", role: baseline},
	{name: "enrolled, same node", ns: "mx-mesh", pod: "near", host: "probe.mx-mesh", role: meshPath,
		proof: []string{`connection_security_policy="mutual_tls"`, `destination_workload_namespace="mx-mesh"`, `source_workload="near"`}},
	{name: "enrolled, across nodes", ns: "mx-mesh", pod: "far", host: "probe.mx-mesh", role: meshPath,
		proof: []string{`connection_security_policy="mutual_tls"`, `destination_workload_namespace="mx-mesh"`, `source_workload="far"`}},
	{name: "namespace waypoint", ns: "mx-wp", pod: "client", host: "probe.mx-wp", role: meshPath,
		proof: []string{`connection_security_policy="mutual_tls"`, `destination_workload_namespace="mx-wp"`,
			`source_principal="spiffe://cluster.local/ns/mx-wp/sa/waypoint"`},
		istio: map[string]istioCell{"source-ip": {"server saw another address", "Istio ambient keeps the client's " +
			"address between node proxies only: through a waypoint the server sees the waypoint's address " +
			"(ztunnel's inbound connects from the HBONE peer's address, here the waypoint's)"}}},
	{name: "unenrolled into PERMISSIVE", ns: "mx-plain", pod: "client", host: "probe.mx-mesh", role: meshPath,
		proof: []string{`connection_security_policy="none"`, `destination_workload_namespace="mx-mesh"`, `source_workload="client"`}},
	{name: "unenrolled into STRICT", ns: "mx-plain", pod: "client", host: "probe.mx-strict", role: refused,
		proof: []string{`connection_security_policy="none"`, `destination_workload_namespace="mx-strict"`, `response_flags="DENY"`}},
}

// TestDataPath is issue #12's data-path conformance matrix, the fast subset
// that `make test` runs: every behaviour of the probe (e2e/probe) on every
// path, each mesh path compared cell by cell with the unenrolled baseline.
// With WEFT_MATRIX_OUT set it writes the table as markdown there (`make
// datapath-matrix` makes docs/datapath-matrix.md).
func TestDataPath(t *testing.T) {
	// Index 0: every index (0-11) has a suite; 0's others are the demo and
	// the cluster package's tests. An index separates only the host
	// loopback addresses of LoadBalancer Services, which this suite has none
	// of.
	e := startCluster(t, "e2emx", 2, 0)
	e.installControlPlane(t)
	e.installNodeAgent(t)
	e.applyYAML(t, matrixYAML())
	e.waitMatrixReady(t)

	m := newMatrix(matrixPaths)
	before := e.meshCounts(t)
	for _, p := range matrixPaths {
		start := time.Now()
		m.add(p, e.runProbe(t, p))
		t.Logf("%s: %d behaviours in %s", p.name, len(probe.Behaviours), time.Since(start).Round(100*time.Millisecond))
	}
	checkMeshed(t, before, e.meshCounts(t))
	m.write(t)
	for _, b := range probe.Behaviours {
		for _, p := range matrixPaths {
			if c := m.cells[b.ID][p.name]; !c.pass {
				t.Errorf("%s / %s: %s (%s)", b.ID, p.name, c.why, c.Detail)
			}
		}
	}
}

// runProbe runs every behaviour from the path's client pod.
func (e *env) runProbe(t *testing.T, p matrixPath) map[string]probe.Result {
	t.Helper()
	out := e.mustKubectl(t, "-n", p.ns, "exec", p.pod, "--", "weft-probe", "client", "all", p.host)
	got := map[string]probe.Result{}
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var r probe.Result
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("%s: probe output: %v\n%s", p.name, err, out)
		}
		got[r.Behaviour] = r
	}
	return got
}

// waitMatrixReady waits for the probe pods, the waypoint, the enrolment of
// the probe pods in enrolled namespaces and for each path to answer (the
// STRICT one to refuse): only then are the configurations in place.
func (e *env) waitMatrixReady(t *testing.T) {
	t.Helper()
	start := time.Now()
	e.mustKubectl(t, "wait", "--for=condition=Ready", "pod", "-A", "-l", "app=weft-probe", "--timeout=120s")
	e.mustKubectl(t, "-n", "mx-wp", "wait", "--for=condition=Programmed", "gateway/waypoint", "--timeout=120s")
	e.waitProbesEnrolled(t)
	for _, p := range matrixPaths {
		eventually(t, p.name+" answers (or refuses)", 60*time.Second, func() error {
			r := e.runBehaviour(t, p, "source-ip")
			answered := r.Class == "" && r.Outcome != "exec failed" && r.Outcome != "bad output"
			if answered != (p.role != refused) {
				return fmt.Errorf("source-ip: %s (%s)", r.Outcome, r.Detail)
			}
			return nil
		})
	}
	eventually(t, "requests to probe.mx-wp pass its waypoint", 60*time.Second, func() error {
		e.runBehaviour(t, matrixPaths[3], "source-ip")
		m, err := e.podMetricsIn("mx-wp", "gateway.networking.k8s.io/gateway-name=waypoint")
		if err != nil {
			return err
		}
		if !strings.Contains(m, `destination_service="probe.mx-wp.svc.cluster.local"`) {
			return fmt.Errorf("the waypoint counted no request to probe.mx-wp")
		}
		return nil
	})
	t.Logf("probe pods, waypoint and enrolment ready; every path answers: %s", time.Since(start).Round(100*time.Millisecond))
}

func (e *env) runBehaviour(t *testing.T, p matrixPath, behaviour string) probe.Result {
	t.Helper()
	out, err := e.kubectl("-n", p.ns, "exec", p.pod, "--", "weft-probe", "client", behaviour, p.host)
	var r probe.Result
	if err != nil {
		return probe.Result{Outcome: "exec failed", Detail: err.Error()}
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return probe.Result{Outcome: "bad output", Detail: out}
	}
	return r
}

// waitProbesEnrolled waits until the node agent of each probe pod in an
// enrolled namespace lists the pod's IP as enrolled.
func (e *env) waitProbesEnrolled(t *testing.T) {
	t.Helper()
	type pod struct{ ip, node string }
	var pods []pod
	for _, ns := range []string{"mx-mesh", "mx-wp", "mx-strict"} {
		out := e.mustKubectl(t, "-n", ns, "get", "pods", "-l", "app=weft-probe", "-o",
			`jsonpath={range .items[*]}{.status.podIP} {.spec.nodeName}{"\n"}{end}`)
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var p pod
			fmt.Sscan(l, &p.ip, &p.node)
			pods = append(pods, p)
		}
	}
	eventually(t, fmt.Sprintf("%d probe pods enrolled", len(pods)), 60*time.Second, func() error {
		for _, p := range pods {
			dump, err := e.agentAdmin(nodeIndex(t, p.node), "/config_dump")
			if err != nil {
				return err
			}
			var d struct{ Enrolled []string }
			if err := json.Unmarshal([]byte(dump), &d); err != nil {
				return err
			}
			if !slices.Contains(d.Enrolled, p.ip) {
				return fmt.Errorf("%s not enrolled on %s", p.ip, p.node)
			}
		}
		return nil
	})
}

// probeServicePorts are the probe Service's ports (probe.DefaultPorts), named
// for protocol selection: HTTP on http, the raw TCP behaviours on tcp-*
// (server-first protocols must not be sniffed), tcp-closed with nothing
// listening behind it.
var probeServicePorts = []struct {
	name string
	port int
}{
	{"http", probe.DefaultPorts.HTTP}, {"tcp-halfclose", probe.DefaultPorts.HalfClose},
	{"tcp-banner", probe.DefaultPorts.Banner}, {"tcp-sreset", probe.DefaultPorts.ServerReset},
	{"tcp-creset", probe.DefaultPorts.ClientReset}, {"tcp-bulk", probe.DefaultPorts.Bulk},
	{"tcp-echo", probe.DefaultPorts.Echo}, {"tcp-closed", probe.DefaultPorts.Closed},
}

// matrixYAML: mx-plain unenrolled (the baseline's server and the client of
// the baseline and STRICT paths), mx-mesh enrolled (clients on both nodes),
// mx-wp enrolled with a namespace waypoint, mx-strict enrolled with
// PeerAuthentication STRICT. Every server runs on node-0.
func matrixYAML() string {
	var b strings.Builder
	ns := func(name, labels string) {
		fmt.Fprintf(&b, "apiVersion: v1\nkind: Namespace\nmetadata: {name: %s, labels: {%s}}\n---\n", name, labels)
	}
	ns("mx-plain", "")
	ns("mx-mesh", "istio.io/dataplane-mode: ambient")
	ns("mx-wp", "istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint")
	ns("mx-strict", "istio.io/dataplane-mode: ambient")
	for _, n := range []string{"mx-plain", "mx-mesh", "mx-wp", "mx-strict"} {
		fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata: {name: probe, namespace: %s}\nspec:\n  selector: {app: weft-probe, role: server}\n  ports:\n", n)
		for _, p := range probeServicePorts {
			fmt.Fprintf(&b, "  - {name: %s, port: %d}\n", p.name, p.port)
		}
		b.WriteString("---\n")
		b.WriteString(probePodYAML(n, "server", "node-0", nil))
	}
	sleep := []string{"/bin/sleep", "infinity"}
	b.WriteString(probePodYAML("mx-plain", "client", "node-1", sleep))
	b.WriteString(probePodYAML("mx-mesh", "near", "node-0", sleep))
	b.WriteString(probePodYAML("mx-mesh", "far", "node-1", sleep))
	b.WriteString(probePodYAML("mx-wp", "client", "node-1", sleep))
	b.WriteString(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: mx-wp, labels: {istio.io/waypoint-for: service}}
spec:
  gatewayClassName: weft-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: mx-strict}
spec:
  mtls: {mode: STRICT}
`)
	return b.String()
}

// probePodYAML is a weft-probe pod: the server without command, a client
// sleeping for kubectl exec with it.
func probePodYAML(ns, name, node string, command []string) string {
	role, cmd := "server", ""
	if command != nil {
		role = "client"
		q, _ := json.Marshal(command)
		cmd = "\n    command: " + string(q)
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: {app: weft-probe, role: %s}}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 0
  containers:
  - name: probe
    image: weft-e2e/probe%s
---
`, name, ns, role, node, cmd)
}

// meshCounts sums, per path with a proof, the connections node-0's agent
// (the servers' node) counted as their destination.
func (e *env) meshCounts(t *testing.T) map[string]float64 {
	t.Helper()
	m, err := e.agentMetrics("node-0")
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{}
	for _, line := range strings.Split(m, "\n") {
		if !strings.HasPrefix(line, "istio_tcp_connections_opened_total{") || !strings.Contains(line, `reporter="destination"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		for _, p := range matrixPaths {
			if p.proof != nil && !slices.ContainsFunc(p.proof, func(l string) bool { return !strings.Contains(line, l) }) {
				counts[p.name] += v
			}
		}
	}
	return counts
}

// checkMeshed proves that the mesh and refused paths' cells went through
// the mesh: each path's count grew during the run by at least 1,000
// connections (the concurrent behaviour alone opens more through any path;
// a path that carries none of them shows far fewer).
func checkMeshed(t *testing.T, before, after map[string]float64) {
	t.Helper()
	for _, p := range matrixPaths {
		if p.proof == nil {
			continue
		}
		if grew := after[p.name] - before[p.name]; grew < 1000 {
			t.Errorf("%s: the server node's agent counted %v connections of this path as their destination, want at least 1000: "+
				"its cells did not go through the mesh", p.name, grew)
		}
	}
}
