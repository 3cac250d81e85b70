package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weft-mesh/weft/charts"
)

// kialiGraphQuery is the shape of the query Kiali's namespace graph issues
// for HTTP edges (its "destination|waypoint" reporters cover ambient
// meshes, where waypoints report L7), grouped by the labels Kiali builds
// nodes and edges from.
const kialiGraphQuery = `sum(rate(istio_requests_total{reporter=~"destination|waypoint",destination_service_namespace="default"}[1m])) by (` +
	`source_workload_namespace,source_workload,source_canonical_service,source_canonical_revision,` +
	`destination_service_namespace,destination_service_name,destination_workload_namespace,destination_workload,` +
	`destination_canonical_service,destination_canonical_revision,response_code,grpc_response_status,response_flags) > 0`

// bookinfoEdges are the workload edges (source->destination) Bookinfo's
// requests make: reviews v2 and v3 call ratings, v1 does not.
var bookinfoEdges = []*regexp.Regexp{
	regexp.MustCompile(`^productpage-v1->details-v1$`),
	regexp.MustCompile(`^productpage-v1->reviews-v[123]$`),
	regexp.MustCompile(`^reviews-v[23]->ratings-v1$`),
}

// TestPrometheus is issue #16's real Prometheus: Istio's addon, applied
// unchanged the way the tutorials do (kubectl apply -f
// samples/addons/prometheus.yaml), discovers the annotated pods through
// the Kubernetes API with its service account, scrapes the node agents,
// weft-control and Bookinfo's namespace waypoint, and answers the queries
// Istio's dashboards and Kiali's graph issue with Bookinfo's traffic.
func TestPrometheus(t *testing.T) {
	// Index 0, shared as TestDataPath explains: an index separates only the
	// host loopback addresses of LoadBalancer Services, and this suite has
	// none.
	requirePrometheus(t)
	e := startCluster(t, "e2eprom", 2, 0)
	root := repoRoot()
	e.installControlPlane(t)
	e.installNodeAgent(t)
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/bookinfo/platform/kube/bookinfo.yaml"))
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/curl/curl.yaml"))
	e.mustKubectl(t, "label", "namespace", "default", "istio.io/dataplane-mode=ambient")
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/waypoint/waypoint.yaml"))
	e.mustKubectl(t, "label", "namespace", "default", "istio.io/use-waypoint=waypoint")
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/addons/prometheus.yaml"))
	e.mustKubectl(t, "wait", "--for=condition=Available", "deployment", "--all", "--timeout=180s")
	e.mustKubectl(t, "wait", "--for=condition=Programmed", "gateway/waypoint", "--timeout=120s")
	e.mustKubectl(t, "-n", "istio-system", "rollout", "status", "deployment/prometheus", "--timeout=120s")
	p := &promAPI{e: e, addr: net.JoinHostPort(e.serviceIP(t, "istio-system", "prometheus"), "9090")}
	start := time.Now()

	// Bookinfo's traffic all along: rates need two scrapes (15 s apart)
	// of series that saw requests in between.
	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	e.load(t, loadCtx, "default", "deploy/curl", 2)

	want := e.annotatedPods(t)
	if len(want) != 5 {
		t.Fatalf("pods with prometheus.io/scrape=true: %v; want 2 node agents, 2 weft-control, the waypoint", want)
	}
	p.awaitTargets(t, want)
	t.Logf("every target up %s after Prometheus was ready", time.Since(start).Round(100*time.Millisecond))

	t.Run("the waypoint's L7 metrics per destination workload", func(t *testing.T) {
		p.await(t, `sum by (source_workload) (istio_requests_total{reporter="waypoint",destination_workload="reviews-v1",response_code="200"})`,
			wantLabelValues("source_workload", "productpage-v1"))
	})
	t.Run("the node agents' L4 metrics", func(t *testing.T) {
		// Bytes are counted when a connection closes: curl's, one per
		// request (the waypoint's to the workloads stay open in its pool).
		p.await(t, `sum by (source_workload) (istio_tcp_sent_bytes_total{reporter="source",source_workload_namespace="default"}) > 0`,
			wantLabelValues("source_workload", "curl"))
		p.await(t, `sum by (destination_workload) (istio_tcp_connections_opened_total{reporter="destination",destination_workload_namespace="default"}) > 0`,
			wantLabelValues("destination_workload", "productpage-v1", "details-v1", "reviews-v1", "ratings-v1"))
	})
	t.Run("the request duration histogram's p99 per workload", func(t *testing.T) {
		p.await(t, `histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="waypoint"}[1m])) by (le, destination_workload))`,
			wantLabelValues("destination_workload", "productpage-v1", "details-v1", "reviews-v1", "ratings-v1"))
	})
	t.Run("Kiali's graph query returns Bookinfo's edges", func(t *testing.T) {
		p.await(t, kialiGraphQuery, wantEdges)
	})
	t.Run("kubectl port-forward svc/prometheus, as the tutorials and make demo reach it", func(t *testing.T) {
		local := e.portForward(t, "istio-system", "svc/prometheus", "9090")
		body, err := getOK(&http.Client{Timeout: 10 * time.Second}, "http://"+local+"/api/v1/query?query=up")
		if err != nil || !strings.Contains(body, `"status":"success"`) {
			t.Fatalf("query through the port-forward: %v: %.500s", err, body)
		}
	})
	t.Run("weft-control's metrics", func(t *testing.T) {
		p.await(t, `sum by (pod) (weft_xds_connected_clients{job="kubernetes-pods",namespace="weft-system"}) > 0`, nonEmpty)
	})
	t.Run("every Grafana dashboard panel's PromQL", func(t *testing.T) {
		// A new identity and workload while Prometheus watches: the
		// control plane dashboard's push and signing latencies are rates
		// of events, and Bookinfo's steady state has none.
		e.mustKubectl(t, "create", "serviceaccount", "dashboards")
		e.mustKubectl(t, "run", "dashboards", "--image=curlimages/curl", `--overrides={"spec":{"serviceAccountName":"dashboards"}}`,
			"--command", "--", "/bin/sleep", "infinity")
		e.mustKubectl(t, "wait", "--for=condition=Ready", "pod/dashboards", "--timeout=60s")
		p.checkDashboards(t, start)
	})
	t.Run("Telemetry API metric overrides, as Istio's customize-metrics task", func(t *testing.T) {
		testMetricOverrides(t, e, p)
	})
	t.Logf("Prometheus answered every query %s after it was ready", time.Since(start).Round(100*time.Millisecond))
}

