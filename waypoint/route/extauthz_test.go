package route

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbaccfgv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// realUp is an Upstream over real servers: cluster "app" is a backend that
// echoes the request headers it got in its response headers (prefixed
// "Seen-"), the others are authorizers, reached over HTTP/1.1 or, for
// HTTP/2 requests (gRPC), h2c, as the waypoint's Upstream does.
type realUp struct {
	addrs map[string]string
	h2    *http2.Transport
	fail  map[string]error // clusters that cannot be reached
}

func newRealUp(t *testing.T) *realUp {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range r.Header {
			w.Header()["Seen-"+k] = v
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Seen-Body", string(body))
		_, _ = io.WriteString(w, "app")
	}))
	t.Cleanup(app.Close)
	h2 := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	return &realUp{addrs: map[string]string{"app": app.Listener.Addr().String()}, h2: h2, fail: map[string]error{}}
}

func (u *realUp) RoundTrip(req *http.Request, cluster string, _ uint64, _ bool) (*http.Response, error) {
	if err := u.fail[cluster]; err != nil {
		return nil, err
	}
	out := req.Clone(req.Context())
	out.RequestURI, out.URL.Scheme, out.URL.Host = "", "http", u.addrs[cluster]
	if req.ProtoMajor == 2 {
		return u.h2.RoundTrip(out)
	}
	return http.DefaultTransport.RoundTrip(out)
}

// grpcAuthorizer is an authorizer with Istio's sample's rules: allowed with
// "x-ext-authz: allow", which overrides x-ext-authz-check-result on the
// request and adds x-authz-said to the response; denied otherwise, 403 with
// a body and a header. It records the CheckRequests.
type grpcAuthorizer struct {
	authv3.UnimplementedAuthorizationServer
	mu   sync.Mutex
	seen []*authv3.CheckRequest
}

func (a *grpcAuthorizer) Check(_ context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	a.mu.Lock()
	a.seen = append(a.seen, r)
	a.mu.Unlock()
	hv := func(k, v string) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
	}
	if r.GetAttributes().GetRequest().GetHttp().GetHeaders()["x-ext-authz"] == "allow" {
		return &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers:              []*corev3.HeaderValueOption{hv("x-ext-authz-check-result", "allowed")},
				ResponseHeadersToAdd: []*corev3.HeaderValueOption{hv("x-authz-said", "yes")},
			}}}, nil
	}
	return &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.PermissionDenied)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden}, Body: "denied by ext_authz",
			Headers: []*corev3.HeaderValueOption{hv("x-ext-authz-check-result", "denied")},
		}}}, nil
}

func (a *grpcAuthorizer) requests() []*authv3.CheckRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*authv3.CheckRequest(nil), a.seen...)
}

func startGRPCAuthorizer(t *testing.T, u *realUp) *grpcAuthorizer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &grpcAuthorizer{}
	s := grpc.NewServer()
	authv3.RegisterAuthorizationServer(s, a)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	u.addrs["authz-grpc"] = l.Addr().String()
	return a
}

// customChain is Istio's CUSTOM translation: shadow rules selecting the
// paths under /private enable the ext_authz filter, then the router to app.
func customChain(t *testing.T, up Upstream, authz *extauthzv3.ExtAuthz) *Pipeline {
	t.Helper()
	shadow := &rbacv3.RBAC{ShadowRulesStatPrefix: "istio_ext_authz_", ShadowRules: &rbaccfgv3.RBAC{Policies: map[string]*rbaccfgv3.Policy{
		"istio-ext-authz-ns[default]-policy[p]-rule[0]": {
			Permissions: []*rbaccfgv3.Permission{{Rule: &rbaccfgv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
				Rule: &matcherv3.PathMatcher_Path{Path: prefixSM("/private")}}}}},
			Principals: []*rbaccfgv3.Principal{{Identifier: &rbaccfgv3.Principal_Any{Any: true}}},
		}}}}
	authz.FilterEnabledMetadata = &matcherv3.MetadataMatcher{
		Filter: "envoy.filters.http.rbac",
		Path:   []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "istio_ext_authz_shadow_effective_policy_id"}}},
		Value:  &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: prefixSM("istio-ext-authz")}},
	}
	hcm := hcmWith(t, rbacF(t, "rbac-ext-authz", shadow), httpFilter(t, "envoy.filters.http.ext_authz", authz))
	return compile(t, hcm, rcOf(vhOf("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "app"))), up)
}

func grpcAuthz(cluster string) *extauthzv3.ExtAuthz {
	return &extauthzv3.ExtAuthz{Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
		TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster, Authority: "ext-authz.default.svc.cluster.local"}},
		Timeout:         dur(5 * time.Second),
	}}, TransportApiVersion: corev3.ApiVersion_V3}
}

