package route

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlcfgv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rlcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/google/go-cmp/cmp"
)

// rlsUp is an Upstream whose cluster "rls" is a rate limit service
// answered in process by answer (no network, so synctest can run it) and
// whose other clusters answer 200 "app".
type rlsUp struct {
	answer func(ctx context.Context, r *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error)
	mu     sync.Mutex
	got    []*rlsv3.RateLimitRequest
	paths  []string
}

func (u *rlsUp) RoundTrip(req *http.Request, cluster string, _ uint64, _ bool) (*http.Response, error) {
	if cluster != "rls" {
		return resp(200, "app"), nil
	}
	body, _ := io.ReadAll(req.Body)
	in := &rlsv3.RateLimitRequest{}
	if len(body) < 5 || proto.Unmarshal(body[5:], in) != nil {
		return nil, errors.New("bad frame")
	}
	u.mu.Lock()
	u.got, u.paths = append(u.got, in), append(u.paths, req.URL.Path)
	u.mu.Unlock()
	out, err := u.answer(req.Context(), in)
	if err != nil {
		return nil, err
	}
	msg, _ := proto.Marshal(out)
	frame := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/grpc"}},
		Trailer: http.Header{"Grpc-Status": {"0"}}, Body: io.NopCloser(bytes.NewReader(append(frame, msg...)))}, nil
}

func (u *rlsUp) requests() []*rlsv3.RateLimitRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.got
}

func rlsCode(c rlsv3.RateLimitResponse_Code) func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	return func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
		return &rlsv3.RateLimitResponse{OverallCode: c}, nil
	}
}

// istioRateLimit is the filter of Istio's global rate limit task.
func istioRateLimit(cluster string) *ratelimitv3.RateLimit {
	return &ratelimitv3.RateLimit{
		Domain: "ratelimit", FailureModeDeny: true, Timeout: dur(10 * time.Second),
		RateLimitService: &rlcfgv3.RateLimitServiceConfig{
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster}}},
			TransportApiVersion: corev3.ApiVersion_V3,
		},
	}
}

func pathAction() *routev3.RateLimit_Action {
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RequestHeaders_{
		RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{HeaderName: ":path", DescriptorKey: "PATH"}}}
}

// rlChain is the task's translation: the filter before the router and the
// virtual host's rate_limits; routes may add their own.
func rlChain(t *testing.T, up Upstream, f *ratelimitv3.RateLimit, vhLimits []*routev3.RateLimit, routes ...*routev3.Route) *Pipeline {
	t.Helper()
	if len(routes) == 0 {
		routes = []*routev3.Route{toCluster("r", prefixMatch("/"), "app")}
	}
	vh := vhOf("vh", []string{"*"}, routes...)
	vh.RateLimits = vhLimits
	return compile(t, hcmWith(t, httpFilter(t, "envoy.filters.http.ratelimit", f)), rcOf(vh), up)
}

