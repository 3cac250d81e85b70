package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// ingressRateLimit is Istio's rate-limit task's filter-wide EnvoyFilter
// for the ingress gateway (workloadSelector of its pods): 5 requests per
// minute for every route, with the x-ratelimit headers.
const ingressRateLimit = `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: filter-local-ratelimit, namespace: weft-ingress}
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
            subFilter: {name: "envoy.filters.http.router"}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: http_local_rate_limiter
            token_bucket: {max_tokens: 5, tokens_per_fill: 5, fill_interval: 60s}
            filter_enabled:
              runtime_key: local_rate_limit_enabled
              default_value: {numerator: 100, denominator: HUNDRED}
            filter_enforced:
              runtime_key: local_rate_limit_enforced
              default_value: {numerator: 100, denominator: HUNDRED}
            enable_x_ratelimit_headers: DRAFT_VERSION_03
            response_headers_to_add:
            - append: false
              header: {key: x-local-rate-limit, value: "true"}
`

// testIngressRateLimit: the gateway answers 429 with the task's header and
// the x-ratelimit headers once its bucket is empty, the EnvoyFilter is
// accepted, and the gateway serves again once it is deleted. url is
// /api/v1/products through the gateway.
func testIngressRateLimit(t *testing.T, e *env, client *http.Client, url string) {
	e.applyYAML(t, ingressRateLimit)
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			e.kubectl("-n", "weft-ingress", "delete", "envoyfilter", "filter-local-ratelimit", "--ignore-not-found")
		}
	})
	get := func() (int, http.Header, error) {
		resp, err := client.Get(url)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header, err
	}
	eventually(t, "the gateway answers 429 once 5 requests took the bucket", 60*time.Second, func() error {
		code, h, err := get()
		if err != nil {
			return err
		}
		if code != http.StatusTooManyRequests {
			return fmt.Errorf("HTTP %d", code)
		}
		if h.Get("X-Local-Rate-Limit") != "true" || h.Get("X-Ratelimit-Limit") != "5" || h.Get("X-Ratelimit-Remaining") != "0" {
			return fmt.Errorf("429 without the filter's headers: %v", h)
		}
		return nil
	})
	st := e.mustKubectl(t, "-n", "weft-ingress", "get", "envoyfilter", "filter-local-ratelimit", "-o", istioStatusPath)
	if !strings.Contains(st, "True Accepted") {
		t.Errorf("EnvoyFilter status %q, want WeftAccepted True", st)
	}
	e.mustKubectl(t, "-n", "weft-ingress", "delete", "envoyfilter", "filter-local-ratelimit")
	deleted = true
	eventually(t, "the gateway serves again without the EnvoyFilter", 60*time.Second, func() error {
		if code, _, err := get(); err != nil || code != http.StatusOK {
			return fmt.Errorf("HTTP %d %v", code, err)
		}
		return nil
	})
}