var clientPeer = Peer{ID: spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/curl")}

// TestExtAuthzGRPC runs Istio's CUSTOM flow against a real gRPC
// authorizer: only the paths the rules select are checked; an allowed
// request reaches the backend with the authorizer's header overriding the
// client's forged one, and the authorizer's response header; a denied one
// gets the authorizer's 403, body and header, and never reaches the backend.
func TestExtAuthzGRPC(t *testing.T) {
	up := newRealUp(t)
	authz := startGRPCAuthorizer(t, up)
	p := customChain(t, up, grpcAuthz("authz-grpc"))

	w, _ := serve(p, req("GET", "/public", "x-ext-authz", "deny"), &clientPeer)
	if w.Code != 200 || len(authz.requests()) != 0 {
		t.Fatalf("/public: %d, %d checks; want 200 without a check (not selected by the CUSTOM rules)", w.Code, len(authz.requests()))
	}

	w, info := serve(p, req("GET", "/private/x?q=1", "x-ext-authz", "allow", "x-ext-authz-check-result", "forged"), &clientPeer)
	if w.Code != 200 || w.Body.String() != "app" {
		t.Fatalf("allowed: %d %q, want the backend's 200", w.Code, w.Body.String())
	}
	if got := w.Header().Values("Seen-X-Ext-Authz-Check-Result"); len(got) != 1 || got[0] != "allowed" {
		t.Errorf("backend saw x-ext-authz-check-result %q, want the authorizer's value overriding the client's", got)
	}
	if w.Header().Get("X-Authz-Said") != "yes" {
		t.Errorf("client response lacks the authorizer's response_headers_to_add: %v", w.Header())
	}
	if info.ResponseFlags != "" {
		t.Errorf("allowed request flagged %q", info.ResponseFlags)
	}
	checks := authz.requests()
	if len(checks) != 1 {
		t.Fatalf("%d checks, want 1", len(checks))
	}
	a := checks[0].GetAttributes()
	if got := a.GetSource().GetPrincipal(); got != clientPeer.ID.String() {
		t.Errorf("check source principal %q, want the mTLS peer %s", got, clientPeer.ID)
	}
	if h := a.GetRequest().GetHttp(); h.GetPath() != "/private/x?q=1" || h.GetMethod() != "GET" || h.GetHeaders()[":path"] != "/private/x?q=1" {
		t.Errorf("check request http %v", h)
	}

	w, info = serve(p, req("GET", "/private/x", "x-ext-authz", "deny"), &clientPeer)
	if w.Code != 403 || w.Body.String() != "denied by ext_authz" || w.Header().Get("X-Ext-Authz-Check-Result") != "denied" {
		t.Fatalf("denied: %d %q %v, want the authorizer's 403, body and header", w.Code, w.Body.String(), w.Header())
	}
	if w.Header().Get("Seen-X-Ext-Authz") != "" {
		t.Error("denied request reached the backend")
	}
	if info.ResponseFlags != "UAEX" || info.Details != "ext_authz_denied" {
		t.Errorf("denied: flags %q details %q, want UAEX ext_authz_denied", info.ResponseFlags, info.Details)
	}
}

// TestExtAuthzFailure: an authorizer that cannot be reached, or does not
// answer within the timeout, fails closed (403, or status_on_error) unless
// failure_mode_allow lets the request through, marked.
func TestExtAuthzFailure(t *testing.T) {
	up := newRealUp(t)
	up.fail["authz-grpc"] = ErrConnectFailure
	p := customChain(t, up, grpcAuthz("authz-grpc"))
	if w, info := serve(p, req("GET", "/private"), &clientPeer); w.Code != 403 || info.Details != "ext_authz_error" {
		t.Errorf("unreachable authorizer: %d %q, want 403 ext_authz_error", w.Code, info.Details)
	}

	c := grpcAuthz("authz-grpc")
	c.StatusOnError = &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}
	if w, _ := serve(customChain(t, up, c), req("GET", "/private"), &clientPeer); w.Code != 503 {
		t.Errorf("status_on_error 503: got %d", w.Code)
	}

	silent, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	up.addrs["silent"] = silent.Addr().String()
	c = grpcAuthz("silent")
	c.GetGrpcService().Timeout = dur(20 * time.Millisecond)
	if w, _ := serve(customChain(t, up, c), req("GET", "/private"), &clientPeer); w.Code != 403 {
		t.Errorf("authorizer past its timeout: got %d, want 403", w.Code)
	}

	c = grpcAuthz("authz-grpc")
	c.FailureModeAllow, c.FailureModeAllowHeaderAdd = true, true
	w, _ := serve(customChain(t, up, c), req("GET", "/private"), &clientPeer)
	if w.Code != 200 || w.Header().Get("Seen-X-Envoy-Auth-Failure-Mode-Allowed") != "true" {
		t.Errorf("failure_mode_allow: %d %v, want 200 with x-envoy-auth-failure-mode-allowed upstream", w.Code, w.Header())
	}
}

