package route

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestWeightedClusters(t *testing.T) {
	a := &routev3.RouteAction{Timeout: dur(0), ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
		Clusters: []*routev3.WeightedCluster_ClusterWeight{
			{Name: "v1", Weight: u32(50), RequestHeadersToAdd: []*corev3.HeaderValueOption{hvo("x-subset", "v1", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)},
				ResponseHeadersToAdd: []*corev3.HeaderValueOption{hvo("x-served", "v1", 0)}},
			{Name: "none", Weight: u32(0)},
			{Name: "v3", Weight: u32(50), RequestHeadersToRemove: []string{"x-drop"}},
		}}}}
	// rand % 100: 0..49 -> v1, 50..99 -> v3 (Envoy's cumulative walk).
	for _, tc := range []struct {
		rnd  uint64
		want string
	}{{0, "v1"}, {49, "v1"}, {50, "v3"}, {99, "v3"}, {149, "v1"}} {
		up := newFake(nil)
		p := compile(t, nil, rcOf(vhOf("v", []string{"*"}, withAction("w", prefixMatch("/"), a))), up, Options{Rand: seqRand(tc.rnd)})
		w, info := serve(p, req("GET", "/", "x-drop", "1"), nil)
		c := up.Calls()[0]
		if c.Cluster != tc.want || info.Cluster != tc.want {
			t.Fatalf("rnd %d: cluster %q (info %q), want %q", tc.rnd, c.Cluster, info.Cluster, tc.want)
		}
		switch tc.want {
		case "v1":
			if c.Header.Get("X-Subset") != "v1" || w.Header().Get("X-Served") != "v1" || c.Header.Get("X-Drop") != "1" {
				t.Errorf("v1 header ops not applied: req %v resp %v", c.Header, w.Header())
			}
		case "v3":
			if c.Header.Get("X-Subset") != "" || c.Header.Get("X-Drop") != "" {
				t.Errorf("v3 header ops wrong: %v", c.Header)
			}
		}
	}
	// Statistical sanity with the real random source.
	up := newFake(nil)
	p := compile(t, nil, rcOf(vhOf("v", []string{"*"}, withAction("w", prefixMatch("/"), a))), up)
	n := map[string]int{}
	for i := 0; i < 2000; i++ {
		_, info := serve(p, req("GET", "/"), nil)
		n[info.Cluster]++
	}
	if n["none"] != 0 || n["v1"] < 850 || n["v3"] < 850 {
		t.Errorf("distribution %v", n)
	}
}

func TestRewrites(t *testing.T) {
	ci := prefixMatch("/API/")
	ci.CaseSensitive = wrapperspb.Bool(false)
	for _, tc := range []struct {
		name     string
		m        *routev3.RouteMatch
		prefixRw string
		regexRw  *matcherv3.RegexMatchAndSubstitute
		host     string
		in       string
		wantURI  string
		wantHost string
	}{
		{"prefix", prefixMatch("/reviews"), "/v2/reviews", nil, "", "/reviews/1?x=y", "/v2/reviews/1?x=y", "svc"},
		{"prefix to root keeps slash-join literal", prefixMatch("/prefix"), "/", nil, "", "/prefix/etc", "//etc", "svc"},
		{"prefix with slash", prefixMatch("/prefix/"), "/", nil, "", "/prefix/etc", "/etc", "svc"},
		{"case-insensitive prefix", ci, "/v1/", nil, "", "/api/users", "/v1/users", "svc"},
		{"exact path", pathMatch("/old"), "/new", nil, "", "/old?q=1", "/new?q=1", "svc"},
		{"regex route replaces whole path", regexMatch(`/item/[0-9]+`), "/items", nil, "", "/item/7?z", "/items?z", "svc"},
		{"regex_rewrite", prefixMatch("/"), "", &matcherv3.RegexMatchAndSubstitute{
			Pattern: &matcherv3.RegexMatcher{Regex: `^/service/([^/]+)(/.*)$`}, Substitution: `\2/instance/\1`}, "", "/service/foo/v1/api?k=v", "/v1/api/instance/foo?k=v", "svc"},
		{"host_rewrite_literal", prefixMatch("/"), "", nil, "ratings.prod", "/x", "/x", "ratings.prod"},
	} {
		a := clusterAction("c")
		a.PrefixRewrite = tc.prefixRw
		a.RegexRewrite = tc.regexRw
		if tc.host != "" {
			a.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: tc.host}
		}
		up := newFake(nil)
		p := compile(t, nil, rcOf(vhOf("v", []string{"*"}, withAction("r", tc.m, a))), up)
		w, _ := serve(p, req("GET", tc.in, "host", "svc"), nil)
		if w.Code != 200 {
			t.Fatalf("%s: status %d", tc.name, w.Code)
		}
		c := up.Calls()[0]
		if c.URI != tc.wantURI || c.Host != tc.wantHost {
			t.Errorf("%s: upstream %s %q, want %s %q", tc.name, c.Host, c.URI, tc.wantHost, tc.wantURI)
		}
		if tc.prefixRw != "" || tc.regexRw != nil {
			if got := c.Header.Get("X-Envoy-Original-Path"); got != tc.in {
				t.Errorf("%s: x-envoy-original-path %q", tc.name, got)
			}
		}
	}
}

