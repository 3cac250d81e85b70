package e2e

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The local rate limit of testWaypointRateLimit: 10 requests per second,
// a token every 100 ms (fills of one token keep the count within one token
// of the rate at any instant), and a burst of 10.
const (
	rateLimit     = 10 // per second
	rateBurst     = 10 // max_tokens
	rateClient    = 40 // the client's requests per second, 4x the limit
	rateRequests  = 400
	rateTolerance = 0.10
)

// rateLimitFilters are Istio's rate-limit task's per-route EnvoyFilter,
// bound to the waypoint, limiting details, and a malformed one (a fill
// interval Envoy refuses, a Lua filter).
var rateLimitFilters = fmt.Sprintf(`apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: details-ratelimit, namespace: default}
spec:
  targetRefs:
  - {kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      listener:
        filterChain:
          filter: {name: "envoy.filters.network.http_connection_manager"}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: http_local_rate_limiter
  - applyTo: HTTP_ROUTE
    match:
      routeConfiguration:
        vhost:
          name: details.default.svc.cluster.local
          route: {action: ANY}
    patch:
      operation: MERGE
      value:
        typed_per_filter_config:
          envoy.filters.http.local_ratelimit:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value:
              stat_prefix: http_local_rate_limiter
              token_bucket: {max_tokens: %d, tokens_per_fill: 1, fill_interval: %s}
              filter_enabled:
                runtime_key: local_rate_limit_enabled
                default_value: {numerator: 100, denominator: HUNDRED}
              filter_enforced:
                runtime_key: local_rate_limit_enforced
                default_value: {numerator: 100, denominator: HUNDRED}
              response_headers_to_add:
              - append: false
                header: {key: x-local-rate-limit, value: "true"}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: malformed, namespace: default}
spec:
  targetRefs:
  - {kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}
  configPatches:
  - applyTo: HTTP_FILTER
    patch:
      operation: INSERT_FIRST
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          stat_prefix: too-fast
          token_bucket: {max_tokens: 1, fill_interval: 0.01s}
          filter_enabled: {default_value: {numerator: 100}}
          filter_enforced: {default_value: {numerator: 100}}
  - applyTo: HTTP_FILTER
    patch:
      operation: INSERT_FIRST
      value:
        name: envoy.filters.http.lua
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
`, rateBurst, fmt.Sprintf("%gs", (time.Second/rateLimit).Seconds()))

// testWaypointRateLimit: Istio's local rate limit EnvoyFilter on the
// waypoint limits details to 10 requests per second (429 with the task's
// header for the excess, within 10 % of the limit over a 10 s window);
// productpage, on the same waypoint, is not limited; a malformed
// EnvoyFilter is reported in its status and changes nothing.
func testWaypointRateLimit(t *testing.T, e *env) {
	e.applyYAML(t, rateLimitFilters)
	t.Cleanup(func() { e.kubectl("delete", "envoyfilter", "details-ratelimit", "malformed", "--ignore-not-found") })
	eventually(t, "details answers 429 from the waypoint past the burst", 60*time.Second, func() error {
		out, _ := e.kubectl("exec", "deploy/curl", "--", "curl", "-sS", "-o", "/dev/null", "-D", "-",
			fmt.Sprintf("http://details:9080/details/[1-%d]", 2*rateBurst))
		if !strings.Contains(out, " 429") || !strings.Contains(strings.ToLower(out), "x-local-rate-limit: true") {
			return fmt.Errorf("no 429 with x-local-rate-limit in %d requests:\n%.600s", 2*rateBurst, out)
		}
		return nil
	})
	eventually(t, "the EnvoyFilters' statuses", 60*time.Second, func() error {
		ok := e.mustKubectl(t, "get", "envoyfilter", "details-ratelimit", "-o", istioStatusPath)
		bad := e.mustKubectl(t, "get", "envoyfilter", "malformed", "-o", istioStatusPath)
		if !strings.Contains(ok, "True Accepted") {
			return fmt.Errorf("details-ratelimit: %q, want WeftAccepted True", ok)
		}
		for _, want := range []string{"False PartiallyInvalid", "fill_interval must be >= 50ms", "lua.v3.Lua\" is not supported", "WEFT0001"} {
			if !strings.Contains(bad, want) {
				return fmt.Errorf("malformed: %q lacks %q", bad, want)
			}
		}
		return nil
	})
	// The bucket refills to max_tokens in burst/limit seconds: the window
	// starts with a known burst.
	time.Sleep(2 * time.Second * rateBurst / rateLimit)
	ok, limited, window := e.rateWindow(t, fmt.Sprintf("http://details:9080/details/[1-%d]", rateRequests))
	if ok+limited != rateRequests {
		t.Fatalf("%d answers 200 and %d 429 of %d requests: other statuses", ok, limited, rateRequests)
	}
	if got := float64(rateRequests) / window.Seconds(); got < 2*rateLimit {
		t.Fatalf("the client sent %.1f requests/s, under twice the limit: the window does not test it", got)
	}
	// Within 10 % of the limit over the window, after the burst.
	want := rateBurst + rateLimit*window.Seconds()
	t.Logf("details over %s: %d x 200, %d x 429; the limit allows %.1f", window.Round(time.Millisecond), ok, limited, want)
	if math.Abs(float64(ok)-want) > rateTolerance*rateLimit*window.Seconds() {
		t.Errorf("%d requests passed in %s, want %.1f (burst %d + %d/s) within 10%%", ok, window, want, rateBurst, rateLimit)
	}
	ok, limited, _ = e.rateWindow(t, fmt.Sprintf("http://productpage:9080/health?i=[1-%d]", rateRequests))
	if ok != rateRequests {
		t.Errorf("productpage, not limited: %d x 200, %d x 429 of %d", ok, limited, rateRequests)
	}
}

// rateWindow sends the requests of glob (a curl URL glob of rateRequests
// URLs) at rateClient per second from the curl pod (one connection, curl's
// --rate) and counts the 200s and 429s; window is the time the curl run
// took in the pod.
func (e *env) rateWindow(t *testing.T, glob string) (ok, limited int, window time.Duration) {
	t.Helper()
	// The bodies go to stdout too (-o would name one file per URL): the
	// codes are read from lines of their own.
	script := fmt.Sprintf(`s=$(date +%%s%%N); curl -sS --rate %d/s -w '\n%%{http_code}\n' '%s'; e=$(date +%%s%%N); echo "window $((e-s))"`,
		rateClient, glob)
	out, err := e.kubectl("exec", "deploy/curl", "--", "sh", "-c", script)
	if err != nil {
		t.Fatalf("rate window: %v\n%.600s", err, out)
	}
	for _, l := range strings.Split(out, "\n") {
		switch {
		case l == "200":
			ok++
		case l == "429":
			limited++
		case strings.HasPrefix(l, "window "):
			ns, _ := strconv.ParseInt(strings.TrimPrefix(l, "window "), 10, 64)
			window = time.Duration(ns)
		}
	}
	if window == 0 {
		t.Fatalf("rate window: no duration in the output:\n%.600s", out)
	}
	return ok, limited, window
}