// dashboardValues substitute the dashboards' template variables as a user
// looking at Bookinfo would choose them: reviews-v2 has both inbound
// (from productpage) and outbound (to ratings) requests; the multi-value
// variables (node, pod) are at Grafana's All (.*).
var dashboardValues = map[string]string{
	"__rate_interval": "1m",
	"service":         "reviews.default.svc.cluster.local",
	"namespace":       "default",
	"workload":        "reviews-v2",
	"waypoint":        "waypoint",
	"node":            ".*",
	"pod":             ".*",
}

// dashboardMayBeEmpty are the dashboard queries (uid/panel/refId) that
// Bookinfo's traffic gives no data, with the reason. Every other query
// must return a finite value.
var dashboardMayBeEmpty = map[string]string{
	"weft-waypoint/RBAC denials/A":                 "no AuthorizationPolicy: no 403",
	"weft-waypoint/RBAC denials/B":                 "no AuthorizationPolicy on a waypoint TCP port",
	"weft-waypoint/Dry-run policy decisions/A":     "no istio.io/dry-run AuthorizationPolicy",
	"weft-waypoint/TCP connections/A":              "Bookinfo's ports are all HTTP: the waypoint has no TCP chain",
	"weft-node-agent/Policy denials/A":             "no AuthorizationPolicy: no DENY",
	"weft-node-agent/Failed connections by flag/A": "no connection fails (UF, DENY, NR, NC) while every pod is up",
	"weft-workload/Inbound TCP bytes/A":            "reviews-v2's inbound connections all come from the waypoint's pool, which keeps them open: bytes are counted when a connection closes",
	"weft-workload/Inbound TCP bytes/B":            "as A (the response direction)",
	"weft-control-plane/NACKs by type/A":           "no client rejects configuration",
}

