package route

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

func allOn() *corev3.RuntimeFractionalPercent {
	return &corev3.RuntimeFractionalPercent{RuntimeKey: "ignored", DefaultValue: pct(100, typev3.FractionalPercent_HUNDRED)}
}

// lrl is the LocalRateLimit of Istio's rate-limit task: enabled and
// enforced for every request, with max tokens that refill every interval.
func lrl(max, perFill uint32, interval time.Duration) *localratelimitv3.LocalRateLimit {
	return &localratelimitv3.LocalRateLimit{
		StatPrefix:     "http_local_rate_limiter",
		TokenBucket:    &typev3.TokenBucket{MaxTokens: max, TokensPerFill: u32(perFill), FillInterval: dur(interval)},
		FilterEnabled:  allOn(),
		FilterEnforced: allOn(),
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{
			hvo("x-local-rate-limit", "true", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)},
	}
}

func lrlFilter(t testing.TB, c *localratelimitv3.LocalRateLimit) *hcmv3.HttpFilter {
	return httpFilter(t, localRateLimitName, c)
}

// rateCodes serves n requests for target and counts the statuses.
func rateCodes(p *Pipeline, n int, target string) map[int]int {
	out := map[int]int{}
	for range n {
		w, _ := serve(p, req("GET", target), nil)
		out[w.Code]++
	}
	return out
}

func TestLocalRateLimitTokenBucket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := newFake(nil)
		p := compile(t, hcmWith(t, lrlFilter(t, lrl(4, 2, time.Second))), rcOf(vhOf("v", []string{"*"}, toCluster("r", prefixMatch("/"), "c"))), up)
		// Full at the start: 4 pass, the 5th is limited.
		if got := rateCodes(p, 5, "/"); got[200] != 4 || got[429] != 1 {
			t.Fatalf("first burst: %v", got)
		}
		w, info := serve(p, req("GET", "/"), nil)
		if w.Code != 429 || w.Body.String() != "local_rate_limited" || info.ResponseFlags != "RL" ||
			info.Details != "local_rate_limited" || w.Header().Get("X-Local-Rate-Limit") != "true" {
			t.Fatalf("limited reply: %d %q flags %q details %q headers %v", w.Code, w.Body.String(), info.ResponseFlags, info.Details, w.Header())
		}
		// One fill adds tokens_per_fill, not max_tokens.
		time.Sleep(time.Second)
		if got := rateCodes(p, 3, "/"); got[200] != 2 || got[429] != 1 {
			t.Fatalf("after one fill: %v", got)
		}
		// Many fills stop at max_tokens.
		time.Sleep(10 * time.Second)
		if got := rateCodes(p, 5, "/"); got[200] != 4 || got[429] != 1 {
			t.Fatalf("after ten fills: %v", got)
		}
		// Just before the next fill there is still none.
		time.Sleep(999 * time.Millisecond)
		if got := rateCodes(p, 1, "/"); got[429] != 1 {
			t.Fatalf("before the fill: %v", got)
		}
		if n := len(up.Calls()); n != 10 {
			t.Fatalf("upstream saw %d requests, want the 10 that passed", n)
		}
	})
}

func TestLocalRateLimitConcurrent(t *testing.T) {
	// The bucket is shared by all requests (connections): 100 concurrent
	// requests on 10 tokens pass exactly 10 times.
	synctest.Test(t, func(t *testing.T) {
		p := compile(t, hcmWith(t, lrlFilter(t, lrl(10, 10, time.Minute))), rcOf(vhOf("v", []string{"*"}, toCluster("r", prefixMatch("/"), "c"))), newFake(nil))
		var mu sync.Mutex
		got := map[int]int{}
		var wg sync.WaitGroup
		for range 100 {
			wg.Go(func() {
				w, _ := serve(p, req("GET", "/"), nil)
				mu.Lock()
				got[w.Code]++
				mu.Unlock()
			})
		}
		wg.Wait()
		if got[200] != 10 || got[429] != 90 {
			t.Fatalf("%v", got)
		}
	})
}

