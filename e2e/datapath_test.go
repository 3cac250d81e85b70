package e2e

import (
	"cmp"
	"encoding/json"
	"fmt"
	"iter"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	// httpPort is the port the HTTP behaviours connect to (0: the probe's);
	// an HTTP-only path (a gateway) runs only the behaviours over HTTP.
	httpPort int
	httpOnly bool
	// addr is the host's address when DNS does not know it (an external
	// host: the ServiceEntry's VIP, as curl --resolve).
	addr string
	// proof: labels of the istio_tcp_connections_opened_total series that
	// the server node's agent counts this path's connections in as their
	// destination (mesh and refused paths), at least minProof of them
	// (0: 1,000; a gateway pools its connections to the server).
	proof    []string
	minProof float64
	// istio lists the cells, by behaviour, where Istio ambient itself
	// differs from the baseline: they must show Istio's outcome instead.
	istio map[string]istioCell
}

type istioCell struct{ outcome, why string }

// probeArgs are kubectl's arguments to run behaviours (IDs, comma-separated)
// from the path's client pod.
func (p matrixPath) probeArgs(full bool, behaviours string) []string {
	args := []string{"-n", p.ns, "exec", p.pod, "--", "weft-probe", "client"}
	if full {
		args = append(args, "-full")
	}
	if p.httpPort != 0 {
		args = append(args, "-http-port", strconv.Itoa(p.httpPort))
	}
	if p.addr != "" {
		args = append(args, "-resolve", p.addr)
	}
	return append(args, behaviours, p.host)
}

// runs reports whether the path has the behaviour: an HTTP-only path has
// only those over HTTP.
func (p matrixPath) runs(b probe.Behaviour) bool { return !p.httpOnly || b.OverHTTP() }

// waypointSourceIP is how every waypoint path differs from the baseline.
var waypointSourceIP = istioCell{"server saw another address", "Istio ambient keeps the client's " +
	"address between node proxies only: through a waypoint the server sees the waypoint's address " +
	"(ztunnel's inbound connects from the HBONE peer's address, here the waypoint's)"}

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
		istio: map[string]istioCell{"source-ip": waypointSourceIP}},
	{name: "service-account waypoint", ns: "mx-sa", pod: "client", host: "probe.mx-sa", role: meshPath,
		proof: []string{`connection_security_policy="mutual_tls"`, `destination_workload_namespace="mx-sa"`,
			`source_principal="spiffe://cluster.local/ns/mx-sa/sa/probe-waypoint"`},
		istio: map[string]istioCell{"source-ip": waypointSourceIP}},
	{name: "ingress gateway", ns: "mx-plain", pod: "client", host: "weft-ingress.weft-ingress", role: meshPath,
		httpPort: 80, httpOnly: true, minProof: 10,
		proof: []string{`connection_security_policy="mutual_tls"`, `destination_workload_namespace="mx-mesh"`,
			`source_principal="spiffe://cluster.local/ns/weft-ingress/`},
		istio: map[string]istioCell{
			"source-ip": {"server saw another address", "an ingress gateway connects " +
				"from its own address; the client's is in X-Forwarded-For"},
			"h2c": {"server got HTTP/1.1", "Istio's gateway picks the upstream protocol from the destination's " +
				"Service port, not from the client: a port named `http` gets HTTP/1.1 (gRPC keeps HTTP/2 here)"}}},
	{name: "egress gateway to an external server", ns: "mx-wp", pod: "client", host: externalProbeHost, addr: externalProbeVIP,
		role: meshPath, httpOnly: true,
		istio: map[string]istioCell{
			"source-ip": {"server saw another address", "an egress gateway connects from its own address"},
			"h2c": {"server got HTTP/1.1", "as through the ingress gateway: the ServiceEntry port's protocol " +
				"`HTTP` selects HTTP/1.1 upstream"}}},
	{name: "unenrolled into PERMISSIVE", ns: "mx-plain", pod: "client", host: "probe.mx-mesh", role: meshPath,
		proof: []string{`connection_security_policy="none"`, `destination_workload_namespace="mx-mesh"`, `source_workload="client"`}},
	{name: "unenrolled into STRICT", ns: "mx-plain", pod: "client", host: "probe.mx-strict", role: refused,
		proof: []string{`connection_security_policy="none"`, `destination_workload_namespace="mx-strict"`, `response_flags="DENY"`}},
}

