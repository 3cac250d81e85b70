package route

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"golang.org/x/net/http/httpguts"
)

// extAuthzFilter is envoy.filters.http.ext_authz: it asks an external
// authorizer, over gRPC (envoy.service.auth.v3.Authorization/Check) or
// plain HTTP, whether a request may proceed. The authorizer is a cluster
// of the Upstream, so its calls get the mesh's mTLS, load balancing and
// circuit breakers. Envoy's semantics:
//   - allowed (gRPC OK, HTTP 200): the request continues, with the header
//     changes the authorizer asked for (gRPC ok_response; HTTP: the
//     response headers allowed_upstream_headers lists);
//   - denied (any other answer): the authorizer's status (gRPC default
//     403), headers and body go to the client; response flag UAEX;
//   - no answer (connect failure, timeout, malformed reply): 403 or
//     status_on_error, unless failure_mode_allow lets the request through.
//
// With filter_enabled_metadata, the filter only runs for requests whose
// RBAC shadow rules matched a policy named with the matcher's prefix: Istio's
// CUSTOM AuthorizationPolicy rules (see rbacFilter.shadowPrefix).
type extAuthzFilter struct {
	name    string
	up      Upstream
	cluster string
	grpc    bool
	// authority is the :authority of check requests (the service's host);
	// pathPrefix is prepended to the request path of HTTP checks.
	authority, pathPrefix string
	timeout               time.Duration
	failOpen, failHeader  bool
	statusOnError         int
	maxBody               int // with_request_body: bytes of body sent; 0: none
	partialBody           bool

	// gate: the RBAC shadow prefix whose effective policy id must start
	// with gatePolicy (gated false: always runs).
	gated                bool
	gateShadowPrefix     string
	gatePolicy           string
	allowedHeaders       *headerList // nil: gRPC all, HTTP the defaults only
	headersToAdd         [][2]string
	upstreamHeaders      *headerList // HTTP: set on the request when allowed
	upstreamAppend       *headerList
	clientDenyHeaders    *headerList // HTTP: nil = all but Host
	clientSuccessHeaders *headerList
}

// headerList is a compiled ListStringMatcher over header names.
type headerList struct{ ms []stringMatcher }

// has matches the lower-case name, as Envoy's header maps hold them.
func (l *headerList) has(name string) bool {
	name = strings.ToLower(name)
	for i := range l.ms {
		if l.ms[i].match(name) {
			return true
		}
	}
	return false
}

func compileHeaderList(l *matcherv3.ListStringMatcher) (*headerList, error) {
	if l == nil {
		return nil, nil
	}
	out := &headerList{}
	for _, p := range l.GetPatterns() {
		m, err := compileStringMatcher(p)
		if err != nil {
			return nil, err
		}
		out.ms = append(out.ms, m)
	}
	return out, nil
}

const (
	flagUAEX             = "UAEX" // Envoy: unauthorized by the external authorization service
	extAuthzCheckTimeout = 200 * time.Millisecond
	grpcCheckPath        = "/envoy.service.auth.v3.Authorization/Check"
)

func compileExtAuthz(name string, c *extauthzv3.ExtAuthz, up Upstream) (*extAuthzFilter, error) {
	if err := unsupportedExtAuthz(c); err != nil {
		return nil, err
	}
	f := &extAuthzFilter{name: name, up: up, failOpen: c.GetFailureModeAllow(), failHeader: c.GetFailureModeAllowHeaderAdd(),
		statusOnError: http.StatusForbidden, timeout: extAuthzCheckTimeout}
	if s := c.GetStatusOnError(); s != nil && s.GetCode() != 0 {
		if f.statusOnError = int(s.GetCode()); f.statusOnError < 200 || f.statusOnError > 599 {
			return nil, fmt.Errorf("status_on_error %d is not an HTTP status", f.statusOnError)
		}
	}
	if b := c.GetWithRequestBody(); b != nil {
		f.maxBody, f.partialBody = int(b.GetMaxRequestBytes()), b.GetAllowPartialMessage()
		if b.GetPackAsBytes() {
			return nil, errors.New("with_request_body.pack_as_bytes is not supported")
		}
	}
	var err error
	if err = f.compileGate(c.GetFilterEnabledMetadata()); err != nil {
		return nil, err
	}
	if f.allowedHeaders, err = compileHeaderList(c.GetAllowedHeaders()); err != nil {
		return nil, fmt.Errorf("allowed_headers: %w", err)
	}
	switch s := c.GetServices().(type) {
	case *extauthzv3.ExtAuthz_GrpcService:
		err = f.compileGRPC(s.GrpcService)
	case *extauthzv3.ExtAuthz_HttpService:
		err = f.compileHTTP(s.HttpService)
	default:
		err = errors.New("no grpc_service or http_service")
	}
	return f, err
}