func entries(kv ...string) *rlcommonv3.RateLimitDescriptor {
	d := &rlcommonv3.RateLimitDescriptor{}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Entries = append(d.Entries, &rlcommonv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return d
}

// TestGlobalRateLimitDescriptors: each rate limit's actions build one
// descriptor, as Envoy's: request_headers (pseudo headers too, :path with
// its query), generic_key (default key generic_key), header_value_match
// (expect_match, default_value), remote_address (the peer),
// destination_cluster; an action without an entry drops its descriptor
// unless skip_if_absent; the route's limits replace the virtual host's
// unless include_vh_rate_limits; no descriptor, no call.
func TestGlobalRateLimitDescriptors(t *testing.T) {
	up := &rlsUp{answer: rlsCode(rlsv3.RateLimitResponse_OK)}
	hdrAction := func(h, key string, skip bool) *routev3.RateLimit_Action {
		return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RequestHeaders_{
			RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{HeaderName: h, DescriptorKey: key, SkipIfAbsent: skip}}}
	}
	generic := func(k, v string) *routev3.RateLimit_Action {
		return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{
			GenericKey: &routev3.RateLimit_Action_GenericKey{DescriptorKey: k, DescriptorValue: v}}}
	}
	hvm := func(expect *wrapperspb.BoolValue, def string) *routev3.RateLimit_Action {
		return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_HeaderValueMatch_{
			HeaderValueMatch: &routev3.RateLimit_Action_HeaderValueMatch{DescriptorValue: "premium", ExpectMatch: expect, DefaultValue: def,
				Headers: []*routev3.HeaderMatcher{hdr("x-plan", exact("gold"))}}}}
	}
	remote := &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RemoteAddress_{RemoteAddress: &routev3.RateLimit_Action_RemoteAddress{}}}
	dest := &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_DestinationCluster_{DestinationCluster: &routev3.RateLimit_Action_DestinationCluster{}}}
	vhLimits := []*routev3.RateLimit{
		{Actions: []*routev3.RateLimit_Action{pathAction()}},
		{Actions: []*routev3.RateLimit_Action{generic("", "all"), hdrAction("x-user", "USER", false)}},
		{Actions: []*routev3.RateLimit_Action{hdrAction("x-user", "USER", true), hdrAction(":method", "METHOD", false)}},
		{Actions: []*routev3.RateLimit_Action{hvm(nil, "")}},
		{Actions: []*routev3.RateLimit_Action{hvm(wrapperspb.Bool(false), "basic")}},
		{Actions: []*routev3.RateLimit_Action{remote, dest}},
	}
	own := withAction("own", pathMatch("/own"), clusterAction("app"))
	own.GetRoute().RateLimits = []*routev3.RateLimit{{Actions: []*routev3.RateLimit_Action{generic("route", "own")}}}
	both := withAction("both", pathMatch("/both"), clusterAction("app"))
	both.GetRoute().RateLimits = own.GetRoute().RateLimits
	both.GetRoute().IncludeVhRateLimits = wrapperspb.Bool(true)
	noFwd := direct("direct", pathMatch("/direct"), 200, "d")
	p := rlChain(t, up, istioRateLimit("rls"), vhLimits, own, both, noFwd, toCluster("r", prefixMatch("/"), "outbound|80||app"))
	peer := Peer{Addr: netip.MustParseAddr("10.1.2.3")}

	for _, tc := range []struct {
		name string
		r    *http.Request
		want []*rlcommonv3.RateLimitDescriptor
	}{
		{"no user, plan gold", req("GET", "/a?b=c", "x-plan", "gold"), []*rlcommonv3.RateLimitDescriptor{
			entries("PATH", "/a?b=c"), entries("METHOD", "GET"), entries("header_match", "premium"), entries("header_match", "basic"),
			entries("remote_address", "10.1.2.3", "destination_cluster", "outbound|80||app")}},
		{"user, no plan", req("POST", "/x", "x-user", "u1"), []*rlcommonv3.RateLimitDescriptor{
			entries("PATH", "/x"), entries("generic_key", "all", "USER", "u1"), entries("USER", "u1", "METHOD", "POST"),
			entries("header_match", "premium"), // expect_match false: not gold matches; the other has no default
			entries("remote_address", "10.1.2.3", "destination_cluster", "outbound|80||app")}},
		{"route's own", req("GET", "/own"), []*rlcommonv3.RateLimitDescriptor{entries("route", "own")}},
		{"route's and the virtual host's", req("GET", "/both", "x-plan", "gold"), []*rlcommonv3.RateLimitDescriptor{
			entries("route", "own"), entries("PATH", "/both"), entries("METHOD", "GET"),
			entries("header_match", "premium"), entries("header_match", "basic"),
			entries("remote_address", "10.1.2.3", "destination_cluster", "app")}},
	} {
		before := len(up.requests())
		w, _ := serve(p, tc.r, &peer)
		got := up.requests()
		if w.Code != 200 || len(got) != before+1 {
			t.Fatalf("%s: status %d, %d calls", tc.name, w.Code, len(got)-before)
		}
		want := &rlsv3.RateLimitRequest{Domain: "ratelimit", Descriptors: tc.want}
		if d := cmp.Diff(want, got[before], protocmp.Transform()); d != "" {
			t.Errorf("%s: request (-want +got):\n%s", tc.name, d)
		}
	}
	if up.paths[0] != rlsPath {
		t.Errorf("called %q, want %q", up.paths[0], rlsPath)
	}
	// A route that does not forward: the filter does not run.
	before := len(up.requests())
	if w, _ := serve(p, req("GET", "/direct"), &peer); w.Code != 200 || len(up.requests()) != before {
		t.Errorf("direct response: status %d, %d calls", w.Code, len(up.requests())-before)
	}
	// No descriptor at all: no call.
	p = rlChain(t, up, istioRateLimit("rls"), []*routev3.RateLimit{{Actions: []*routev3.RateLimit_Action{hdrAction("x-user", "USER", false)}}})
	if w, _ := serve(p, req("GET", "/"), &peer); w.Code != 200 || len(up.requests()) != before {
		t.Errorf("no descriptor: status %d, %d calls", w.Code, len(up.requests())-before)
	}
}

