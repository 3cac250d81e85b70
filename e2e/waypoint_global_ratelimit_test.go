package e2e

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// globalLimit is the limit of /productpage per minute in the rate limit
// service's configuration.
const globalLimit = 10

// globalRateLimitConfig is the task's ratelimit-config ConfigMap with the
// limits of the test: /productpage globalLimit per minute, /static/warmup
// one per hour (after the first request of the hour, every request through
// a configured proxy is 429; /static is a route of the task's ingress
// VirtualService too), any other path 1000 per minute.
var globalRateLimitConfig = fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata: {name: ratelimit-config, namespace: default}
data:
  config.yaml: |
    domain: ratelimit
    descriptors:
      - key: PATH
        value: "/productpage"
        rate_limit:
          unit: minute
          requests_per_unit: %d
      - key: PATH
        value: "/static/warmup"
        rate_limit:
          unit: hour
          requests_per_unit: 1
      - key: PATH
        rate_limit:
          unit: minute
          requests_per_unit: 1000
`, globalLimit)

// globalRateLimitFilters are the task's two EnvoyFilters, bound to the
// waypoint by targetRefs: the filter before the router, calling the rate
// limit service, and the :path descriptor on every virtual host.
const globalRateLimitFilters = `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: filter-ratelimit, namespace: default}
spec:
  targetRefs:
  - {kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      listener:
        filterChain:
          filter:
            name: "envoy.filters.network.http_connection_manager"
            subFilter:
              name: "envoy.filters.http.router"
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
          domain: ratelimit
          failure_mode_deny: true
          timeout: 10s
          rate_limit_service:
            grpc_service:
              envoy_grpc:
                cluster_name: outbound|8081||ratelimit.default.svc.cluster.local
                authority: ratelimit.default.svc.cluster.local
            transport_api_version: V3
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: filter-ratelimit-svc, namespace: default}
spec:
  targetRefs:
  - {kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}
  configPatches:
  - applyTo: VIRTUAL_HOST
    match:
      routeConfiguration:
        vhost:
          name: ""
          route:
            action: ANY
    patch:
      operation: MERGE
      value:
        rate_limits:
        - actions:
          - request_headers:
              header_name: ":path"
              descriptor_key: "PATH"