// unsupportedExtAuthz refuses the settings the filter does not act on, so
// that none is dropped quietly (Envoy would act on them).
func unsupportedExtAuthz(c *extauthzv3.ExtAuthz) error {
	switch {
	case c.GetClearRouteCache():
		return errors.New("clear_route_cache is not supported")
	case c.GetFilterEnabled() != nil, c.GetDenyAtDisable() != nil:
		return errors.New("filter_enabled and deny_at_disable (runtime) are not supported")
	case c.GetDisallowedHeaders() != nil, c.GetIncludePeerCertificate(), c.GetIncludeTlsSession():
		return errors.New("disallowed_headers, include_peer_certificate and include_tls_session are not supported")
	case len(c.GetMetadataContextNamespaces()) > 0, len(c.GetTypedMetadataContextNamespaces()) > 0:
		return errors.New("metadata_context_namespaces are not supported")
	case c.GetShadowMode():
		return errors.New("shadow_mode is not supported")
	}
	return nil
}

// compileGate accepts the one filter_enabled_metadata form Istio emits: a
// prefix match on the RBAC filter's <prefix>shadow_effective_policy_id.
func (f *extAuthzFilter) compileGate(m *matcherv3.MetadataMatcher) error {
	if m == nil {
		return nil
	}
	const suffix = "shadow_effective_policy_id"
	key := ""
	if len(m.GetPath()) == 1 {
		key = m.GetPath()[0].GetKey()
	}
	prefix := m.GetValue().GetStringMatch().GetPrefix()
	if m.GetFilter() != "envoy.filters.http.rbac" || !strings.HasSuffix(key, suffix) || prefix == "" || m.GetInvert() {
		return errors.New("filter_enabled_metadata: only a prefix match on envoy.filters.http.rbac <prefix>shadow_effective_policy_id is supported")
	}
	f.gated, f.gateShadowPrefix, f.gatePolicy = true, strings.TrimSuffix(key, suffix), prefix
	return nil
}

func (f *extAuthzFilter) compileGRPC(g *corev3.GrpcService) error {
	eg := g.GetEnvoyGrpc()
	if eg == nil || eg.GetClusterName() == "" {
		return errors.New("grpc_service: only envoy_grpc with a cluster_name is supported")
	}
	f.grpc, f.cluster, f.authority = true, eg.GetClusterName(), eg.GetAuthority()
	if f.authority == "" {
		f.authority = eg.GetClusterName()
	}
	if d := g.GetTimeout(); d != nil {
		f.timeout = d.AsDuration()
	}
	return nil
}