func TestHeaderMutations(t *testing.T) {
	a := clusterAction("c")
	r := withAction("r", prefixMatch("/"), a)
	r.RequestHeadersToAdd = []*corev3.HeaderValueOption{
		hvo("x-append", "route", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
		hvo("x-set", "route", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		hvo("x-absent", "route", corev3.HeaderValueOption_ADD_IF_ABSENT),
		hvo("x-only-if", "route", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS),
		hvo("x-order", "route", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		hvo("x-empty", "", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
		{Header: &corev3.HeaderValue{Key: "x-legacy", Value: "route"}, Append: wrapperspb.Bool(false)},
	}
	r.RequestHeadersToRemove = []string{"x-secret"}
	r.ResponseHeadersToAdd = []*corev3.HeaderValueOption{hvo("x-resp", "route", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)}
	r.ResponseHeadersToRemove = []string{"server"}
	vh := vhOf("v", []string{"*"}, r)
	vh.RequestHeadersToAdd = []*corev3.HeaderValueOption{hvo("x-order", "vhost", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)}
	vh.ResponseHeadersToAdd = []*corev3.HeaderValueOption{hvo("x-resp-vh", "vhost", 0)}
	rc := rcOf(vh)
	rc.RequestHeadersToAdd = []*corev3.HeaderValueOption{hvo("x-order", "global", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)}
	up := newFake(func(int, *http.Request, string) (*http.Response, error) {
		return resp(200, "x", "Server", "backend", "X-Resp", "backend"), nil
	})
	p := compile(t, nil, rc, up)
	w, _ := serve(p, req("GET", "/", "x-append", "client", "x-set", "client", "x-absent", "client", "x-secret", "s", "x-legacy", "client"), nil)
	h := up.Calls()[0].Header
	check := func(k string, want ...string) {
		t.Helper()
		if got := h.Values(k); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("request %s = %q, want %q", k, got, want)
		}
	}
	check("x-append", "client", "route")
	check("x-set", "route")
	check("x-absent", "client")
	check("x-only-if") // absent -> not added
	check("x-secret")
	check("x-empty")
	check("x-legacy", "route")
	// Envoy default order: route, then vhost, then route config (least
	// specific last, so its overwrite/append wins).
	check("x-order", "vhost", "global")
	if w.Header().Get("X-Resp") != "route" || w.Header().Get("Server") != "" || w.Header().Get("X-Resp-Vh") != "vhost" {
		t.Errorf("response headers %v", w.Header())
	}

	// most_specific_header_mutations_wins reverses the order.
	rc.MostSpecificHeaderMutationsWins = true
	up = newFake(nil)
	p = compile(t, nil, rc, up)
	serve(p, req("GET", "/"), nil)
	if got := up.Calls()[0].Header.Values("x-order"); strings.Join(got, "|") != "route" {
		t.Errorf("most specific wins: x-order %q", got)
	}
}

func TestRetries(t *testing.T) {
	connFail := func(int, *http.Request, string) (*http.Response, error) {
		return nil, fmt.Errorf("dial: %w", ErrConnectFailure)
	}
	errs := func(es ...error) scriptFunc {
		return func(n int, _ *http.Request, _ string) (*http.Response, error) {
			e := es[min(n, len(es)-1)]
			if e == nil {
				return resp(200, "ok"), nil
			}
			return nil, e
		}
	}
	grpcStatus := func(codes ...string) scriptFunc {
		return func(n int, _ *http.Request, _ string) (*http.Response, error) {
			return resp(200, "", "Content-Type", "application/grpc", "Grpc-Status", codes[min(n, len(codes)-1)]), nil
		}
	}
	for _, tc := range []struct {
		name       string
		policy     *routev3.RetryPolicy
		script     scriptFunc
		wantCalls  int
		wantStatus int
		wantFlags  string
	}{
		{"5xx retried then ok", &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(2)}, statuses(503, 500, 200), 3, 200, ""},
		{"5xx exhausted -> last response + URX", &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(2)}, statuses(503), 3, 503, "URX"},
		{"num_retries defaults to 1", &routev3.RetryPolicy{RetryOn: "5xx"}, statuses(503), 2, 503, "URX"},
		{"num_retries 0", &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(0)}, statuses(503), 1, 503, "URX"},
		{"gateway-error ignores 500", &routev3.RetryPolicy{RetryOn: "gateway-error", NumRetries: u32(3)}, statuses(500), 1, 500, ""},
		{"gateway-error retries 502/504", &routev3.RetryPolicy{RetryOn: "gateway-error", NumRetries: u32(3)}, statuses(502, 504, 200), 3, 200, ""},
		{"retriable-4xx is 409 only", &routev3.RetryPolicy{RetryOn: "retriable-4xx", NumRetries: u32(3)}, statuses(409, 404), 2, 404, ""},
		{"retriable-status-codes", &routev3.RetryPolicy{RetryOn: "retriable-status-codes", RetriableStatusCodes: []uint32{418}, NumRetries: u32(3)}, statuses(418, 200), 2, 200, ""},
		{"no retry_on condition met", &routev3.RetryPolicy{RetryOn: "connect-failure", NumRetries: u32(3)}, statuses(503), 1, 503, ""},
		{"connect-failure", &routev3.RetryPolicy{RetryOn: "connect-failure", NumRetries: u32(3)}, errs(ErrConnectFailure, nil), 2, 200, ""},
		{"connect failure exhausted", &routev3.RetryPolicy{RetryOn: "connect-failure", NumRetries: u32(1)}, connFail, 2, 503, "UF,URX"},
		{"5xx covers connect failure", &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(1)}, errs(ErrConnectFailure, nil), 2, 200, ""},
		{"reset covers resets", &routev3.RetryPolicy{RetryOn: "reset", NumRetries: u32(1)}, errs(io.ErrUnexpectedEOF, nil), 2, 200, ""},
		{"refused-stream", &routev3.RetryPolicy{RetryOn: "refused-stream", NumRetries: u32(1)}, errs(ErrRefusedStream, nil), 2, 200, ""},
		{"refused-stream does not cover resets", &routev3.RetryPolicy{RetryOn: "refused-stream", NumRetries: u32(1)}, errs(io.ErrUnexpectedEOF), 1, 503, "UC"},
		{"overflow never retried", &routev3.RetryPolicy{RetryOn: "5xx,reset,connect-failure", NumRetries: u32(3)}, errs(ErrOverflow), 1, 503, "UO"},
		{"no healthy upstream not retried", &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(3)}, errs(ErrNoHealthyUpstream), 1, 503, "UH"},
		{"grpc unavailable", &routev3.RetryPolicy{RetryOn: "unavailable", NumRetries: u32(2)}, grpcStatus("14", "0"), 2, 200, ""},
		{"grpc cancelled, deadline, exhausted", &routev3.RetryPolicy{RetryOn: "cancelled,deadline-exceeded,resource-exhausted", NumRetries: u32(5)}, grpcStatus("1", "4", "8", "0"), 4, 200, ""},
		{"grpc status not listed", &routev3.RetryPolicy{RetryOn: "unavailable", NumRetries: u32(2)}, grpcStatus("8"), 1, 200, ""},
		{"no policy: no retry", nil, statuses(503), 1, 503, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := clusterAction("c")
			if tc.policy != nil {
				tc.policy.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: dur(time.Millisecond)}
			}
			a.RetryPolicy = tc.policy
			up := newFake(tc.script)
			p := compile(t, nil, rcOf(vhOf("v", []string{"*"}, withAction("r", prefixMatch("/"), a))), up)
			w, info := serve(p, req("GET", "/"), nil)
			if n := len(up.Calls()); n != tc.wantCalls || info.Attempts != tc.wantCalls {
				t.Errorf("calls %d (Attempts %d), want %d", n, info.Attempts, tc.wantCalls)
			}
			if w.Code != tc.wantStatus || info.ResponseFlags != tc.wantFlags {
				t.Errorf("status %d flags %q, want %d %q (body %q)", w.Code, info.ResponseFlags, tc.wantStatus, tc.wantFlags, w.Body.String())
			}
		})
	}
}