// TestExtAuthzHTTP: an HTTP authorizer gets the request's method, the path
// under path_prefix, the Host, the allowed headers (plus Authorization)
// and the added ones, never the others; 200 allows with only the listed
// headers copied upstream and to the client; any other status denies with
// the listed headers (and WWW-Authenticate) and the authorizer's body.
func TestExtAuthzHTTP(t *testing.T) {
	up := newRealUp(t)
	var got *http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(context.Background())
		w.Header().Set("X-Ext-Authz-Check-Result", "allowed")
		w.Header().Set("X-Not-Listed", "secret")
		w.Header().Set("Set-Cookie", "s=1")
		w.Header().Set("Www-Authenticate", "Bearer")
		if r.Header.Get("X-Ext-Authz") != "allow" {
			w.Header().Set("X-Ext-Authz-Check-Result", "denied")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, "no")
		}
	}))
	defer srv.Close()
	up.addrs["authz-http"] = srv.Listener.Addr().String()
	list := func(names ...string) *matcherv3.ListStringMatcher {
		l := &matcherv3.ListStringMatcher{}
		for _, n := range names {
			l.Patterns = append(l.Patterns, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: n}})
		}
		return l
	}
	p := customChain(t, up, &extauthzv3.ExtAuthz{AllowedHeaders: list("x-ext-authz"), Services: &extauthzv3.ExtAuthz_HttpService{HttpService: &extauthzv3.HttpService{
		ServerUri:            &corev3.HttpUri{Uri: "http://ext-authz.default.svc.cluster.local:8000", HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "authz-http"}, Timeout: dur(5 * time.Second)},
		PathPrefix:           "/check",
		AuthorizationRequest: &extauthzv3.AuthorizationRequest{HeadersToAdd: []*corev3.HeaderValue{{Key: "x-from", Value: "waypoint"}}},
		AuthorizationResponse: &extauthzv3.AuthorizationResponse{
			AllowedUpstreamHeaders:        list("x-ext-authz-check-result"),
			AllowedClientHeaders:          list("x-ext-authz-check-result"),
			AllowedClientHeadersOnSuccess: list("set-cookie"),
		},
	}}})

	w, _ := serve(p, req("POST", "/private/a?b=c", "x-ext-authz", "allow", "Authorization", "Bearer t", "X-Secret", "s", "host", "app.example"), &clientPeer)
	if w.Code != 200 {
		t.Fatalf("allowed: %d", w.Code)
	}
	if got.Method != "POST" || got.URL.RequestURI() != "/check/private/a?b=c" || got.Host != "app.example" {
		t.Errorf("check request %s %s host %s, want POST /check/private/a?b=c host app.example", got.Method, got.URL.RequestURI(), got.Host)
	}
	if got.Header.Get("X-Ext-Authz") != "allow" || got.Header.Get("Authorization") != "Bearer t" || got.Header.Get("X-From") != "waypoint" || got.Header.Get("X-Secret") != "" {
		t.Errorf("check request headers %v: want x-ext-authz, authorization, x-from and not x-secret", got.Header)
	}
	if w.Header().Get("Seen-X-Ext-Authz-Check-Result") != "allowed" || w.Header().Get("Seen-X-Not-Listed") != "" {
		t.Errorf("upstream headers %v: want the listed authorizer header only", w.Header())
	}
	if w.Header().Get("Set-Cookie") != "s=1" {
		t.Errorf("client response lacks allowed_client_headers_on_success: %v", w.Header())
	}

	w, info := serve(p, req("GET", "/private"), &clientPeer)
	if w.Code != 401 || w.Body.String() != "no" || w.Header().Get("X-Ext-Authz-Check-Result") != "denied" ||
		w.Header().Get("Www-Authenticate") != "Bearer" || w.Header().Get("X-Not-Listed") != "" {
		t.Errorf("denied: %d %q %v, want the authorizer's 401, body, listed headers and WWW-Authenticate", w.Code, w.Body.String(), w.Header())
	}
	if info.ResponseFlags != "UAEX" {
		t.Errorf("denied flags %q, want UAEX", info.ResponseFlags)
	}
}

