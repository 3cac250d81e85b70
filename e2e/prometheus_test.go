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
	t.Logf("Prometheus answered every query %s after it was ready", time.Since(start).Round(100*time.Millisecond))
}

// requirePrometheus skips the test (fails it under WEFT_E2E_REQUIRE=1)
// when hack/kube-assets.sh has not built the binary the cluster maps
// prom/prometheus to.
func requirePrometheus(t *testing.T) {
	t.Helper()
	bin := filepath.Join(assetsDir(), "prometheus")
	if _, err := os.Stat(bin); err != nil {
		msg := fmt.Sprintf("%s missing (the local cluster's prom/prometheus image): run hack/kube-assets.sh", bin)
		if os.Getenv("WEFT_E2E_REQUIRE") == "1" && !testing.Short() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
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