// dashboardQuery is one panel target's PromQL with the variables
// substituted.
type dashboardQuery struct {
	key, expr string
}

// checkDashboards runs every dashboard variable's and panel's query
// against Prometheus. Panels run as Grafana runs them, as range queries,
// over the time since Prometheus was ready (from). A query Prometheus
// rejects fails at once; the rest are retried for a minute until each has
// a finite value at some step (data the panel draws), except
// dashboardMayBeEmpty's. Variable queries must offer the value
// dashboardValues chose.
func (p *promAPI) checkDashboards(t *testing.T, from time.Time) {
	ds, err := charts.Dashboards()
	if err != nil {
		t.Fatal(err)
	}
	var pending []dashboardQuery
	for _, d := range ds {
		p.checkDashboardVariables(t, d)
		for _, panel := range d.AllPanels() {
			for _, tg := range panel.Targets {
				pending = append(pending, dashboardQuery{d.UID + "/" + panel.Title + "/" + tg.RefID, charts.Substitute(tg.Expr, dashboardValues)})
			}
		}
	}
	for key := range dashboardMayBeEmpty {
		if !slices.ContainsFunc(pending, func(q dashboardQuery) bool { return q.key == key }) {
			t.Errorf("dashboardMayBeEmpty names %s, which no dashboard has", key)
		}
	}
	total := len(pending)
	deadline := time.Now().Add(time.Minute)
	for {
		pending = p.runDashboardQueries(t, pending, from)
		if len(pending) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Second)
	}
	for _, q := range pending {
		_, body, _ := p.queryRange(q.expr, from)
		t.Errorf("%s: no finite value: %s; response: %.500s", q.key, q.expr, body)
	}
	t.Logf("%d panel queries, %d may be empty", total, len(dashboardMayBeEmpty))
}

// runDashboardQueries runs the queries once and returns those still
// without data; a query error fails the test.
func (p *promAPI) runDashboardQueries(t *testing.T, qs []dashboardQuery, from time.Time) []dashboardQuery {
	t.Helper()
	var left []dashboardQuery
	for _, q := range qs {
		finite, body, err := p.queryRange(q.expr, from)
		if err != nil {
			t.Errorf("%s: query error: %v: %s; response: %.500s", q.key, err, q.expr, body)
			continue
		}
		switch reason, mayBeEmpty := dashboardMayBeEmpty[q.key]; {
		case mayBeEmpty:
			t.Logf("%s: %d finite values (may be empty: %s)", q.key, finite, reason)
		case finite == 0:
			left = append(left, q)
		}
	}
	return left
}

// queryRange runs a range query from from to now at a 15 s step (the
// scrape interval) and returns how many finite values the matrix holds,
// and the response body.
func (p *promAPI) queryRange(q string, from time.Time) (int, string, error) {
	v := url.Values{"query": {q}, "start": {strconv.FormatInt(from.Unix(), 10)},
		"end": {strconv.FormatInt(time.Now().Unix(), 10)}, "step": {"15"}}
	body, err := p.get("/api/v1/query_range?" + v.Encode())
	if err != nil {
		return 0, body, err
	}
	var resp struct {
		Status string
		Data   struct {
			ResultType string
			Result     []struct{ Values [][2]any }
		}
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		return 0, body, err
	}
	if resp.Status != "success" || resp.Data.ResultType != "matrix" {
		return 0, body, fmt.Errorf("status %q, result type %q; want a matrix", resp.Status, resp.Data.ResultType)
	}
	finite := 0
	for _, r := range resp.Data.Result {
		for _, sv := range r.Values {
			s, _ := sv[1].(string)
			if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
				finite++
			}
		}
	}
	return finite, body, nil
}