// TestExtAuthzRequestBody: with_request_body sends at most max bytes of
// the body to the authorizer (413 for more without
// allow_partial_message), and the backend still gets the whole body.
func TestExtAuthzRequestBody(t *testing.T) {
	up := newRealUp(t)
	authz := startGRPCAuthorizer(t, up)
	c := grpcAuthz("authz-grpc")
	c.WithRequestBody = &extauthzv3.BufferSettings{MaxRequestBytes: 4}
	if w, _ := serve(customChain(t, up, c), reqBody("POST", "/private", "too long"), &clientPeer); w.Code != 413 {
		t.Errorf("body over max_request_bytes: %d, want 413", w.Code)
	}
	c.WithRequestBody.AllowPartialMessage = true
	r := reqBody("POST", "/private", "too long")
	r.Header.Set("X-Ext-Authz", "allow")
	w, _ := serve(customChain(t, up, c), r, &clientPeer)
	if w.Code != 200 || w.Header().Get("Seen-Body") != "too long" {
		t.Fatalf("partial body: %d, backend body %q; want 200 and the whole body", w.Code, w.Header().Get("Seen-Body"))
	}
	checks := authz.requests()
	if got := checks[len(checks)-1].GetAttributes().GetRequest().GetHttp().GetBody(); got != "too " {
		t.Errorf("authorizer got body %q, want the first 4 bytes", got)
	}
}