// TestGlobalRateLimitAnswers: OK passes with the service's request and
// response headers; OVER_LIMIT is 429 with x-envoy-ratelimited (or the
// configured status, headers and the service's body; for gRPC
// UNAVAILABLE or RESOURCE_EXHAUSTED), flag RL; not enforced passes.
func TestGlobalRateLimitAnswers(t *testing.T) {
	limits := []*routev3.RateLimit{{Actions: []*routev3.RateLimit_Action{pathAction()}}}
	up := &rlsUp{answer: func(_ context.Context, r *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
		if r.Descriptors[0].Entries[0].Value == "/limited" {
			return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OVER_LIMIT, RawBody: []byte("slow down"),
				ResponseHeadersToAdd: []*corev3.HeaderValue{{Key: "x-rls", Value: "over"}}}, nil
		}
		return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK,
			RequestHeadersToAdd:  []*corev3.HeaderValue{{Key: "x-to-app", Value: "1"}},
			ResponseHeadersToAdd: []*corev3.HeaderValue{{Key: "x-rls", Value: "ok"}}}, nil
	}}
	recorder := &recordUp{rlsUp: up}
	p := rlChain(t, recorder, istioRateLimit("rls"), limits)
	w, info := serve(p, req("GET", "/fine"), nil)
	if w.Code != 200 || w.Header().Get("X-Rls") != "ok" || recorder.appHeader.Get("X-To-App") != "1" || info.ResponseFlags != "" {
		t.Errorf("OK: %d %v, app saw %v, flags %q", w.Code, w.Header(), recorder.appHeader, info.ResponseFlags)
	}
	w, info = serve(p, req("GET", "/limited"), nil)
	if w.Code != 429 || w.Header().Get("X-Envoy-Ratelimited") != "true" || w.Header().Get("X-Rls") != "over" ||
		w.Body.String() != "slow down" || info.ResponseFlags != "RL" || info.Details != "request_rate_limited" {
		t.Errorf("OVER_LIMIT: %d %v %q, flags %q details %q", w.Code, w.Header(), w.Body, info.ResponseFlags, info.Details)
	}
	if w, _ := serve(p, req("POST", "/limited", "content-type", "application/grpc"), nil); w.Header().Get("Grpc-Status") != "14" {
		t.Errorf("gRPC OVER_LIMIT: grpc-status %q, want 14", w.Header().Get("Grpc-Status"))
	}

	f := istioRateLimit("rls")
	f.RateLimitedStatus = &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}
	f.DisableXEnvoyRatelimitedHeader = true
	f.RateLimitedAsResourceExhausted = true
	f.ResponseHeadersToAdd = []*corev3.HeaderValueOption{hvo("x-limited", "yes", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)}
	p = rlChain(t, up, f, limits)
	w, _ = serve(p, req("GET", "/limited"), nil)
	if w.Code != 503 || w.Header().Get("X-Envoy-Ratelimited") != "" || w.Header().Get("X-Limited") != "yes" {
		t.Errorf("configured OVER_LIMIT: %d %v", w.Code, w.Header())
	}
	if w, _ := serve(p, req("POST", "/limited", "content-type", "application/grpc"), nil); w.Header().Get("Grpc-Status") != "8" {
		t.Errorf("gRPC OVER_LIMIT as resource exhausted: grpc-status %q, want 8", w.Header().Get("Grpc-Status"))
	}

	f = istioRateLimit("rls")
	f.FilterEnforced = &corev3.RuntimeFractionalPercent{DefaultValue: pct(0, typev3.FractionalPercent_HUNDRED)}
	p = rlChain(t, up, f, limits)
	if w, _ := serve(p, req("GET", "/limited"), nil); w.Code != 200 {
		t.Errorf("not enforced: %d, want 200", w.Code)
	}
}