// labelValues matches a Grafana label_values(selector, label) query.
var labelValues = regexp.MustCompile(`^label_values\((.*), *([A-Za-z_][A-Za-z0-9_]*)\)$`)

// checkDashboardVariables runs each query variable as the equivalent
// PromQL (count by (label) (selector)) and requires the value chosen in
// dashboardValues among the label's values (any value for .*).
func (p *promAPI) checkDashboardVariables(t *testing.T, d charts.Dashboard) {
	t.Helper()
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("%s variable %s: query %q is not label_values(selector, label)", d.UID, v.Name, v.Definition)
			continue
		}
		q := fmt.Sprintf("count by (%s) (%s)", m[2], charts.Substitute(m[1], dashboardValues))
		want := dashboardValues[v.Name]
		p.await(t, q, func(res []promSample) error {
			for _, s := range res {
				if want == ".*" || s.Metric[m[2]] == want {
					return nil
				}
			}
			return fmt.Errorf("%s variable %s does not offer %q", d.UID, v.Name, want)
		})
	}
}

// requirePrometheus skips the test (fails it under WEFT_E2E_REQUIRE=1)
// when hack/kube-assets.sh has not built the binary the cluster maps
// prom/prometheus to.
func requirePrometheus(t *testing.T) {
	t.Helper()
	requireAsset(t, "prometheus", "prom/prometheus")
}

// promAPI queries a Prometheus server's HTTP API from inside the cluster
// network.
type promAPI struct {
	e    *env
	addr string // host:port of the Service
}

// promSample is one series of an instant query's vector result.
type promSample struct {
	Metric map[string]string
	Value  float64
}

// get GETs path and returns the body whatever the status (Prometheus
// explains a bad query in it), and an error unless the status is 200.
func (p *promAPI) get(path string) (string, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: p.e.c.DialContext}}
	resp, err := client.Get("http://" + p.addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return string(b), err
}

// query runs an instant query and returns the vector's series and the
// response body.
func (p *promAPI) query(q string) ([]promSample, string, error) {
	body, err := p.get("/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, body, err
	}
	var resp struct {
		Status string
		Data   struct {
			ResultType string
			Result     []struct {
				Metric map[string]string
				Value  [2]any // [unix time, "value"]
			}
		}
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		return nil, body, err
	}
	if resp.Status != "success" || resp.Data.ResultType != "vector" {
		return nil, body, fmt.Errorf("status %q, result type %q; want a vector", resp.Status, resp.Data.ResultType)
	}
	out := make([]promSample, 0, len(resp.Data.Result))
	for _, r := range resp.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, body, fmt.Errorf("value %q of %v: %w", s, r.Metric, err)
		}
		out = append(out, promSample{Metric: r.Metric, Value: v})
	}
	return out, body, nil
}

// await runs the query until check accepts its result: series appear
// within a scrape interval (15 s) of the traffic, rates within two. The
// failure names the query and the last response.
func (p *promAPI) await(t *testing.T, q string, check func([]promSample) error) {
	t.Helper()
	eventually(t, "query "+q, 2*time.Minute, func() error {
		res, body, err := p.query(q)
		if err == nil {
			err = check(res)
		}
		if err != nil {
			return fmt.Errorf("%w; response: %.3000s", err, body)
		}
		return nil
	})
}

