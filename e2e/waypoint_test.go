package e2e

import (
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestWaypointBookinfo is Istio's Bookinfo traffic-management tutorial on
// a namespace waypoint, with the tutorial's own manifests
// (samples/bookinfo/networking), plus faults, timeouts, retries, L7
// authorization, a per-service waypoint and the waypoint's metrics.
func TestWaypointBookinfo(t *testing.T) {
	e := startCluster(t, "e2ewp", 2, 5)
	root := repoRoot()
	manifest := func(f string) string { return filepath.Join(root, "samples/bookinfo/networking", f) }
	e.installControlPlaneWith(t, "--values", extAuthzValues)
	e.installNodeAgent(t)
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/bookinfo/platform/kube/bookinfo.yaml"))
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/curl/curl.yaml"))
	e.mustKubectl(t, "wait", "--for=condition=Available", "deployment", "--all", "--timeout=180s")
	e.mustKubectl(t, "label", "namespace", "default", "istio.io/dataplane-mode=ambient")

	start := time.Now()
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/waypoint/waypoint.yaml"))
	e.mustKubectl(t, "label", "namespace", "default", "istio.io/use-waypoint=waypoint")
	e.mustKubectl(t, "wait", "--for=condition=Programmed", "gateway/waypoint", "--timeout=120s")
	t.Logf("waypoint programmed %s after apply", time.Since(start).Round(100*time.Millisecond))
	e.mustKubectl(t, "apply", "-f", manifest("destination-rule-all.yaml"))

	t.Run("virtual-service-all-v1: only reviews v1", func(t *testing.T) {
		e.mustKubectl(t, "apply", "-f", manifest("virtual-service-all-v1.yaml"))
		eventually(t, "only v1", 60*time.Second, func() error {
			return wantVersions(e.reviewsVersions(t, "", 30), map[string]bool{"v1": true})
		})
		if page := e.productpage(t, ""); !strings.Contains(page, "Book Reviews") || strings.Contains(page, "glyphicon-star") {
			t.Fatal("productpage with all-v1 should show reviews without stars")
		}
	})

	t.Run("virtual-service-reviews-test-v2: jason gets v2, everyone else v1", func(t *testing.T) {
		e.mustKubectl(t, "apply", "-f", manifest("virtual-service-reviews-test-v2.yaml"))
		eventually(t, "jason on v2", 60*time.Second, func() error {
			return wantVersions(e.reviewsVersions(t, "jason", 20), map[string]bool{"v2": true})
		})
		if err := wantVersions(e.reviewsVersions(t, "", 20), map[string]bool{"v1": true}); err != nil {
			t.Fatal(err)
		}
		if page := e.productpage(t, "jason"); !strings.Contains(page, `color="black"`) {
			t.Fatalf("productpage signed in as jason should show black stars (reviews v2):\n%s", pageSummary(page))
		}
	})

	t.Run("virtual-service-reviews-50-v3: half v1, half v3", func(t *testing.T) {
		e.mustKubectl(t, "apply", "-f", manifest("virtual-service-reviews-50-v3.yaml"))
		eventually(t, "v3 appears", 60*time.Second, func() error {
			return wantVersions(e.reviewsVersions(t, "", 10), map[string]bool{"v1": true, "v3": true})
		})
		const n = 200
		got := e.reviewsVersions(t, "", n)
		if got["v2"] != 0 || got["v1"]+got["v3"] != n {
			t.Fatalf("versions %v, want only v1 and v3", got)
		}
		// Binomial(200, 0.5): sd = 7.07; accept 4 sd (p of a false failure
		// ~6e-5).
		if d := math.Abs(float64(got["v1"]) - n/2); d > 4*math.Sqrt(n*0.25) {
			t.Fatalf("v1 %d of %d: more than 4 standard deviations from 50%%", got["v1"], n)
		}
		t.Logf("50/50 split over %d requests: %v", n, got)
	})

	testWaypointDelegate(t, e)

	t.Run("fault injection: 7s delay and HTTP 500 abort for jason on ratings", func(t *testing.T) {
		e.mustKubectl(t, "apply", "-f", manifest("virtual-service-all-v1.yaml"))
		e.mustKubectl(t, "apply", "-f", manifest("virtual-service-reviews-test-v2.yaml"))
		e.mustKubectl(t, "apply", "-f", manifest("virtual-service-ratings-test-delay.yaml"))
		eventually(t, "jason's page degrades after productpage's 2 x 3 s reviews budget", 90*time.Second, func() error {
			began := time.Now()
			page := e.productpage(t, "jason")
			took := time.Since(began)
			if !strings.Contains(page, "Sorry, product reviews are currently unavailable for this book.") {
				return fmt.Errorf("page after %s does not say reviews are unavailable:\n%s", took, pageSummary(page))
			}
			if took < 5*time.Second {
				return fmt.Errorf("reviews unavailable after %s: want the delay to cause it (~6 s)", took)
			}
			t.Logf("delay fault: reviews unavailable after %s", took.Round(100*time.Millisecond))
			return nil
		})
		if page := e.productpage(t, ""); !strings.Contains(page, "Book Reviews") || strings.Contains(page, "currently unavailable") {
			t.Fatal("other users are not delayed")
		}
		e.mustKubectl(t, "apply", "-f", manifest("virtual-service-ratings-test-abort.yaml"))
		eventually(t, "jason sees the ratings abort", 60*time.Second, func() error {
			if page := e.productpage(t, "jason"); !strings.Contains(page, "Ratings service is currently unavailable") {
				return fmt.Errorf("no ratings-unavailable message")
			}
			return nil
		})
	})

	t.Run("a route timeout cuts a delay", func(t *testing.T) {
		e.applyYAML(t, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - fault:
      delay: {percentage: {value: 100}, fixedDelay: 2s}
    route:
    - destination: {host: ratings, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v2}
    timeout: 0.5s
`)
		eventually(t, "reviews answers 504 after ~0.5 s", 60*time.Second, func() error {
			began := time.Now()
			code := e.httpCode(t, "default", "deploy/curl", "http://reviews:9080/reviews/0")
			took := time.Since(began)
			if code != "504" || took > 1900*time.Millisecond {
				return fmt.Errorf("HTTP %s after %s", code, took)
			}
			return nil
		})
		e.mustKubectl(t, "apply", "-f", manifest("virtual-service-all-v1.yaml"))
	})

	t.Run("retries turn a flaky 503 into 200", func(t *testing.T) {
		e.mustKubectl(t, "set", "env", "deployment/ratings-v1", "FAIL_EVERY=2")
		e.mustKubectl(t, "rollout", "status", "deployment/ratings-v1", "--timeout=120s")
		t.Cleanup(func() { e.kubectl("set", "env", "deployment/ratings-v1", "FAIL_EVERY-") })
		e.applyYAML(t, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings, subset: v1}
    retries: {attempts: 0}
`)
		eventually(t, "without retries the flakiness shows", 60*time.Second, func() error {
			if codes := e.codes(t, "http://ratings:9080/ratings/0", 10); codes["503"] == 0 {
				return fmt.Errorf("codes %v: no 503 without retries", codes)
			}
			return nil
		})
		e.applyYAML(t, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings, subset: v1}
    retries: {attempts: 3, retryOn: 5xx}
`)
		eventually(t, "with retries every request succeeds", 60*time.Second, func() error {
			if codes := e.codes(t, "http://ratings:9080/ratings/0", 20); codes["200"] != 20 {
				return fmt.Errorf("codes %v", codes)
			}
			return nil
		})
	})

	t.Run("sourceNamespace: the client's verified namespace picks the route, forged headers do not", func(t *testing.T) {
		testWaypointSourceNamespace(t, e)
	})

	t.Run("tls route: the waypoint routes TLS by SNI without terminating it", func(t *testing.T) { testWaypointTLSRoute(t, e) })

	t.Run("L7 AuthorizationPolicy: GET /productpage only for the named principal", func(t *testing.T) {
		e.applyYAML(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: productpage-viewer, namespace: default}
spec:
  targetRefs:
  - {kind: Service, group: "", name: productpage}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/curl"]}
    to:
    - operation: {methods: ["GET"], paths: ["/productpage"]}
`)
		t.Cleanup(func() { e.kubectl("delete", "authorizationpolicy", "productpage-viewer", "--ignore-not-found") })
		eventually(t, "ratings gets 403, curl 200", 60*time.Second, func() error {
			if code := e.httpCode(t, "default", "deploy/ratings-v1", "http://productpage:9080/productpage"); code != "403" {
				return fmt.Errorf("ratings: HTTP %s", code)
			}
			if code := e.httpCode(t, "default", "deploy/curl", "http://productpage:9080/productpage"); code != "200" {
				return fmt.Errorf("curl: HTTP %s", code)
			}
			return nil
		})
		if code := e.httpCode(t, "default", "deploy/curl", "http://productpage:9080/api/v1/products"); code != "403" {
			t.Fatalf("curl on another path: HTTP %s, want 403", code)
		}
	})

	t.Run("JWT: RequestAuthentication, requestPrincipals, claims DENY, dry-run", func(t *testing.T) { testWaypointJWT(t, e) })
	t.Run("JWT: a JWKS served in the cluster (jwksUri)", func(t *testing.T) { testWaypointJWKSURI(t, e) })
	t.Run("external authorization: Istio's ext-authz task, gRPC and HTTP providers", func(t *testing.T) { testWaypointExtAuthz(t, e) })
	t.Run("L4 dry-run: a dry-run DENY at the node agent is logged and counted, not enforced", func(t *testing.T) { testNodeAgentDryRun(t, e) })
	t.Run("AUDIT: matching requests are marked in the waypoint's access log", func(t *testing.T) { testWaypointAudit(t, e) })

	t.Run("local rate limit: Istio's EnvoyFilter, 10 req/s on details, productpage unaffected, a malformed one reported", func(t *testing.T) {
		testWaypointRateLimit(t, e)
	})

	t.Run("locality: DestinationRule localityLbSetting keeps requests in the waypoint's zone, fails over, distributes", func(t *testing.T) {
		testWaypointLocality(t, e)
	})

	t.Run("waypoint metrics carry response codes and both principals", func(t *testing.T) {
		m, err := e.podMetrics(t, "gateway.networking.k8s.io/gateway-name=waypoint")
		if err != nil {
			t.Fatal(err)
		}
		want := regexp.MustCompile(`istio_requests_total\{[^}]*destination_principal="spiffe://cluster.local/ns/default/sa/bookinfo-reviews"[^}]*reporter="waypoint"[^}]*response_code="200"[^}]*source_principal="spiffe://cluster.local/ns/default/sa/curl"`)
		if !want.MatchString(m) {
			t.Fatalf("no istio_requests_total for curl -> reviews with both principals:\n%s", grepLines(m, "istio_requests_total"))
		}
		if !strings.Contains(m, `response_code="403"`) || !strings.Contains(m, `response_code="503"`) {
			t.Errorf("the 403s and 503s of earlier cases are not counted:\n%s", grepLines(m, "istio_requests_total"))
		}
	})

	// weft-waypoint starts pkg/gomaxprocs, as weft-node-agent does
	// (TestNodeAgent): an idle waypoint leaves Go's default for one P.
	t.Run("an idle waypoint runs on one P (GOMAXPROCS follows its load)", func(t *testing.T) {
		eventually(t, "go_sched_gomaxprocs_threads 1", 30*time.Second, func() error {
			m, err := e.podMetrics(t, "gateway.networking.k8s.io/gateway-name=waypoint")
			if err != nil {
				return err
			}
			n, err := metricValue(m, "go_sched_gomaxprocs_threads")
			if err == nil && n != 1 {
				err = fmt.Errorf("go_sched_gomaxprocs_threads %g", n)
			}
			return err
		})
	})

	t.Run("a waypoint for one service serves only that service", func(t *testing.T) {
		e.applyYAML(t, `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: reviews-waypoint
  namespace: default
  labels: {istio.io/waypoint-for: service}
spec:
  gatewayClassName: weft-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
`)
		e.mustKubectl(t, "wait", "--for=condition=Programmed", "gateway/reviews-waypoint", "--timeout=120s")
		e.mustKubectl(t, "label", "service", "reviews", "istio.io/use-waypoint=reviews-waypoint")
		eventually(t, "reviews requests reach the reviews waypoint", 60*time.Second, func() error {
			e.reviewsVersions(t, "", 5)
			m, err := e.podMetrics(t, "gateway.networking.k8s.io/gateway-name=reviews-waypoint")
			if err != nil {
				return err
			}
			if !strings.Contains(m, `destination_service="reviews.default.svc.cluster.local"`) {
				return fmt.Errorf("no reviews requests counted by reviews-waypoint")
			}
			return nil
		})
		e.httpCode(t, "default", "deploy/curl", "http://details:9080/details/0")
		m, err := e.podMetrics(t, "gateway.networking.k8s.io/gateway-name=reviews-waypoint")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(m, `destination_service="details.default.svc.cluster.local"`) {
			t.Fatal("reviews-waypoint served details")
		}
	})

	// Last: it replaces the waypoint's pod.
	t.Run("waypoint rollout: a kept-alive client's requests in flight are answered, none fails", func(t *testing.T) {
		testWaypointRollout(t, e)
	})
}