func TestLocalRateLimitEnabledEnforced(t *testing.T) {
	rc := rcOf(vhOf("v", []string{"*"}, toCluster("r", prefixMatch("/"), "c")))
	t.Run("no filter_enabled: off", func(t *testing.T) {
		c := lrl(1, 1, time.Minute)
		c.FilterEnabled = nil
		p := compile(t, hcmWith(t, lrlFilter(t, c)), rc, newFake(nil))
		if got := rateCodes(p, 3, "/"); got[200] != 3 {
			t.Fatalf("%v", got)
		}
	})
	t.Run("not enforced: request headers, forwarded", func(t *testing.T) {
		c := lrl(1, 1, time.Minute)
		c.FilterEnforced = nil
		c.RequestHeadersToAddWhenNotEnforced = []*corev3.HeaderValueOption{hvo("x-would-limit", "1", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)}
		up := newFake(nil)
		p := compile(t, hcmWith(t, lrlFilter(t, c)), rc, up)
		if got := rateCodes(p, 2, "/"); got[200] != 2 {
			t.Fatalf("%v", got)
		}
		calls := up.Calls()
		if calls[0].Header.Get("X-Would-Limit") != "" || calls[1].Header.Get("X-Would-Limit") != "1" {
			t.Fatalf("headers: %v / %v", calls[0].Header, calls[1].Header)
		}
	})
	t.Run("enabled fraction sampled", func(t *testing.T) {
		// 50 %: rand 0 samples in (the 2nd request has no token left),
		// 50 out (the 3rd passes without a token).
		c := lrl(1, 1, time.Minute)
		c.FilterEnabled.DefaultValue = pct(50, typev3.FractionalPercent_HUNDRED)
		p := compile(t, hcmWith(t, lrlFilter(t, c)), rc, newFake(nil), Options{Rand: seqRand(0, 0, 50)})
		var got []int
		for range 3 {
			w, _ := serve(p, req("GET", "/"), nil)
			got = append(got, w.Code)
		}
		if got[0] != 200 || got[1] != 429 || got[2] != 200 {
			t.Fatalf("%v", got)
		}
	})
}

func TestLocalRateLimitPerRoute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Istio's task: the filter has no bucket and is off; per-route
		// configs set the limits. Each route's bucket is its own; a
		// virtual host's is shared by its routes without one.
		perRoute := func(r *routev3.Route, c *localratelimitv3.LocalRateLimit) *routev3.Route {
			r.TypedPerFilterConfig = map[string]*anypb.Any{localRateLimitName: mustAny(t, c)}
			return r
		}
		limited := vhOf("limited", []string{"limited"},
			perRoute(toCluster("a", prefixMatch("/a"), "c"), lrl(2, 2, time.Minute)),
			toCluster("b", prefixMatch("/b"), "c"),
			toCluster("c", prefixMatch("/c"), "c"))
		limited.TypedPerFilterConfig = map[string]*anypb.Any{localRateLimitName: mustAny(t, lrl(3, 3, time.Minute))}
		open := vhOf("open", []string{"open"}, toCluster("o", prefixMatch("/"), "c"))
		p := compile(t, hcmWith(t, lrlFilter(t, &localratelimitv3.LocalRateLimit{StatPrefix: "x"})), rcOf(limited, open), newFake(nil))
		count := func(host, path string, n int) map[int]int {
			out := map[int]int{}
			for range n {
				w, _ := serve(p, req("GET", path, "host", host), nil)
				out[w.Code]++
			}
			return out
		}
		if got := count("limited", "/a", 5); got[200] != 2 {
			t.Errorf("route a: %v", got)
		}
		if got := count("limited", "/b", 2); got[200] != 2 {
			t.Errorf("route b: %v", got)
		}
		if got := count("limited", "/c", 3); got[200] != 1 {
			t.Errorf("route c shares the virtual host's bucket with b: %v", got)
		}
		if got := count("open", "/", 20); got[200] != 20 {
			t.Errorf("open virtual host: %v", got)
		}
	})
}

func TestLocalRateLimitHeaders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := lrl(3, 3, 10*time.Second)
		c.EnableXRatelimitHeaders = ratelimitv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03
		c.EnableRetryAfterHeader = true
		p := compile(t, hcmWith(t, lrlFilter(t, c)), rcOf(vhOf("v", []string{"*"}, toCluster("r", prefixMatch("/"), "c"))), newFake(nil))
		time.Sleep(2500 * time.Millisecond)
		want := []struct {
			code                      int
			limit, remaining, reset   string
			retryAfter, localRLHeader string
		}{
			{200, "3", "2", "8", "", ""},
			{200, "3", "1", "8", "", ""},
			{200, "3", "0", "8", "", ""},
			{429, "3", "0", "8", "8", "true"},
		}
		for i, w := range want {
			r, _ := serve(p, req("GET", "/"), nil)
			h := r.Header()
			if r.Code != w.code || h.Get("X-Ratelimit-Limit") != w.limit || h.Get("X-Ratelimit-Remaining") != w.remaining ||
				h.Get("X-Ratelimit-Reset") != w.reset || h.Get("Retry-After") != w.retryAfter || h.Get("X-Local-Rate-Limit") != w.localRLHeader {
				t.Errorf("request %d: %d %v", i, r.Code, h)
			}
			if len(h["X-Envoy-Ratelimited"]) != 0 {
				t.Errorf("request %d: x-envoy-ratelimited is the global filter's header", i)
			}
		}
	})
}