// TestDataPath is issue #12's data-path conformance matrix: every behaviour
// of the probe (e2e/probe) on every path, each mesh path compared cell by
// cell with the unenrolled baseline. `make test` runs the fast subset
// (probe.Fast sizes); with WEFT_MATRIX_FULL=1 (`make e2e`) it runs the whole
// matrix (probe.Full: 1 GiB each way, 9,000 connections, 10 minutes idle).
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
	e.mustRun(t, "helm", "install", "weft-ingress", filepath.Join(repoRoot(), "charts/gateway"), "-n", "weft-ingress", "--create-namespace")
	e.applyYAML(t, matrixYAML())
	e.startEgressPath(t)
	e.waitMatrixReady(t)

	m := newMatrix(matrixPaths, os.Getenv("WEFT_MATRIX_FULL") == "1")
	before := e.meshCounts(t)
	for p, results := range e.runMatrix(t, m.full) {
		m.add(p, results)
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

// runMatrix runs every behaviour on every path, in matrixPaths' order. The
// idle behaviour, which only waits, runs on every path at once, alongside
// the others.
func (e *env) runMatrix(t *testing.T, full bool) iter.Seq2[matrixPath, map[string]probe.Result] {
	idle := make([]map[string]probe.Result, len(matrixPaths))
	var wg sync.WaitGroup
	for i, p := range matrixPaths {
		if p.runs(probe.Behaviour{ID: "idle"}) {
			wg.Go(func() { idle[i] = e.runProbe(t, p, full, "idle") })
		}
	}
	results := make([]map[string]probe.Result, len(matrixPaths))
	for i, p := range matrixPaths {
		var ids []string
		for _, b := range probe.Behaviours {
			if b.ID != "idle" && p.runs(b) {
				ids = append(ids, b.ID)
			}
		}
		start := time.Now()
		results[i] = e.runProbe(t, p, full, strings.Join(ids, ","))
		t.Logf("%s: %d behaviours in %s", p.name, len(ids), time.Since(start).Round(100*time.Millisecond))
	}
	wg.Wait()
	return func(yield func(matrixPath, map[string]probe.Result) bool) {
		for i, p := range matrixPaths {
			maps.Copy(results[i], idle[i])
			if !yield(p, results[i]) {
				return
			}
		}
	}
}

// runProbe runs the behaviours (IDs, comma-separated) from the path's client
// pod; full selects the whole matrix's sizes. It may run on any goroutine.
func (e *env) runProbe(t *testing.T, p matrixPath, full bool, behaviours string) map[string]probe.Result {
	out, err := e.runFor(30*time.Minute, "kubectl", p.probeArgs(full, behaviours)...)
	if err != nil {
		t.Errorf("%s: %v\n%s", p.name, err, out)
	}
	got := map[string]probe.Result{}
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var r probe.Result
		if err := dec.Decode(&r); err != nil {
			t.Errorf("%s: probe output: %v\n%s", p.name, err, out)
			break
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
	e.mustKubectl(t, "-n", "mx-sa", "wait", "--for=condition=Programmed", "gateway/probe-waypoint", "--timeout=120s")
	e.mustKubectl(t, "-n", "weft-ingress", "wait", "--for=condition=Available", "deployment/weft-ingress", "--timeout=120s")
	e.waitEgressPath(t, matrixPaths[slices.IndexFunc(matrixPaths, func(p matrixPath) bool { return p.addr != "" })])
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
	for _, wp := range []struct{ ns, name string }{{"mx-wp", "waypoint"}, {"mx-sa", "probe-waypoint"}} {
		i := slices.IndexFunc(matrixPaths, func(p matrixPath) bool { return p.ns == wp.ns })
		eventually(t, "requests to probe."+wp.ns+" pass its waypoint", 60*time.Second, func() error {
			e.runBehaviour(t, matrixPaths[i], "source-ip")
			m, err := e.podMetricsIn(wp.ns, "gateway.networking.k8s.io/gateway-name="+wp.name)
			if err != nil {
				return err
			}
			if !strings.Contains(m, `destination_service="probe.`+wp.ns+`.svc.cluster.local"`) {
				return fmt.Errorf("the waypoint counted no request to probe.%s", wp.ns)
			}
			return nil
		})
	}
	t.Logf("probe pods, waypoint and enrolment ready; every path answers: %s", time.Since(start).Round(100*time.Millisecond))
}

func (e *env) runBehaviour(t *testing.T, p matrixPath, behaviour string) probe.Result {
	t.Helper()
	out, err := e.kubectl(p.probeArgs(false, behaviour)...)
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
	for _, ns := range []string{"mx-mesh", "mx-wp", "mx-sa", "mx-strict"} {
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
	{"tcp-echo", probe.DefaultPorts.Echo}, {"tcp-shalfclose", probe.DefaultPorts.ServerHalfClose},
	{"tcp-closed", probe.DefaultPorts.Closed},
}

// matrixYAML: mx-plain unenrolled (the baseline's server and the client of
// the baseline and STRICT paths), mx-mesh enrolled (clients on both nodes),
// mx-wp enrolled with a namespace waypoint (and mx-mesh's server behind the
// ingress gateway, the tutorials' Gateway and VirtualService for "*"), mx-sa
// enrolled with a waypoint
// for the server's service account only (labelled on its Service and pods,
// as `weftctl waypoint apply --service-account` does), mx-strict enrolled
// with PeerAuthentication STRICT. Every server runs on node-0.
func matrixYAML() string {
	var b strings.Builder
	ns := func(name, labels string) {
		fmt.Fprintf(&b, "apiVersion: v1\nkind: Namespace\nmetadata: {name: %s, labels: {%s}}\n---\n", name, labels)
	}
	ns("mx-plain", "")
	ns("mx-mesh", "istio.io/dataplane-mode: ambient")
	ns("mx-wp", "istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint")
	ns("mx-sa", "istio.io/dataplane-mode: ambient")
	ns("mx-strict", "istio.io/dataplane-mode: ambient")
	for _, n := range []string{"mx-plain", "mx-mesh", "mx-wp", "mx-sa", "mx-strict"} {
		labels := ""
		if n == "mx-sa" {
			labels = ", istio.io/use-waypoint: probe-waypoint"
		}
		fmt.Fprintf(&b, "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: probe, namespace: %s}\n---\n", n)
		fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata: {name: probe, namespace: %s, labels: {app: weft-probe%s}}\n"+
			"spec:\n  selector: {app: weft-probe, role: server}\n  ports:\n", n, labels)
		for _, p := range probeServicePorts {
			fmt.Fprintf(&b, "  - {name: %s, port: %d}\n", p.name, p.port)
		}
		b.WriteString("---\n")
		b.WriteString(probePodYAML(n, "server", "node-0", nil, labels))
	}
	sleep := []string{"/bin/sleep", "infinity"}
	b.WriteString(probePodYAML("mx-plain", "client", "node-1", sleep, ""))
	b.WriteString(probePodYAML("mx-mesh", "near", "node-0", sleep, ""))
	b.WriteString(probePodYAML("mx-mesh", "far", "node-1", sleep, ""))
	b.WriteString(probePodYAML("mx-wp", "client", "node-1", sleep, ""))
	b.WriteString(probePodYAML("mx-sa", "client", "node-1", sleep, ""))
	b.WriteString(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: mx-wp, labels: {istio.io/waypoint-for: service}}
spec:
  gatewayClassName: weft-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: probe-waypoint, namespace: mx-sa, labels: {istio.io/waypoint-for: all}}
spec:
  gatewayClassName: weft-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: probe-gateway, namespace: mx-mesh}
spec:
  selector: {istio: ingress}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: probe, namespace: mx-mesh}