func TestBackoffJitter(t *testing.T) {
	rp, err := compileRetry(&routev3.RetryPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	if rp.numRetries != 1 || rp.base != 25*time.Millisecond || rp.max != 250*time.Millisecond {
		t.Fatalf("defaults %+v", rp)
	}
	max := func() uint64 { return ^uint64(0) >> 1 }
	for n, want := range map[int]time.Duration{1: 25 * time.Millisecond, 2: 75 * time.Millisecond, 3: 175 * time.Millisecond, 4: 250 * time.Millisecond, 40: 250 * time.Millisecond} {
		if got := rp.backoff(n, max); got >= want+time.Millisecond || got > rp.max {
			t.Errorf("backoff(%d) = %v, want < %v", n, got, want)
		}
	}
	if got := rp.backoff(1, func() uint64 { return 0 }); got != 0 {
		t.Errorf("backoff zero rand = %v", got)
	}
}

func TestTimeouts(t *testing.T) {
	slow := func(d time.Duration) scriptFunc {
		return func(n int, r *http.Request, _ string) (*http.Response, error) {
			select {
			case <-time.After(d):
				return resp(200, "late"), nil
			case <-r.Context().Done():
				return nil, r.Context().Err()
			}
		}
	}
	t.Run("route timeout -> 504 UT", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			a := clusterAction("c")
			a.Timeout = dur(50 * time.Millisecond)
			up := newFake(slow(5 * time.Second))
			p := compile(t, nil, rcOf(vhOf("v", []string{"*"}, withAction("r", prefixMatch("/"), a))), up)
			start := time.Now()
			w, info := serve(p, req("GET", "/"), nil)
			if el := time.Since(start); el > 2*time.Second {
				t.Fatalf("took %v", el)
			}
			if w.Code != 504 || info.ResponseFlags != "UT" || w.Body.String() != "upstream request timeout" || info.Details != "upstream_response_timeout" {
				t.Fatalf("got %d %q %q %q", w.Code, info.ResponseFlags, w.Body.String(), info.Details)
			}
		})
	})
	t.Run("route timeout covers retries", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			a := clusterAction("c")
			a.Timeout = dur(120 * time.Millisecond)
			a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(100), PerTryTimeout: dur(30 * time.Millisecond),
				RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: dur(time.Millisecond)}}
			up := newFake(slow(5 * time.Second))
			p := compile(t, nil, rcOf(vhOf("v", []string{"*"}, withAction("r", prefixMatch("/"), a))), up)
			start := time.Now()
			w, info := serve(p, req("GET", "/"), nil)
			if el := time.Since(start); el > 2*time.Second {
				t.Fatalf("took %v", el)
			}
			if w.Code != 504 || !strings.Contains(info.ResponseFlags, "UT") || info.Attempts < 2 || info.Attempts > 5 {
				t.Fatalf("got %d flags %q attempts %d", w.Code, info.ResponseFlags, info.Attempts)
			}
		})
	})
	t.Run("per-try timeout retried under 5xx", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			a := clusterAction("c")
			a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(1), PerTryTimeout: dur(30 * time.Millisecond),
				RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: dur(time.Millisecond)}}
			up := newFake(func(n int, r *http.Request, c string) (*http.Response, error) {
				if n == 0 {
					return slow(5*time.Second)(n, r, c)
				}
				return resp(200, "second"), nil
			})
			p := compile(t, nil, rcOf(vhOf("v", []string{"*"}, withAction("r", prefixMatch("/"), a))), up)
			w, info := serve(p, req("GET", "/"), nil)
			if w.Code != 200 || w.Body.String() != "second" || info.Attempts != 2 {
				t.Fatalf("got %d %q attempts %d", w.Code, w.Body.String(), info.Attempts)
			}
		})
	})
	t.Run("per-try timeout exhausted -> 504 UT", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			a := clusterAction("c")
			a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "connect-failure", NumRetries: u32(1), PerTryTimeout: dur(20 * time.Millisecond)}
			up := newFake(slow(5 * time.Second))
			p := compile(t, nil, rcOf(vhOf("v", []string{"*"}, withAction("r", prefixMatch("/"), a))), up)
			w, info := serve(p, req("GET", "/"), nil)
			if w.Code != 504 || info.ResponseFlags != "UT" || info.Attempts != 1 || info.Details != "upstream_per_try_timeout" {
				t.Fatalf("got %d %q attempts %d %q", w.Code, info.ResponseFlags, info.Attempts, info.Details)
			}
		})
	})
	t.Run("unset timeout is Envoy's 15s", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			a := clusterAction("c")
			a.Timeout = nil
			p := compile(t, nil, rcOf(vhOf("v", []string{"*"}, withAction("r", prefixMatch("/"), a))), newFake(nil))
			if got := p.domains.any.routes[0].timeout; got != 15*time.Second {
				t.Fatalf("timeout %v", got)
			}
		})
	})
	t.Run("timeout mid-body resets the stream", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			a := clusterAction("c")
			a.Timeout = dur(50 * time.Millisecond)
			up := newFake(func(n int, r *http.Request, _ string) (*http.Response, error) {
				pr, pw := io.Pipe()
				go func() {
					pw.Write([]byte("first"))
					<-r.Context().Done()
					pw.CloseWithError(r.Context().Err())
				}()
				return &http.Response{StatusCode: 200, Header: http.Header{}, Body: pr, ContentLength: -1}, nil
			})
			p := compile(t, nil, rcOf(vhOf("v", []string{"*"}, withAction("r", prefixMatch("/"), a))), up)
			ctx, info := WithInfo(t.Context())
			defer func() {
				if v := recover(); v != http.ErrAbortHandler {
					t.Fatalf("recover %v", v)
				}
				if info.ResponseFlags != "UT" || info.Status != 200 {
					t.Fatalf("info %+v", info)
				}
			}()
			p.ServeHTTP(httptest.NewRecorder(), req("GET", "/").WithContext(ctx))
			t.Fatal("no abort")
		})
	})
}