// recordUp records the headers the app cluster got.
type recordUp struct {
	*rlsUp
	appHeader http.Header
}

func (u *recordUp) RoundTrip(req *http.Request, cluster string, hash uint64, hashed bool) (*http.Response, error) {
	if cluster == "app" {
		u.appHeader = req.Header.Clone()
	}
	return u.rlsUp.RoundTrip(req, cluster, hash, hashed)
}

// TestGlobalRateLimitFailure: a service that does not answer in time, or
// cannot be reached, lets requests through, unless failure_mode_deny:
// then 500 (status_on_error), flag RLSE, details rate_limiter_error. The
// timeout is the filter's (default 20 ms), measured on synctest's clock.
func TestGlobalRateLimitFailure(t *testing.T) {
	limits := []*routev3.RateLimit{{Actions: []*routev3.RateLimit_Action{pathAction()}}}
	synctest.Test(t, func(t *testing.T) {
		var waited time.Duration
		up := &rlsUp{answer: func(ctx context.Context, _ *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
			start := time.Now()
			<-ctx.Done() // never answers
			waited = time.Since(start)
			return nil, ctx.Err()
		}}
		f := istioRateLimit("rls")
		f.Timeout = nil
		f.FailureModeDeny = false
		p := rlChain(t, up, f, limits)
		if w, info := serve(p, req("GET", "/"), nil); w.Code != 200 || info.ResponseFlags != "" {
			t.Errorf("fail open: %d flags %q", w.Code, info.ResponseFlags)
		}
		if waited != rlsDefaultTimeout {
			t.Errorf("waited %v for the service, want the default timeout %v", waited, rlsDefaultTimeout)
		}
		f.FailureModeDeny = true
		f.Timeout = dur(time.Second)
		p = rlChain(t, up, f, limits)
		w, info := serve(p, req("GET", "/"), nil)
		if w.Code != 500 || info.ResponseFlags != "RLSE" || info.Details != "rate_limiter_error" || waited != time.Second {
			t.Errorf("fail closed: %d flags %q details %q after %v", w.Code, info.ResponseFlags, info.Details, waited)
		}
		f.StatusOnError = &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}
		p = rlChain(t, up, f, limits)
		if w, _ := serve(p, req("GET", "/"), nil); w.Code != 503 {
			t.Errorf("status_on_error: %d, want 503", w.Code)
		}
	})
	up := &rlsUp{answer: func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
		return nil, ErrConnectFailure
	}}
	if w, _ := serve(rlChain(t, up, istioRateLimit("rls"), limits), req("GET", "/"), nil); w.Code != 500 {
		t.Errorf("unreachable, failure_mode_deny: %d, want 500", w.Code)
	}
}

