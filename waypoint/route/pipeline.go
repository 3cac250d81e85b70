package route

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// filter is one HTTP filter of the chain. decode returns false when it sent
// a response (the chain stops). encode edits the headers of a response that
// passes back through it (responses from later filters or the upstream).
type filter interface {
	decode(x *exchange) bool
	encode(x *exchange, h http.Header)
}

// exchange is the state of one request through the pipeline.
type exchange struct {
	p    *Pipeline
	w    http.ResponseWriter
	r    *http.Request
	v    reqView
	info *Info
	rt   *route
	// matched is the length of the :path prefix matched by the route.
	matched int
	// cur is the index of the filter producing the current response.
	cur int

	peer    Peer
	hasPeer bool
	peerOK  bool

	corsOrigin string
	cors       *corsPolicy

	setCookie string
	// upgrade is the protocol an allowed upgrade request switches to.
	upgrade string

	// authn is the request's verified JWT (nil: none), set by jwt_authn.
	authn *authn
	// replyHeader is added to the next local reply (jwt_authn's
	// WWW-Authenticate, an external authorizer's denial, local_ratelimit's
	// headers).
	replyHeader http.Header
	// shadowIDs are the RBAC filters' shadow_effective_policy_id dynamic
	// metadata, by shadow_rules_stat_prefix (ext_authz reads it).
	shadowIDs []shadowID
	// authzResponseHeaders go on the response to the client (ext_authz
	// allowed with headers for the client).
	authzResponseHeaders http.Header

	// rateLimited is the token bucket whose x-ratelimit headers the
	// local_ratelimit filter rateLimitBy adds to the response.
	rateLimited *tokenBucket
	rateLimitBy *localRateLimitFilter
	// rlsRespHeaders are the rate limit service's response_headers_to_add
	// of an allowed request, which the ratelimit filter rlsRespBy adds to
	// the response.
	rlsRespHeaders http.Header
	rlsRespBy      *globalRateLimitFilter
}

type shadowID struct{ prefix, policy string }

// shadowPolicy is the policy the shadow rules of the RBAC filter with stat
// prefix matched ("": none).
func (x *exchange) shadowPolicy(prefix string) string {
	for _, s := range x.shadowIDs {
		if s.prefix == prefix {
			return s.policy
		}
	}
	return ""
}

func (x *exchange) getPeer() (Peer, bool) {
	if !x.peerOK {
		x.peer, x.hasPeer = PeerFrom(x.r.Context())
		x.peerOK = true
	}
	return x.peer, x.hasPeer
}

// perFilter returns the most specific per-route config of filter name
// (route, then virtual host, then route configuration), as Envoy resolves
// typed_per_filter_config. alt is the filter's canonical extension name.
func (x *exchange) perFilter(name, alt string) (perFilter, bool) {
	if x.rt != nil {
		if pf, ok := lookupPF(x.rt.perFilt, name, alt); ok {
			return pf, true
		}
		if pf, ok := lookupPF(x.rt.vh.perFilt, name, alt); ok {
			return pf, true
		}
	}
	return lookupPF(x.p.rcFilter, name, alt)
}

func lookupPF(m map[string]perFilter, name, alt string) (perFilter, bool) {
	if m == nil {
		return perFilter{}, false
	}
	if pf, ok := m[name]; ok {
		return pf, true
	}
	if alt != name {
		pf, ok := m[alt]
		return pf, ok
	}
	return perFilter{}, false
}

// ServeHTTP runs the request through the filter chain. When the downstream
// response must be reset after its headers were sent (route timeout or
// upstream reset mid-body), it panics with http.ErrAbortHandler, as
// net/http expects; Info is complete before that.
func (p *Pipeline) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	info, _ := r.Context().Value(infoKey{}).(*Info)
	if info == nil {
		info = &Info{}
	}
	x := &exchange{p: p, w: w, r: r, info: info}
	path, ok := x.normalizedPath()
	if !ok {
		return
	}
	x.v = newReqView(r, path)
	x.rt, x.matched = p.match(&x.v)
	if x.rt != nil {
		info.Route = x.rt.name
		// Envoy decides on upgrades once the route is known, before the
		// filters; without a route the router answers 404.
		if x.upgrade = upgradeType(r); x.upgrade != "" && !x.upgradeAllowed() {
			x.refuseUpgrade()
			return
		}
	}
	for i, f := range p.filters {
		x.cur = i
		if !f.decode(x) {
			return
		}
	}
}

// normalizedPath is the request's target after the HCM's path
// normalization, which everything after it (routes, filters, the
// upstream) sees. false: a local reply was sent instead, before routing
// and the filters, as Envoy's HCM does (details absolute_path,
// path_normalization_failed).
func (x *exchange) normalizedPath() (string, bool) {
	target := requestTarget(x.r)
	if !strings.HasPrefix(target, "/") {
		x.localReply(http.StatusNotFound, "", "absolute_path", -1, false, nil)
		return "", false
	}
	path, verdict := x.p.paths.apply(target)
	switch {
	case verdict == pathReject, verdict == pathRedirect && isGRPC(x.r): // gRPC clients do not follow redirects
		x.localReply(http.StatusBadRequest, "", "path_normalization_failed", -1, false, nil)
		return "", false
	case verdict == pathRedirect:
		x.info.Details = "path_normalization_failed"
		x.writeHeader(http.StatusTemporaryRedirect, http.Header{"Location": {path}})
		return "", false
	}
	return path, true
}

