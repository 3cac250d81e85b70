package route

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// benchConfig is one virtual host with 50 routes, each a prefix + header
// match (the Bookinfo "end-user: jason" shape), plus a default route.
func benchConfig(mod func(*routev3.RouteAction)) *routev3.RouteConfiguration {
	var routes []*routev3.Route
	for i := 0; i < 50; i++ {
		m := prefixMatch(fmt.Sprintf("/svc%d/", i))
		m.Headers = []*routev3.HeaderMatcher{hdr("x-version", exact(fmt.Sprintf("v%d", i)))}
		a := clusterAction(fmt.Sprintf("outbound|9080|v%d|reviews.default.svc.cluster.local", i))
		if mod != nil {
			mod(a)
		}
		routes = append(routes, withAction(fmt.Sprintf("default/reviews.%d", i), m, a))
	}
	routes = append(routes, toCluster("default", prefixMatch("/"), "outbound|9080||reviews.default.svc.cluster.local"))
	return rcOf(vhOf("reviews.default.svc.cluster.local", []string{
		"reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local:9080", "reviews", "reviews:9080", "10.96.0.10", "10.96.0.10:9080", "*"}, routes...))
}

func BenchmarkRouteMatch(b *testing.B) {
	p := compile(b, nil, benchConfig(nil), newFake(nil))
	r := httptest.NewRequest("GET", "/svc39/reviews/0?x=1", nil)
	r.Host = "reviews:9080"
	r.Header.Set("X-Version", "v39")
	r.Header.Set("User-Agent", "bench")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		v := newReqView(r, r.RequestURI)
		rt, _ := p.match(&v)
		if rt == nil || rt.name != "default/reviews.39" {
			b.Fatalf("matched %v", rt)
		}
	}
}

// staticUpstream answers every request with a small 200.
type staticUpstream struct{}

var benchBody = strings.Repeat("x", 1024)

func (staticUpstream) RoundTrip(req *http.Request, _ string, _ uint64, _ bool) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/plain"}},
		Body: io.NopCloser(strings.NewReader(benchBody)), ContentLength: int64(len(benchBody))}, nil
}

// discardWriter is a reusable ResponseWriter.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(s int)           { w.status = s }
func (w *discardWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }
func (w *discardWriter) Flush()                      {}

func benchServe(b *testing.B, mod func(*routev3.RouteAction)) {
	p := compile(b, hcmWith(b), benchConfig(mod), staticUpstream{})
	r := httptest.NewRequest("GET", "/svc39/reviews/0", nil)
	r.Host = "reviews:9080"
	r.Header.Set("X-Version", "v39")
	r.Header.Set("User-Agent", "bench")
	r.Header.Set("Accept", "*/*")
	w := &discardWriter{h: make(http.Header, 4)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		clear(w.h)
		p.ServeHTTP(w, r)
		if w.status != 200 || w.n == 0 {
			b.Fatalf("status %d", w.status)
		}
	}
}

func BenchmarkPipelineServeHTTP(b *testing.B) { benchServe(b, nil) }

// With Istio's typical retry policy and a route timeout (timers, contexts).
func BenchmarkPipelineServeHTTPRetryTimeout(b *testing.B) {
	benchServe(b, func(a *routev3.RouteAction) {
		a.Timeout = dur(10 * time.Second)
		a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", NumRetries: u32(2)}
	})
}