// TestGlobalRateLimitCompileErrors: what the filter does not run is an
// error naming it, never ignored.
func TestGlobalRateLimitCompileErrors(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*ratelimitv3.RateLimit)
		want string
	}{
		{func(f *ratelimitv3.RateLimit) { f.Stage = 1 }, "stage"},
		{func(f *ratelimitv3.RateLimit) { f.RequestType = "internal" }, "request_type"},
		{func(f *ratelimitv3.RateLimit) {
			f.EnableXRatelimitHeaders = ratelimitv3.RateLimit_DRAFT_VERSION_03
		}, "enable_x_ratelimit_headers"},
		{func(f *ratelimitv3.RateLimit) { f.RateLimitService.TransportApiVersion = corev3.ApiVersion_AUTO }, "transport_api_version"},
		{func(f *ratelimitv3.RateLimit) { f.Domain = "" }, "Domain"},
		{func(f *ratelimitv3.RateLimit) {
			f.RateLimitService.GrpcService.TargetSpecifier = &corev3.GrpcService_GoogleGrpc_{GoogleGrpc: &corev3.GrpcService_GoogleGrpc{TargetUri: "x", StatPrefix: "x"}}
		}, "envoy_grpc"},
	} {
		f := istioRateLimit("rls")
		tc.mod(f)
		if err := ValidateGlobalRateLimit(f); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error naming %s, got %v", tc.want, err)
		}
	}
	query := &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_QueryParameters_{
		QueryParameters: &routev3.RateLimit_Action_QueryParameters{QueryParameterName: "q", DescriptorKey: "Q"}}}
	for _, tc := range []struct {
		rl   *routev3.RateLimit
		want string
	}{
		{&routev3.RateLimit{Actions: []*routev3.RateLimit_Action{query}}, "query_parameters is not supported"},
		{&routev3.RateLimit{Actions: []*routev3.RateLimit_Action{pathAction()}, DisableKey: "k"}, "disable_key"},
		{&routev3.RateLimit{Actions: []*routev3.RateLimit_Action{pathAction()}, Stage: u32(1)}, "stage"},
	} {
		if err := ValidateRateLimits([]*routev3.RateLimit{tc.rl}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error naming %s, got %v", tc.want, err)
		}
	}
	if err := ValidateGlobalRateLimit(istioRateLimit("outbound|8081||ratelimit.default.svc.cluster.local")); err != nil {
		t.Errorf("Istio's task: %v", err)
	}
}

// fixedRLS is a real gRPC rate limit service allowing limit requests per
// descriptor value of PATH "/limited".
type fixedRLS struct {
	rlsv3.UnimplementedRateLimitServiceServer
	mu    sync.Mutex
	count int
	limit int
}

func (s *fixedRLS) ShouldRateLimit(_ context.Context, r *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range r.Descriptors {
		if d.Entries[0].Value == "/limited" {
			if s.count++; s.count > s.limit {
				return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OVER_LIMIT}, nil
			}
		}
	}
	return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}, nil
}

// TestGlobalRateLimitRealGRPC: the filter's framing works against a gRPC
// server built with grpc-go and go-control-plane's service definition;
// two pipelines (two waypoint replicas) share its one count.
func TestGlobalRateLimitRealGRPC(t *testing.T) {
	up := newRealUp(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	rlsv3.RegisterRateLimitServiceServer(s, &fixedRLS{limit: 3})
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	up.addrs["rls"] = l.Addr().String()
	limits := []*routev3.RateLimit{{Actions: []*routev3.RateLimit_Action{pathAction()}}}
	replicas := []*Pipeline{rlChain(t, up, istioRateLimit("rls"), limits), rlChain(t, up, istioRateLimit("rls"), limits)}
	var codes []int
	for i := range 6 {
		w, _ := serve(replicas[i%2], req("GET", "/limited"), nil)
		codes = append(codes, w.Code)
	}
	if d := cmp.Diff([]int{200, 200, 200, 429, 429, 429}, codes); d != "" {
		t.Errorf("statuses (-want +got):\n%s", d)
	}
	if w, _ := serve(replicas[0], req("GET", "/other"), nil); w.Code != 200 {
		t.Errorf("other path: %d", w.Code)
	}
}

// TestGlobalRateLimitAbsentCostsNothing: rate_limits without the ratelimit
// filter (or no global rate limiting at all) add no allocation per
// request: descriptors are only built by the filter.
func TestGlobalRateLimitAbsentCostsNothing(t *testing.T) {
	up := newFake(statuses(200))
	plain := compile(t, hcmWith(t), rcOf(vhOf("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "app"))), up)
	vh := vhOf("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "app"))
	vh.RateLimits = []*routev3.RateLimit{{Actions: []*routev3.RateLimit_Action{pathAction()}}}
	withLimits := compile(t, hcmWith(t), rcOf(vh), up)
	allocs := func(p *Pipeline) float64 {
		return testing.AllocsPerRun(200, func() {
			w := &discardWriter{h: http.Header{}}
			p.ServeHTTP(w, req("GET", "/a"))
		})
	}
	if a, b := allocs(plain), allocs(withLimits); b > a {
		t.Errorf("%v allocations per request with rate_limits and no ratelimit filter, %v without", b, a)
	}
}