// match selects the virtual host by :authority and the first matching route.
func (p *Pipeline) match(v *reqView) (*route, int) {
	host := v.host
	if p.stripPort {
		host = stripPort(host)
	}
	vh := p.domains.find(host)
	if vh == nil {
		return nil, 0
	}
	for _, rt := range vh.routes {
		if ok, n := rt.match.match(v, p.rnd); ok {
			return rt, n
		}
	}
	return nil, 0
}

// writeHeader sends status and h downstream after encodeHeader.
func (x *exchange) writeHeader(status int, h http.Header) {
	x.encodeHeader(status, h)
	dst := x.w.Header()
	for k, v := range h {
		dst[k] = v
	}
	x.w.WriteHeader(status)
}

// encodeHeader runs the encoders of the filters before the current one (in
// reverse order) on the response headers h of status.
func (x *exchange) encodeHeader(status int, h http.Header) {
	for i := x.cur - 1; i >= 0; i-- {
		x.p.filters[i].encode(x, h)
	}
	x.info.Status = status
}

// localReply sends a locally generated response, like Envoy's
// sendLocalReply: text/plain body; for gRPC requests an error reply becomes
// a trailers-only gRPC response (HTTP 200, grpc-status mapped from the HTTP
// status as Envoy's Grpc::Utility::httpToGrpcStatus, grpc-message = body).
// routeOps applies the route's response header mutations (router replies).
func (x *exchange) localReply(status int, body, details string, grpcStatus int, routeOps bool, wc *weightedCluster) {
	x.info.Details = details
	h := make(http.Header, 4)
	for k, v := range x.replyHeader {
		h[k] = v
	}
	if routeOps {
		x.finalizeResponse(h, wc)
	}
	if status >= 400 && isGRPC(x.r) {
		if grpcStatus < 0 {
			grpcStatus = httpToGRPC(status)
		}
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", strconv.Itoa(grpcStatus))
		if body != "" {
			h.Set("Grpc-Message", grpcEncodeMessage(body))
		}
		x.writeHeader(http.StatusOK, h)
		return
	}
	if body != "" {
		h.Set("Content-Type", "text/plain")
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}
	x.writeHeader(status, h)
	if body != "" && x.r.Method != http.MethodHead {
		_, _ = x.w.Write([]byte(body))
	}
}

func httpToGRPC(status int) int {
	switch status {
	case 400:
		return 13 // INTERNAL
	case 401:
		return 16 // UNAUTHENTICATED
	case 403:
		return 7 // PERMISSION_DENIED
	case 404:
		return 12 // UNIMPLEMENTED
	case 429, 502, 503, 504:
		return 14 // UNAVAILABLE
	}
	return 2 // UNKNOWN
}

// grpcEncodeMessage percent-encodes a grpc-message value (gRPC over HTTP/2
// spec: printable ASCII except '%' kept).
func grpcEncodeMessage(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '%' {
			return url.PathEscape(s)
		}
	}
	return s
}

// finalizeResponse applies the response header mutations: weighted cluster,
// then the route's (mutationOrder).
func (x *exchange) finalizeResponse(h http.Header, wc *weightedCluster) {
	rt := x.rt
	if wc != nil {
		wc.respOps.apply(h, nil)
	}
	if rt == nil {
		x.p.rcResp.apply(h, nil)
		return
	}
	for _, ops := range x.mutationOrder(rt.respOps, rt.vh.respOps, x.p.rcResp) {
		ops.apply(h, nil)
	}
	if x.setCookie != "" {
		h.Add("Set-Cookie", x.setCookie)
	}
}

// finalizeRequest applies the request header mutations in the same order.
func (x *exchange) finalizeRequest(h http.Header, host *string, wc *weightedCluster) {
	rt := x.rt
	if wc != nil {
		wc.reqOps.apply(h, host)
	}
	for _, ops := range x.mutationOrder(rt.reqOps, rt.vh.reqOps, x.p.rcReq) {
		ops.apply(h, host)
	}
}

// mutationOrder orders the header mutations below the weighted cluster
// level: route, virtual host, route configuration (Envoy's default order),
// reversed when most_specific_header_mutations_wins (the most specific
// applies last).
func (x *exchange) mutationOrder(route, vhost, config *headerOps) [3]*headerOps {
	if x.p.mostSpec {
		return [3]*headerOps{config, vhost, route}
	}
	return [3]*headerOps{route, vhost, config}
}

// grpcLocalReply sends a trailers-only gRPC reply with an explicit status.
func (x *exchange) grpcLocalReply(code int, msg, details string) {
	x.info.Details = details
	h := make(http.Header, 3)
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(code))
	if msg != "" {
		h.Set("Grpc-Message", grpcEncodeMessage(msg))
	}
	x.writeHeader(http.StatusOK, h)
}