// TestExtAuthzRefusesWhatItDoesNotDo: settings the filter would not act on
// are compile errors (Envoy would honour them), never dropped quietly.
func TestExtAuthzRefusesWhatItDoesNotDo(t *testing.T) {
	for name, mod := range map[string]func(*extauthzv3.ExtAuthz){
		"clear_route_cache": func(c *extauthzv3.ExtAuthz) { c.ClearRouteCache = true },
		"pack_as_bytes":     func(c *extauthzv3.ExtAuthz) { c.WithRequestBody = &extauthzv3.BufferSettings{PackAsBytes: true} },
		"google_grpc":       func(c *extauthzv3.ExtAuthz) { c.GetGrpcService().TargetSpecifier = &corev3.GrpcService_GoogleGrpc_{} },
		"other metadata":    func(c *extauthzv3.ExtAuthz) { c.FilterEnabledMetadata = &matcherv3.MetadataMatcher{Filter: "x"} },
		"include_peer_cert": func(c *extauthzv3.ExtAuthz) { c.IncludePeerCertificate = true },
		"no service":        func(c *extauthzv3.ExtAuthz) { c.Services = nil },
		"charge_cluster_set": func(c *extauthzv3.ExtAuthz) {
			c.ChargeClusterResponseStats = wrapperspb.Bool(true)
			c.ShadowMode = true
		},
	} {
		c := grpcAuthz("authz")
		mod(c)
		if _, err := compileExtAuthz("f", c, newFake(nil)); err == nil {
			t.Errorf("%s: compiled", name)
		}
	}
	if _, err := compileExtAuthz("f", grpcAuthz("authz"), newFake(nil)); err != nil {
		t.Errorf("plain gRPC config: %v", err)
	}
}

// FuzzGRPCReply: whatever an authorizer sends back as a gRPC reply is an
// error (the filter fails closed) or a decision; it never panics.
func FuzzGRPCReply(f *testing.F) {
	ok, _ := proto.Marshal(&authv3.CheckResponse{Status: &status.Status{Code: 0},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-a", Value: "b"}, Append: wrapperspb.Bool(true)}}}}})
	denied, _ := proto.Marshal(&authv3.CheckResponse{Status: &status.Status{Code: 7},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{Body: "no"}}})
	for _, m := range [][]byte{ok, denied, {}, {0xff}} {
		frame := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(m)))
		f.Add(append(frame, m...), "0")
	}
	f.Add([]byte{1, 0, 0, 0, 0}, "0")
	f.Add([]byte{0, 0, 0, 0, 9}, "2")
	f.Fuzz(func(t *testing.T, body []byte, grpcStatus string) {
		resp := &http.Response{StatusCode: 200, Header: http.Header{}, Trailer: http.Header{"Grpc-Status": {grpcStatus}},
			Body: io.NopCloser(bytes.NewReader(body))}
		r := &authv3.CheckResponse{}
		if err := readGRPCReply(resp, "authorizer", r); err != nil {
			return
		}
		if grpcStatus != "0" {
			t.Fatalf("grpc-status %q accepted", grpcStatus)
		}
		if d := grpcDecision(r); !d.allowed && (d.status < 200 || d.status > 599) {
			t.Fatalf("denied with status %d: not a status the client can be sent", d.status)
		}
	})
}

// TestExtAuthzHeaderMutationsAreBounded: an authorizer's allowed answer
// cannot set pseudo-headers, Host, hop-by-hop headers or invalid fields on
// the upstream request (they would fail it or change where it goes); the
// other headers it sets arrive.
func TestExtAuthzHeaderMutationsAreBounded(t *testing.T) {
	hv := func(k, v string) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
	}
	d := grpcDecision(&authv3.CheckResponse{Status: &status.Status{},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{
			hv(":path", "/admin"), hv("host", "evil.example"), hv("connection", "close"), hv("transfer-encoding", "chunked"),
			hv("bad name", "x"), hv("x-bad-value", "a\r\nb"), hv("x-user", "alice"),
		}}}})
	x := &exchange{r: req("GET", "/", "host", "app.example")}
	d.apply(x)
	if x.r.Host != "app.example" || x.r.Header.Get("X-User") != "alice" {
		t.Fatalf("host %q, x-user %q", x.r.Host, x.r.Header.Get("X-User"))
	}
	for k := range x.r.Header {
		if k != "X-User" {
			t.Errorf("authorizer wrote header %q on the upstream request", k)
		}
	}
}