func TestRetryReplaysBody(t *testing.T) {
	a := clusterAction("c")
	a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(2), RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: dur(time.Millisecond)}}
	up := newFake(statuses(503, 503, 200))
	p := compile(t, nil, rcOf(vhOf("v", []string{"*"}, withAction("r", prefixMatch("/"), a))), up)
	w, _ := serve(p, reqBody("POST", "/", "payload-123"), nil)
	if w.Code != 200 {
		t.Fatalf("status %d", w.Code)
	}
	for i, c := range up.Calls() {
		if c.Body != "payload-123" || c.BodyErr != nil {
			t.Errorf("attempt %d body %q err %v", i, c.Body, c.BodyErr)
		}
	}
	// Bodies over the buffer limit are streamed but not retried.
	up = newFake(statuses(503, 200))
	p = compile(t, nil, rcOf(vhOf("v", []string{"*"}, withAction("r", prefixMatch("/"), a))), up, Options{BodyBufferLimit: 4})
	big := strings.Repeat("x", 100)
	w, info := serve(p, reqBody("POST", "/", big), nil)
	if w.Code != 503 || len(up.Calls()) != 1 || up.Calls()[0].Body != big || info.ResponseFlags != "" {
		t.Fatalf("big body: %d calls %d flags %q", w.Code, len(up.Calls()), info.ResponseFlags)
	}
}