func (f *extAuthzFilter) compileHTTP(h *extauthzv3.HttpService) error {
	uri := h.GetServerUri()
	u, err := url.Parse(uri.GetUri())
	if err != nil || uri.GetCluster() == "" {
		return fmt.Errorf("http_service.server_uri: want a uri and a cluster (%v)", err)
	}
	if h.GetPathOverride() != "" || h.GetRetryPolicy() != nil || h.GetAuthorizationResponse().GetDynamicMetadataFromHeaders() != nil {
		return errors.New("http_service: path_override, retry_policy and dynamic_metadata_from_headers are not supported")
	}
	f.cluster, f.authority, f.pathPrefix = uri.GetCluster(), u.Host, h.GetPathPrefix()
	if d := uri.GetTimeout(); d != nil {
		f.timeout = d.AsDuration()
	}
	req := h.GetAuthorizationRequest()
	if req.GetAllowedHeaders() != nil { // deprecated place of allowed_headers
		if f.allowedHeaders, err = compileHeaderList(req.GetAllowedHeaders()); err != nil {
			return err
		}
	}
	for _, hv := range req.GetHeadersToAdd() {
		f.headersToAdd = append(f.headersToAdd, [2]string{hv.GetKey(), hv.GetValue()})
	}
	resp := h.GetAuthorizationResponse()
	for dst, src := range map[**headerList]*matcherv3.ListStringMatcher{
		&f.upstreamHeaders: resp.GetAllowedUpstreamHeaders(), &f.upstreamAppend: resp.GetAllowedUpstreamHeadersToAppend(),
		&f.clientDenyHeaders: resp.GetAllowedClientHeaders(), &f.clientSuccessHeaders: resp.GetAllowedClientHeadersOnSuccess(),
	} {
		if *dst, err = compileHeaderList(src); err != nil {
			return fmt.Errorf("http_service.authorization_response: %w", err)
		}
	}
	return nil
}

func (f *extAuthzFilter) encode(x *exchange, h http.Header) {
	for k, v := range x.authzResponseHeaders {
		h[k] = v
	}
}

func (f *extAuthzFilter) decode(x *exchange) bool {
	if f.gated && !strings.HasPrefix(x.shadowPolicy(f.gateShadowPrefix), f.gatePolicy) {
		return true
	}
	body, ok := f.bufferBody(x)
	if !ok {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	stop := context.AfterFunc(x.r.Context(), cancel) // the client went away
	defer stop()
	var d authzDecision
	var err error
	if f.grpc {
		d, err = f.checkGRPC(ctx, x, body)
	} else {
		d, err = f.checkHTTP(ctx, x, body)
	}
	switch {
	case err != nil:
		return f.failed(x, err)
	case !d.allowed:
		x.info.addFlag(flagUAEX)
		x.replyHeader = d.headers
		x.localReply(d.status, d.body, "ext_authz_denied", -1, false, nil)
		return false
	}
	d.apply(x)
	return true
}

// failed is the answer when the authorizer could not decide.
func (f *extAuthzFilter) failed(x *exchange, err error) bool {
	x.p.log.Debug("ext_authz check failed", "filter", f.name, "cluster", f.cluster, "err", err)
	if f.failOpen {
		if f.failHeader {
			x.r.Header.Set("X-Envoy-Auth-Failure-Mode-Allowed", "true")
		}
		return true
	}
	x.localReply(f.statusOnError, "", "ext_authz_error", -1, false, nil)
	return false
}

// bufferBody reads up to maxBody bytes of the request body for the check
// and puts them back in front of the rest. Without allow_partial_message a
// longer body is refused with 413, as Envoy does.
func (f *extAuthzFilter) bufferBody(x *exchange) ([]byte, bool) {
	if f.maxBody <= 0 || x.r.Body == nil || x.r.Body == http.NoBody {
		return nil, true
	}
	buf, err := io.ReadAll(io.LimitReader(x.r.Body, int64(f.maxBody)+1))
	if err != nil {
		x.localReply(http.StatusBadRequest, "", "ext_authz_body_read_failed", -1, false, nil)
		return nil, false
	}
	x.r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(buf), x.r.Body), x.r.Body}
	if len(buf) > f.maxBody {
		if !f.partialBody {
			x.localReply(http.StatusRequestEntityTooLarge, "Payload Too Large", "request_payload_too_large", -1, false, nil)
			return nil, false
		}
		buf = buf[:f.maxBody]
	}
	return buf, true
}

// authzDecision is an authorizer's answer: allowed with header changes,
// or denied with the reply for the client.
type authzDecision struct {
	allowed bool
	// allowed: request header changes and client response headers.
	set, add       http.Header
	remove         []string
	clientResponse http.Header
	// denied
	status  int
	headers http.Header
	body    string
}