`

// TestWaypointGlobalRateLimit is Istio's global rate limit task on a
// namespace waypoint of two replicas: the real envoyproxy/ratelimit
// service backed by a real Redis counts for both, so /productpage gets
// exactly its limit of 200s per minute, then 429s with
// x-envoy-ratelimited, however the requests spread over the replicas;
// another path is not limited. Then the same on the ingress gateway, with
// the task's EnvoyFilters as written for it.
func TestWaypointGlobalRateLimit(t *testing.T) {
	e := startCluster(t, "e2egrl", 2, 14)
	root := repoRoot()
	e.installControlPlane(t)
	e.installNodeAgent(t)
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/bookinfo/platform/kube/bookinfo.yaml"))
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/curl/curl.yaml"))
	e.applyYAML(t, globalRateLimitConfig)
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/ratelimit/rate-limit-service.yaml"))
	e.mustKubectl(t, "wait", "--for=condition=Available", "deployment", "--all", "--timeout=180s")
	e.mustKubectl(t, "label", "namespace", "default", "istio.io/dataplane-mode=ambient")
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/waypoint/waypoint.yaml"))
	e.mustKubectl(t, "annotate", "gateway", "waypoint", "weft.io/waypoint-replicas=2")
	e.mustKubectl(t, "label", "namespace", "default", "istio.io/use-waypoint=waypoint")
	e.mustKubectl(t, "wait", "--for=condition=Programmed", "gateway/waypoint", "--timeout=120s")
	eventually(t, "two waypoint replicas", 120*time.Second, func() error {
		out, _ := e.kubectl("get", "deployment", "waypoint", "-o", "jsonpath={.status.availableReplicas}")
		if strings.TrimSpace(out) != "2" {
			return fmt.Errorf("available replicas %q", out)
		}
		return nil
	})

	t.Run("waypoint: the limit holds across two replicas, another path is not limited", func(t *testing.T) {
		testGlobalRateLimitWaypoint(t, e)
	})
	t.Run("ingress gateway: the task's EnvoyFilters by workloadSelector", func(t *testing.T) {
		testGlobalRateLimitIngress(t, e)
	})
}

func testGlobalRateLimitWaypoint(t *testing.T, e *env) {
	e.applyYAML(t, globalRateLimitFilters)
	t.Cleanup(func() {
		e.kubectl("delete", "envoyfilter", "filter-ratelimit", "filter-ratelimit-svc", "--ignore-not-found")
	})
	eventually(t, "the EnvoyFilters accepted", 60*time.Second, func() error {
		for _, name := range []string{"filter-ratelimit", "filter-ratelimit-svc"} {
			if st := e.mustKubectl(t, "get", "envoyfilter", name, "-o", istioStatusPath); !strings.Contains(st, "True Accepted") {
				return fmt.Errorf("%s: %q, want WeftAccepted True", name, st)
			}
		}
		return nil
	})
	// Both replicas run the filter once 20 requests on new connections,
	// past /static/warmup's one of the hour, are all 429.
	eventually(t, "both waypoint replicas limit /static/warmup", 90*time.Second, func() error {
		codes := e.codesOnNewConnections(t, "http://productpage:9080/static/warmup", 20)
		if codes["429"] != 20 {
			return fmt.Errorf("/static/warmup: %v, want 20 x 429", codes)
		}
		return nil
	})

	awaitWindow(t, false)
	before := e.waypointCodes(t)
	codes, headers := e.sequenceOnNewConnections(t, "http://productpage:9080/productpage", 3*globalLimit)
	want := strings.Repeat("200 ", globalLimit) + strings.TrimSpace(strings.Repeat("429 ", 2*globalLimit))
	if got := strings.Join(codes, " "); got != want {
		logs, _ := e.kubectl("logs", "-l", "gateway.networking.k8s.io/gateway-name=waypoint", "--tail=40", "--prefix")
		t.Fatalf("/productpage over two replicas: %s, want %d x 200 then 429s\n%.3000s\nwaypoints:\n%s", got, globalLimit, headers, logs)
	}
	if !strings.Contains(strings.ToLower(headers), "x-envoy-ratelimited: true") {
		t.Errorf("a 429 without x-envoy-ratelimited: true:\n%.600s", headers)
	}
	after := e.waypointCodes(t)
	for pod, n := range after {
		if n["200"]-before[pod]["200"] == 0 && n["429"]-before[pod]["429"] == 0 {
			t.Errorf("waypoint pod %s served none of the requests (before %v, after %v): the test did not spread them", pod, before[pod], n)
		}
	}
	t.Logf("per waypoint replica (before, after): %v, %v", before, after)
	if logs, err := e.kubectl("logs", "-l", "gateway.networking.k8s.io/gateway-name=waypoint", "--tail=-1"); err == nil {
		var fivexx []string
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, `"response_code":500`) && len(fivexx) < 3 {
				fivexx = append(fivexx, l)
			}
		}
		// For diagnosis: in one of five runs the warm-up got about 60
		// answers 500 in its first seconds (cause not determined: the
		// access log's flags say whether failure_mode_deny answered).
		t.Logf("first 500s of the waypoints (of the warm-up):\n%s", strings.Join(fivexx, "\n"))
	}

	other := e.codesOnNewConnections(t, "http://productpage:9080/api/v1/products", 3*globalLimit)
	if other["200"] != 3*globalLimit {
		t.Errorf("/api/v1/products, not limited: %v", other)
	}
}

// awaitWindow waits until the requests of a test fall in one fixed window
// of envoyproxy/ratelimit, the clock's minute: at least 30 s left in it,
// or (next) a new minute.
func awaitWindow(t *testing.T, next bool) {
	left := time.Minute - time.Duration(time.Now().Second())*time.Second
	if next || left < 30*time.Second {
		t.Logf("waiting %s for the next minute's window", left)
		time.Sleep(left + time.Second)
	}
}

// ingressGlobalRateLimitFilters are the task's EnvoyFilters as written for
// the ingress gateway: workloadSelector of its pods, context GATEWAY.
const ingressGlobalRateLimitFilters = `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: filter-ratelimit, namespace: weft-ingress}
spec:
  workloadSelector:
    labels: {istio: ingress}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: GATEWAY
      listener:
        filterChain:
          filter:
            name: "envoy.filters.network.http_connection_manager"
            subFilter:
              name: "envoy.filters.http.router"
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
          domain: ratelimit
          failure_mode_deny: true
          timeout: 10s
          rate_limit_service:
            grpc_service:
              envoy_grpc:
                cluster_name: outbound|8081||ratelimit.default.svc.cluster.local
                authority: ratelimit.default.svc.cluster.local
            transport_api_version: V3
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: filter-ratelimit-svc, namespace: weft-ingress}
spec:
  workloadSelector:
    labels: {istio: ingress}
  configPatches:
  - applyTo: VIRTUAL_HOST
    match:
      context: GATEWAY
      routeConfiguration:
        vhost:
          name: ""
          route:
            action: ANY
    patch:
      operation: MERGE
      value:
        rate_limits:
        - actions:
          - request_headers:
              header_name: ":path"
              descriptor_key: "PATH"