// awaitTargets polls /api/v1/targets until the kubernetes-pods job's
// targets are exactly the annotated pods (namespace/name), all up, and the
// API server and Prometheus jobs are up too: the API server's scrape uses
// the pod's service-account token and CA, as kubernetes_sd does.
func (p *promAPI) awaitTargets(t *testing.T, pods []string) {
	t.Helper()
	eventually(t, "Prometheus scrapes every annotated pod", 2*time.Minute, func() error {
		body, err := p.get("/api/v1/targets?state=active")
		if err != nil {
			return fmt.Errorf("%w; response: %.2000s", err, body)
		}
		var resp struct {
			Data struct {
				ActiveTargets []struct {
					Labels    map[string]string
					ScrapeURL string
					Health    string
					LastError string
				}
			}
		}
		if err := json.Unmarshal([]byte(body), &resp); err != nil {
			return fmt.Errorf("targets: %w: %.2000s", err, body)
		}
		var up, problems []string
		jobs := map[string]bool{}
		for _, tg := range resp.Data.ActiveTargets {
			job := tg.Labels["job"]
			if tg.Health != "up" {
				problems = append(problems, fmt.Sprintf("%s %s is %s (%s)", job, tg.ScrapeURL, tg.Health, tg.LastError))
				continue
			}
			jobs[job] = true
			if job == "kubernetes-pods" {
				up = append(up, tg.Labels["namespace"]+"/"+tg.Labels["pod"])
			}
		}
		slices.Sort(up)
		if !slices.Equal(up, pods) {
			problems = append(problems, fmt.Sprintf("kubernetes-pods up: %v, want %v", up, pods))
		}
		for _, j := range []string{"kubernetes-api-servers", "prometheus"} {
			if !jobs[j] {
				problems = append(problems, "job "+j+" has no target up")
			}
		}
		if len(problems) > 0 {
			return fmt.Errorf("%s", strings.Join(problems, "; "))
		}
		return nil
	})
}

func nonEmpty(res []promSample) error {
	if len(res) == 0 {
		return fmt.Errorf("no series")
	}
	return nil
}

// wantLabelValues accepts a result that has a finite value for each of
// the label's values.
func wantLabelValues(label string, values ...string) func([]promSample) error {
	return func(res []promSample) error {
		got := map[string]bool{}
		for _, s := range res {
			if !math.IsNaN(s.Value) && !math.IsInf(s.Value, 0) {
				got[s.Metric[label]] = true
			}
		}
		var missing []string
		for _, v := range values {
			if !got[v] {
				missing = append(missing, v)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("no finite value for %s=%v", label, missing)
		}
		return nil
	}
}

// wantEdges accepts a graph query result with every Bookinfo edge at a
// rate of 200 responses above zero (the query keeps only rates above
// zero).
func wantEdges(res []promSample) error {
	var edges []string
	for _, s := range res {
		m := s.Metric
		if m["source_workload_namespace"] == "default" && m["destination_workload_namespace"] == "default" &&
			m["response_code"] == "200" && m["response_flags"] == "-" {
			edges = append(edges, m["source_workload"]+"->"+m["destination_workload"])
		}
	}
	for _, re := range bookinfoEdges {
		if !slices.ContainsFunc(edges, re.MatchString) {
			return fmt.Errorf("no edge matches %s among %v", re, edges)
		}
	}
	return nil
}

// portForward runs `kubectl port-forward target :port` in ns until the
// test ends and returns the local address it forwards from.
func (e *env) portForward(t *testing.T, ns, target, port string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(assetsDir(), "kubectl"), "-n", ns, "port-forward", target, ":"+port)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.c.Kubeconfig)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// "Forwarding from 127.0.0.1:40123 -> 9090"
	line, err := bufio.NewReader(out).ReadString('\n')
	m := regexp.MustCompile(`Forwarding from (127\.0\.0\.1:\d+) `).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("kubectl port-forward printed %q (%v); stderr: %s", line, err, stderr.String())
	}
	go io.Copy(io.Discard, out) // its further lines, one per connection
	return m[1]
}

// annotatedPods are the running pods (namespace/name, sorted) that ask to
// be scraped with prometheus.io/scrape: "true".
func (e *env) annotatedPods(t *testing.T) []string {
	t.Helper()
	out := e.mustKubectl(t, "get", "pods", "-A", "--field-selector=status.phase=Running", "-o",
		`jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} {.metadata.annotations.prometheus\.io/scrape}{"\n"}{end}`)
	var pods []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if pod, scrape, _ := strings.Cut(line, " "); scrape == "true" {
			pods = append(pods, pod)
		}
	}
	slices.Sort(pods)
	return pods
}