func TestMirror(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := clusterAction("reviews-v1")
		a.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{
			{Cluster: "reviews-v2"},
			{Cluster: "never", RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: pct(0, typev3.FractionalPercent_HUNDRED)}},
			{Cluster: "half", RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: pct(5000, typev3.FractionalPercent_TEN_THOUSAND)}},
		}
		up := newFake(nil)
		// rand sequence: mirror "half" samples 7000 % 10000 -> not mirrored.
		p := compile(t, nil, rcOf(vhOf("v", []string{"*"}, withAction("r", prefixMatch("/"), a))), up, Options{Rand: seqRand(7000)})
		w, info := serve(p, reqBody("POST", "/x", "mirror-me"), nil)
		if w.Code != 200 || !info.Mirrored {
			t.Fatalf("status %d mirrored %v", w.Code, info.Mirrored)
		}
		// Mirrors go out on goroutines of their own; once every goroutine of
		// the bubble is blocked or gone, all of them have been sent.
		synctest.Wait()
		calls := up.Calls()
		if len(calls) != 2 {
			t.Fatalf("calls %+v, want the request and its one mirror", calls)
		}
		var shadow call
		for _, c := range calls {
			if c.Cluster == "reviews-v2" {
				shadow = c
			}
		}
		if shadow.Host != "example.com-shadow" || shadow.URI != "/x" || shadow.Body != "mirror-me" {
			t.Fatalf("shadow %+v", shadow)
		}
		for host, want := range map[string]string{"foo:8080": "foo-shadow:8080", "foo": "foo-shadow", "[::1]:80": "[::1]-shadow:80", "10.0.0.1:9080": "10.0.0.1-shadow:9080"} {
			if got := shadowHost(host); got != want {
				t.Errorf("shadowHost(%q) = %q, want %q", host, got, want)
			}
		}
	})
}