`

// testGlobalRateLimitIngress: the same limit on the ingress gateway (the
// waypoint's filters are gone, so each request is counted once), through
// both nodes' NodePorts.
func testGlobalRateLimitIngress(t *testing.T, e *env) {
	root := repoRoot()
	e.mustRun(t, "helm", "install", "weft-ingress", filepath.Join(root, "charts/gateway"), "-n", "weft-ingress", "--create-namespace")
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/bookinfo/networking/bookinfo-gateway.yaml"))
	e.mustKubectl(t, "-n", "weft-ingress", "wait", "--for=condition=Available", "deployment/weft-ingress", "--timeout=120s")
	e.applyYAML(t, ingressGlobalRateLimitFilters)
	port := strings.TrimSpace(e.mustKubectl(t, "-n", "weft-ingress", "get", "service", "weft-ingress",
		"-o", `jsonpath={.spec.ports[?(@.name=="http2")].nodePort}`))
	hosts := strings.Fields(e.mustKubectl(t, "get", "nodes", "-o", `jsonpath={.items[*].status.addresses[?(@.type=="InternalIP")].address}`))
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: e.c.DialContext}}
	get := func(i int, path string) (int, http.Header) {
		resp, err := client.Get("http://" + hosts[i%len(hosts)] + ":" + port + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header
	}
	// /static/warmup's one request of the hour went through the waypoint.
	eventually(t, "the gateway limits /static/warmup", 90*time.Second, func() error {
		for i := range 5 {
			if code, _ := get(i, "/static/warmup"); code != 429 {
				return fmt.Errorf("/static/warmup: %d, want 429", code)
			}
		}
		return nil
	})
	// Each request must be counted once: the waypoint's filters are gone
	// when /static/warmup from the curl pod reaches productpage.
	eventually(t, "the waypoint no longer limits", 60*time.Second, func() error {
		if code := e.httpCode(t, "default", "deploy/curl", "http://productpage:9080/static/warmup"); code == "429" {
			return fmt.Errorf("/static/warmup through the waypoint: HTTP %s", code)
		}
		return nil
	})
	awaitWindow(t, true)
	var codes []string
	var limited http.Header
	for i := range 3 * globalLimit {
		code, h := get(i, "/productpage")
		codes = append(codes, strconv.Itoa(code))
		if code == 429 {
			limited = h
		}
	}
	want := strings.Repeat("200 ", globalLimit) + strings.TrimSpace(strings.Repeat("429 ", 2*globalLimit))
	if got := strings.Join(codes, " "); got != want {
		t.Fatalf("/productpage through the gateway: %s, want %d x 200 then 429s", got, globalLimit)
	}
	if limited.Get("X-Envoy-Ratelimited") != "true" {
		t.Errorf("a 429 without x-envoy-ratelimited: true: %v", limited)
	}
	for i := range 3 * globalLimit {
		if code, _ := get(i, "/api/v1/products"); code != 200 {
			t.Fatalf("/api/v1/products, not limited: request %d answered %d", i, code)
		}
	}
}

// sequenceOnNewConnections sends n GET requests to url from the curl pod,
// each by a curl process of its own, so on a new connection (the node
// agent picks a waypoint replica for each), and returns their statuses in
// order and the output with the headers of one more request. Not with
// "Connection: close": such requests through the node agent and waypoint
// were sometimes reset after the waypoint had answered (curl error 56),
// a data path problem of its own.
func (e *env) sequenceOnNewConnections(t *testing.T, url string, n int) ([]string, string) {
	t.Helper()
	script := fmt.Sprintf(`for i in $(seq %d); do curl -sS -o /dev/null -w '%%{http_code}\n' '%s' 2>&1; done; curl -sS -o /dev/null -D - '%s'`, n, url, url)
	out, err := e.kubectl("exec", "deploy/curl", "--", "sh", "-c", script)
	if err != nil {
		t.Fatalf("requests to %s: %v\n%.600s", url, err, out)
	}
	lines := strings.Split(out, "\n")
	var codes []string
	for _, l := range lines {
		if len(codes) < n && len(l) == 3 {
			if _, err := strconv.Atoi(l); err == nil {
				codes = append(codes, l)
			}
		}
	}
	return codes, out
}

func (e *env) codesOnNewConnections(t *testing.T, url string, n int) map[string]int {
	t.Helper()
	codes, _ := e.sequenceOnNewConnections(t, url, n)
	m := map[string]int{}
	for _, c := range codes {
		m[c]++
	}
	return m
}

var requestsTotal = regexp.MustCompile(`istio_requests_total\{[^}]*response_code="(\d+)"[^}]*\} (\d+)`)

// waypointCodes is each waypoint pod's istio_requests_total by response
// code.
func (e *env) waypointCodes(t *testing.T) map[string]map[string]int {
	t.Helper()
	out := e.mustKubectl(t, "get", "pods", "-l", "gateway.networking.k8s.io/gateway-name=waypoint",
		"-o", `jsonpath={range .items[*]}{.metadata.name} {.status.podIP}{"\n"}{end}`)
	res := map[string]map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		name, ip, _ := strings.Cut(l, " ")
		m, err := e.httpGet(ip + ":15020/metrics")
		if err != nil {
			t.Fatalf("metrics of %s: %v", name, err)
		}
		res[name] = map[string]int{}
		for _, g := range requestsTotal.FindAllStringSubmatch(m, -1) {
			v, _ := strconv.Atoi(g[2])
			res[name][g[1]] += v
		}
	}
	return res
}