func TestLocalRateLimitStatusAndGRPC(t *testing.T) {
	rc := rcOf(vhOf("v", []string{"*"}, toCluster("r", prefixMatch("/"), "c")))
	for _, tc := range []struct {
		name     string
		status   typev3.StatusCode
		resExh   bool
		grpc     bool
		wantCode int
		wantGRPC string
	}{
		{"custom status", typev3.StatusCode_ServiceUnavailable, false, false, 503, ""},
		{"status below 400 is 429", typev3.StatusCode_OK, false, false, 429, ""},
		{"gRPC: UNAVAILABLE", 0, false, true, 200, "14"},
		{"gRPC: RESOURCE_EXHAUSTED", 0, true, true, 200, "8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := lrl(1, 1, time.Minute)
			if tc.status != 0 {
				c.Status = &typev3.HttpStatus{Code: tc.status}
			}
			c.RateLimitedAsResourceExhausted = tc.resExh
			p := compile(t, hcmWith(t, lrlFilter(t, c)), rc, newFake(nil))
			serve(p, req("GET", "/"), nil)
			r := req("POST", "/pkg.Svc/M")
			if tc.grpc {
				r.Header.Set("Content-Type", "application/grpc")
			}
			w, _ := serve(p, r, nil)
			if w.Code != tc.wantCode || w.Header().Get("Grpc-Status") != tc.wantGRPC {
				t.Fatalf("%d grpc-status %q", w.Code, w.Header().Get("Grpc-Status"))
			}
		})
	}
}

func TestLocalRateLimitRejected(t *testing.T) {
	rc := func(c *localratelimitv3.LocalRateLimit) *routev3.RouteConfiguration {
		r := toCluster("r", prefixMatch("/"), "c")
		r.TypedPerFilterConfig = map[string]*anypb.Any{localRateLimitName: mustAny(t, c)}
		return rcOf(vhOf("v", []string{"*"}, r))
	}
	noBucket := lrl(1, 1, time.Second)
	noBucket.TokenBucket = nil
	fast := lrl(1, 1, 10*time.Millisecond)
	perConn := lrl(1, 1, time.Second)
	perConn.LocalRateLimitPerDownstreamConnection = true
	descr := lrl(1, 1, time.Second)
	descr.Descriptors = []*ratelimitv3.LocalRateLimitDescriptor{{}}
	for name, tc := range map[string]struct {
		c    *localratelimitv3.LocalRateLimit
		want string
	}{
		"per-route without token bucket": {noBucket, "token_bucket is required"},
		"fill interval under 50ms":       {fast, "fill_interval must be >= 50ms"},
		"per connection":                 {perConn, "local_rate_limit_per_downstream_connection is not supported"},
		"descriptors":                    {descr, "descriptors is not supported"},
	} {
		_, err := Compile(hcmWith(t, lrlFilter(t, &localratelimitv3.LocalRateLimit{StatPrefix: "x"})), rc(tc.c), newFake(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func BenchmarkLocalRateLimitTake(b *testing.B) {
	tb := newTokenBucket(1<<31, 1<<31, time.Hour)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tb.take()
		}
	})
}

// TestLocalRateLimitTranslated runs what control/waypoint renders of
// Istio's rate-limit EnvoyFilters (golden case ratelimit): the waypoint
// limits reviews per route (10 per second) and ratings per virtual host
// (5 per 10 s, x-ratelimit headers), not details; the gateway limits its
// listener (100 per minute).
func TestLocalRateLimitTranslated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		wp := goldenPipelines(t, "ratelimit", "waypoints", "default/waypoint", nil, Options{})
		count := func(p *Pipeline, host string, n int) (map[int]int, http.Header) {
			out := map[int]int{}
			var last http.Header
			for range n {
				w, _ := serve(p, req("GET", "/", "host", host), nil)
				out[w.Code]++
				last = w.Header()
			}
			return out, last
		}
		reviews := wp["reviews.default.svc.cluster.local:9080"]
		if got, h := count(reviews, "reviews:9080", 12); got[200] != 10 || got[429] != 2 || h.Get("X-Local-Rate-Limit") != "true" {
			t.Errorf("reviews: %v, last headers %v", got, h)
		}
		time.Sleep(time.Second)
		if got, _ := count(reviews, "reviews:9080", 12); got[200] != 10 {
			t.Errorf("reviews a second later: %v", got)
		}
		if got, h := count(wp["ratings.default.svc.cluster.local:9080"], "ratings:9080", 6); got[200] != 5 || got[429] != 1 ||
			h.Get("X-Ratelimit-Limit") != "5" || h.Get("X-Ratelimit-Remaining") != "0" {
			t.Errorf("ratings: %v, last headers %v", got, h)
		}
		if got, _ := count(wp["details.default.svc.cluster.local:9080"], "details:9080", 50); got[200] != 50 {
			t.Errorf("details is not limited: %v", got)
		}
		gw := goldenPipelines(t, "ratelimit", "gateways", "weft-ingress/weft-ingress", nil, Options{})
		if got, _ := count(gw["http.8080"], "bookinfo.example.com", 101); got[429] != 1 {
			t.Errorf("gateway: %v", got)
		}
	})
}