func TestHashPolicy(t *testing.T) {
	hp := func(ps ...*routev3.RouteAction_HashPolicy) *routev3.RouteAction {
		a := clusterAction("c")
		a.HashPolicy = ps
		return a
	}
	header := &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}}
	cookie := &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: "session", Ttl: dur(10 * time.Second), Path: "/"}}}
	srcIP := &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}}

	run := func(a *routev3.RouteAction, r *http.Request, peer *Peer) (call, *http.Response) {
		up := newFake(nil)
		p := compile(t, nil, rcOf(vhOf("v", []string{"*"}, withAction("r", prefixMatch("/"), a))), up)
		w, _ := serve(p, r, peer)
		return up.Calls()[0], w.Result()
	}
	c1, _ := run(hp(header), req("GET", "/", "x-user", "alice"), nil)
	c2, _ := run(hp(header), req("GET", "/", "x-user", "alice"), nil)
	c3, _ := run(hp(header), req("GET", "/", "x-user", "bob"), nil)
	c4, _ := run(hp(header), req("GET", "/"), nil)
	if !c1.Hashed || c1.Hash != c2.Hash || c1.Hash == c3.Hash || c4.Hashed {
		t.Errorf("header hash: %+v %+v %+v %+v", c1.Hash, c2.Hash, c3.Hash, c4.Hashed)
	}
	// Cookie present: hash of its value; absent with ttl: generated + Set-Cookie.
	cc, res := run(hp(cookie), req("GET", "/", "Cookie", `a=b; session="abc"`), nil)
	if !cc.Hashed || res.Header.Get("Set-Cookie") != "" {
		t.Errorf("cookie present: %+v %v", cc, res.Header)
	}
	cc2, _ := run(hp(cookie), req("GET", "/", "Cookie", "session=abc"), nil)
	if cc2.Hash != cc.Hash {
		t.Errorf("quoted and unquoted cookie differ")
	}
	cn, res := run(hp(cookie), req("GET", "/"), nil)
	sc := res.Header.Get("Set-Cookie")
	if !cn.Hashed || !strings.HasPrefix(sc, `session="`) || !strings.Contains(sc, "; Max-Age=10; Path=/; HttpOnly") {
		t.Errorf("cookie generated: hashed %v Set-Cookie %q", cn.Hashed, sc)
	}
	// source_ip from Peer.Addr.
	pa := &Peer{Addr: netip.MustParseAddr("10.1.2.3")}
	s1, _ := run(hp(srcIP), req("GET", "/"), pa)
	s2, _ := run(hp(srcIP), req("GET", "/"), &Peer{Addr: netip.MustParseAddr("10.1.2.4")})
	if !s1.Hashed || s1.Hash == s2.Hash {
		t.Errorf("source ip hash %v %v", s1, s2)
	}
	// Terminal: the first policy that yields a hash ends evaluation.
	term := &routev3.RouteAction_HashPolicy{Terminal: true, PolicySpecifier: header.PolicySpecifier}
	t1, _ := run(hp(term, srcIP), req("GET", "/", "x-user", "alice"), pa)
	if t1.Hash != c1.Hash {
		t.Errorf("terminal not honoured")
	}
	both, _ := run(hp(header, srcIP), req("GET", "/", "x-user", "alice"), pa)
	if want := (c1.Hash<<1 | c1.Hash>>63) ^ s1.Hash; both.Hash != want {
		t.Errorf("combined hash %x, want %x", both.Hash, want)
	}
}