func (d *authzDecision) apply(x *exchange) {
	for k, v := range d.set {
		if authzMayWrite(k, v) {
			x.r.Header[k] = v
		}
	}
	for k, v := range d.add {
		if authzMayWrite(k, v) {
			x.r.Header[k] = append(x.r.Header[k], v...)
		}
	}
	for _, k := range d.remove {
		x.r.Header.Del(k)
	}
	if len(d.clientResponse) > 0 {
		x.authzResponseHeaders = d.clientResponse
	}
}

// authzMayWrite is whether an authorizer's header k: vs may go on the
// upstream request: a valid field, not a pseudo-header, Host or a
// hop-by-hop header (Envoy's default header mutation rules keep routing
// and connection headers out of an authorizer's reach). Anything else
// would fail the upstream request or change where it goes.
func authzMayWrite(k string, vs []string) bool {
	if !httpguts.ValidHeaderFieldName(k) {
		return false
	}
	switch http.CanonicalHeaderKey(k) {
	case "Host", "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "Te", "Trailer", "Content-Length":
		return false
	}
	for _, v := range vs {
		if !httpguts.ValidHeaderFieldValue(v) {
			return false
		}
	}
	return true
}

// checkRequestHeaders are the client's headers sent to the authorizer:
// all, or those allowedHeaders lists (plus, for HTTP, Envoy's defaults).
func (f *extAuthzFilter) checkRequestHeaders(x *exchange) http.Header {
	h := make(http.Header, len(x.r.Header)+len(f.headersToAdd))
	for k, v := range x.r.Header {
		if f.allowedHeaders == nil && f.grpc || f.allowedHeaders != nil && f.allowedHeaders.has(k) ||
			!f.grpc && (k == "Authorization" || k == "Content-Length") {
			h[k] = v
		}
	}
	for _, kv := range f.headersToAdd {
		h.Set(kv[0], kv[1])
	}
	return h
}

// checkHTTP asks an HTTP authorizer: the request's method, the path
// prefixed with pathPrefix, its Host and the allowed headers, with the
// buffered body if any.
func (f *extAuthzFilter) checkHTTP(ctx context.Context, x *exchange, body []byte) (authzDecision, error) {
	req, err := http.NewRequestWithContext(ctx, x.r.Method, "http://"+f.authority, bytes.NewReader(body))
	if err != nil {
		return authzDecision{}, err
	}
	req.URL.Opaque = f.pathPrefix + x.v.path // already normalized; sent as is
	req.Host = x.r.Host
	req.Header = f.checkRequestHeaders(x)
	req.Header.Set("Content-Length", strconv.Itoa(len(body)))
	req.ContentLength = int64(len(body))
	resp, err := f.up.RoundTrip(req, f.cluster, 0, false)
	if err != nil {
		return authzDecision{}, err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, maxGRPCReply))
	if err != nil {
		return authzDecision{}, err
	}
	if resp.StatusCode == http.StatusOK {
		return authzDecision{allowed: true,
			set:            pick(resp.Header, f.upstreamHeaders),
			add:            pick(resp.Header, f.upstreamAppend),
			clientResponse: pick(resp.Header, f.clientSuccessHeaders)}, nil
	}
	d := authzDecision{status: resp.StatusCode, body: string(rb), headers: resp.Header.Clone()}
	if f.clientDenyHeaders != nil {
		d.headers = pick(resp.Header, f.clientDenyHeaders)
		for _, k := range []string{"Www-Authenticate", "Location"} {
			if v, ok := resp.Header[k]; ok {
				d.headers[k] = v
			}
		}
	}
	for _, k := range []string{"Host", "Content-Length", "Transfer-Encoding", "Connection"} {
		delete(d.headers, k)
	}
	return d, nil
}

// pick is the headers of h whose names l lists (nil l: none).
func pick(h http.Header, l *headerList) http.Header {
	if l == nil {
		return nil
	}
	out := http.Header{}
	for k, v := range h {
		if l.has(k) {
			out[k] = v
		}
	}
	return out
}