spec:
  hosts: ["*"]
  gateways: [probe-gateway]
  http:
  - route:
    - destination: {host: probe.mx-mesh.svc.cluster.local, port: {number: 8080}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: mx-strict}
spec:
  mtls: {mode: STRICT}
`)
	return b.String()
}

// probePodYAML is a weft-probe pod running as service account probe (the
// server, without command; labels are added to its own, ", k: v" each) or
// the default one (a client sleeping for kubectl exec).
func probePodYAML(ns, name, node string, command []string, labels string) string {
	role, cmd, sa := "server", "", "probe"
	if command != nil {
		role, sa = "client", "default"
		q, _ := json.Marshal(command)
		cmd = "\n    command: " + string(q)
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: {app: weft-probe, role: %s%s}}
spec:
  nodeName: %s
  serviceAccountName: %s
  terminationGracePeriodSeconds: 0
  containers:
  - name: probe
    image: weft-e2e/probe%s
---
`, name, ns, role, labels, node, sa, cmd)
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
// a path that carries none of them shows far fewer), a gateway's by its
// minProof.
func checkMeshed(t *testing.T, before, after map[string]float64) {
	t.Helper()
	for _, p := range matrixPaths {
		if p.proof == nil {
			continue
		}
		want := cmp.Or(p.minProof, 1000)
		if grew := after[p.name] - before[p.name]; grew < want {
			t.Errorf("%s: the server node's agent counted %v connections of this path as their destination, want at least %v: "+
				"its cells did not go through the mesh", p.name, grew, want)
		}
	}
}