func TestRedirect(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ra     *routev3.RedirectAction
		m      *routev3.RouteMatch
		in     string
		host   string
		xfp    string
		status int
		loc    string
	}{
		{"path_redirect keeps query", &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new"}}, prefixMatch("/"), "/old?a=1", "svc", "", 301, "http://svc/new?a=1"},
		{"path_redirect strip_query", &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new"}, StripQuery: true}, prefixMatch("/"), "/old?a=1", "svc", "", 301, "http://svc/new"},
		{"path_redirect with own query", &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new?b=2"}}, prefixMatch("/"), "/old?a=1", "svc", "", 301, "http://svc/new?b=2"},
		{"prefix_rewrite", &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/v2/"}, ResponseCode: routev3.RedirectAction_FOUND}, prefixMatch("/v1/"), "/v1/x?q", "svc", "", 302, "http://svc/v2/x?q"},
		{"host and port", &routev3.RedirectAction{HostRedirect: "other.ns", PortRedirect: 8443, ResponseCode: routev3.RedirectAction_SEE_OTHER}, prefixMatch("/"), "/p", "svc:80", "", 303, "http://other.ns:8443/p"},
		{"port only replaces port", &routev3.RedirectAction{PortRedirect: 9090, ResponseCode: routev3.RedirectAction_TEMPORARY_REDIRECT}, prefixMatch("/"), "/p", "svc:80", "", 307, "http://svc:9090/p"},
		{"scheme drops default port", &routev3.RedirectAction{SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "https"}, ResponseCode: routev3.RedirectAction_PERMANENT_REDIRECT}, prefixMatch("/"), "/p", "svc:80", "", 308, "https://svc/p"},
		{"https_redirect keeps other port", &routev3.RedirectAction{SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true}}, prefixMatch("/"), "/p", "svc:8080", "", 301, "https://svc:8080/p"},
		{"x-forwarded-proto is the original scheme", &routev3.RedirectAction{HostRedirect: "h"}, prefixMatch("/"), "/p", "svc", "https", 301, "https://h/p"},
	} {
		r := &routev3.Route{Name: "r", Match: tc.m, Action: &routev3.Route_Redirect{Redirect: tc.ra}}
		p := compile(t, nil, rcOf(vhOf("v", []string{"*"}, r)), newFake(nil))
		kv := []string{"host", tc.host}
		if tc.xfp != "" {
			kv = append(kv, "x-forwarded-proto", tc.xfp)
		}
		w, _ := serve(p, req("GET", tc.in, kv...), nil)
		if w.Code != tc.status || w.Header().Get("Location") != tc.loc {
			t.Errorf("%s: %d %q, want %d %q", tc.name, w.Code, w.Header().Get("Location"), tc.status, tc.loc)
		}
	}
}

func TestUpstreamErrorsToLocalReplies(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		flags  string
		body   string
	}{
		{fmt.Errorf("x: %w", ErrConnectFailure), 503, "UF", "upstream connect error or disconnect/reset before headers. reset reason: connection failure"},
		{ErrOverflow, 503, "UO", "upstream connect error or disconnect/reset before headers. reset reason: overflow"},
		{ErrNoHealthyUpstream, 503, "UH", "no healthy upstream"},
		{ErrClusterNotFound, 503, "NC", ""},
		{errors.New("boom"), 503, "UC", "upstream connect error or disconnect/reset before headers. reset reason: connection termination"},
	} {
		up := newFake(func(int, *http.Request, string) (*http.Response, error) { return nil, tc.err })
		r := toCluster("r", prefixMatch("/"), "c")
		r.ResponseHeadersToAdd = []*corev3.HeaderValueOption{hvo("x-route", "yes", 0)}
		p := compile(t, nil, rcOf(vhOf("v", []string{"*"}, r)), up)
		w, info := serve(p, req("GET", "/"), nil)
		if w.Code != tc.status || info.ResponseFlags != tc.flags || w.Body.String() != tc.body {
			t.Errorf("%v: %d %q %q", tc.err, w.Code, info.ResponseFlags, w.Body.String())
		}
		if w.Header().Get("X-Route") != "yes" {
			t.Errorf("%v: route response headers not applied to router local reply", tc.err)
		}
	}
}
