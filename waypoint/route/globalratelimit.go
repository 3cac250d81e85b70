package route

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rlcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
)

const (
	// globalRateLimitName is the filter's canonical extension name (the
	// key of its typed_per_filter_config when the filter has another name).
	globalRateLimitName = "envoy.filters.http.ratelimit"
	// rlsPath is the rate limit service's method.
	rlsPath = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
	// rlsDefaultTimeout is Envoy's default of the filter's timeout.
	rlsDefaultTimeout = 20 * time.Millisecond
)

// globalRateLimitFilter is envoy.filters.http.ratelimit: it builds
// descriptors from the rate_limits actions of the request's route (and of
// its virtual host when the route has none, or include_vh_rate_limits) and
// asks the rate limit service, envoy.service.ratelimit.v3.RateLimitService/
// ShouldRateLimit, a unary gRPC call to a cluster of the Upstream. Envoy's
// semantics:
//   - no route, a route that does not forward (redirect, direct response),
//     or no descriptor built: no call, the request goes on;
//   - OK (or UNKNOWN): the request goes on, with the service's
//     request_headers_to_add; its response_headers_to_add go on the
//     response;
//   - OVER_LIMIT: a local reply with rate_limited_status (default 429; a
//     status below 400 is 429), x-envoy-ratelimited: true (unless
//     disable_x_envoy_ratelimited_header), the service's and the filter's
//     response_headers_to_add and raw_body; details request_rate_limited,
//     flag RL; gRPC requests get UNAVAILABLE (RESOURCE_EXHAUSTED with
//     rate_limited_as_resource_exhausted). When filter_enforced does not
//     sample the request, it goes on;
//   - no answer within timeout (default 20 ms), connect failure, an
//     error status or a malformed reply: the request goes on, unless
//     failure_mode_deny: status_on_error (default 500), details
//     rate_limiter_error, flag RLSE.
//
// Only stage 0 and request_type "both" are run (compile errors otherwise);
// rate limits of other stages are for other filter instances and are not
// evaluated here, as in Envoy.
type globalRateLimitFilter struct {
	name              string
	up                Upstream
	cluster           string
	authority         string
	domain            string
	timeout           time.Duration
	failDeny          bool
	status            int
	grpcStatus        int // -1: mapped from status
	statusOnError     int
	noRateLimitedHdr  bool
	respOps           *headerOps // response_headers_to_add of the filter, on limited replies
	enabled, enforced fraction
}

// compileGlobalRateLimit compiles c; what the filter does not implement is
// an error, as the control plane checks (ValidateGlobalRateLimit).
func compileGlobalRateLimit(name string, c *ratelimitv3.RateLimit, up Upstream) (*globalRateLimitFilter, error) {
	if err := unsupportedGlobalRateLimit(c); err != nil {
		return nil, err
	}
	f := &globalRateLimitFilter{
		name: name, up: up, domain: c.GetDomain(), timeout: rlsDefaultTimeout, failDeny: c.GetFailureModeDeny(),
		status: http.StatusTooManyRequests, grpcStatus: -1, statusOnError: http.StatusInternalServerError,
		noRateLimitedHdr: c.GetDisableXEnvoyRatelimitedHeader(),
		enabled:          compileFraction(c.GetFilterEnabled().GetDefaultValue(), 100),
		enforced:         compileFraction(c.GetFilterEnforced().GetDefaultValue(), 100),
	}
	if c.GetDomain() == "" {
		return nil, errors.New("domain is required")
	}
	if d := c.GetTimeout(); d != nil {
		if f.timeout = d.AsDuration(); f.timeout <= 0 {
			return nil, fmt.Errorf("timeout %v must be positive", f.timeout)
		}
	}
	if s := int(c.GetRateLimitedStatus().GetCode()); s >= 400 {
		f.status = s
	}
	if s := c.GetStatusOnError(); s != nil {
		if f.statusOnError = int(s.GetCode()); f.statusOnError < 200 || f.statusOnError > 599 {
			return nil, fmt.Errorf("status_on_error %d is not an HTTP status", f.statusOnError)
		}
	}
	if c.GetRateLimitedAsResourceExhausted() {
		f.grpcStatus = 8 // RESOURCE_EXHAUSTED
	}
	var err error
	if f.respOps, err = compileHeaderOps(c.GetResponseHeadersToAdd(), nil); err != nil {
		return nil, fmt.Errorf("response_headers_to_add: %w", err)
	}
	rls := c.GetRateLimitService()
	eg := rls.GetGrpcService().GetEnvoyGrpc()
	switch {
	case eg.GetClusterName() == "":
		return nil, errors.New("rate_limit_service.grpc_service: only envoy_grpc with a cluster_name is supported")
	case rls.GetTransportApiVersion() != corev3.ApiVersion_V3:
		return nil, errors.New("rate_limit_service.transport_api_version must be V3 (Envoy refuses the others)")
	}
	f.cluster, f.authority = eg.GetClusterName(), eg.GetAuthority()
	if f.authority == "" {
		f.authority = f.cluster // Envoy's default :authority of an envoy_grpc call
	}
	return f, nil
}

// unsupportedGlobalRateLimit names the first field set that the filter
// does not implement.
func unsupportedGlobalRateLimit(c *ratelimitv3.RateLimit) error {
	var field string
	switch {
	case c.GetStage() != 0:
		field = "stage (only 0)"
	case c.GetRequestType() != "" && c.GetRequestType() != "both":
		field = "request_type (only both)"
	case c.GetEnableXRatelimitHeaders() != ratelimitv3.RateLimit_OFF:
		field = "enable_x_ratelimit_headers"
	case c.GetEnableRetryAfterHeader():
		field = "enable_retry_after_header"
	case c.GetFailureModeDenyPercent() != nil:
		field = "failure_mode_deny_percent"
	case len(c.GetRateLimits()) > 0:
		field = "rate_limits (of the filter; route and virtual host rate_limits are supported)"
	case c.GetMetadataNamespace() != "":
		field = "metadata_namespace"
	case c.GetRateLimitService().GetGrpcService().GetTimeout() != nil:
		field = "rate_limit_service.grpc_service.timeout (the filter's timeout applies)"
	case len(c.GetRateLimitService().GetGrpcService().GetInitialMetadata()) > 0:
		field = "rate_limit_service.grpc_service.initial_metadata"
	default:
		return nil
	}
	return fmt.Errorf("%s is not supported", field)
}

// ValidateGlobalRateLimit reports whether the waypoint runs c as an HTTP
// filter, checked by the control plane before it sends it.
func ValidateGlobalRateLimit(c *ratelimitv3.RateLimit) error {
	if err := c.ValidateAll(); err != nil {
		return err
	}
	_, err := compileGlobalRateLimit("", c, nopUpstream{})
	return err
}

// ValidateRateLimits reports whether the waypoint runs the rate_limits of
// a virtual host or route.
func ValidateRateLimits(rls []*routev3.RateLimit) error {
	for _, rl := range rls {
		if err := rl.ValidateAll(); err != nil {
			return err
		}
	}
	_, err := compileRateLimits(rls)
	return err
}

// nopUpstream lets a filter compile for validation only.
type nopUpstream struct{}

func (nopUpstream) RoundTrip(*http.Request, string, uint64, bool) (*http.Response, error) {
	return nil, errors.New("validation only")
}

func (f *globalRateLimitFilter) encode(x *exchange, h http.Header) {
	if x.rlsRespHeaders == nil || x.rlsRespBy != f {
		return
	}
	for k, v := range x.rlsRespHeaders {
		h[k] = v
	}
}

func (f *globalRateLimitFilter) decode(x *exchange) bool {
	if x.rt == nil || x.rt.kind != actionForward || !f.enabled.sample(x.p.rnd) {
		return true
	}
	if pf, ok := x.perFilter(f.name, globalRateLimitName); ok && pf.disabled {
		return true
	}
	descs := x.rt.rateLimitDescriptors(x)
	if len(descs) == 0 {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	stop := context.AfterFunc(x.r.Context(), cancel) // the client went away
	defer stop()
	resp := &rlsv3.RateLimitResponse{}
	err := grpcUnary(ctx, f.up, f.cluster, f.authority, rlsPath, "rate limit service",
		&rlsv3.RateLimitRequest{Domain: f.domain, Descriptors: descs}, resp)
	if err != nil {
		x.p.log.Debug("rate limit service call failed", "filter", f.name, "cluster", f.cluster, "err", err)
		if !f.failDeny {
			return true
		}
		x.info.addFlag(flagRLSE)
		x.localReply(f.statusOnError, "", "rate_limiter_error", -1, false, nil)
		return false
	}
	if resp.GetOverallCode() == rlsv3.RateLimitResponse_OVER_LIMIT && f.enforced.sample(x.p.rnd) {
		f.limited(x, resp)
		return false
	}
	for _, hv := range resp.GetRequestHeadersToAdd() {
		x.r.Header.Set(hv.GetKey(), hv.GetValue())
	}
	if hs := resp.GetResponseHeadersToAdd(); len(hs) > 0 {
		x.rlsRespHeaders, x.rlsRespBy = make(http.Header, len(hs)), f
		for _, hv := range hs {
			x.rlsRespHeaders.Set(hv.GetKey(), hv.GetValue())
		}
	}
	return true
}

// limited answers an OVER_LIMIT request.
func (f *globalRateLimitFilter) limited(x *exchange, resp *rlsv3.RateLimitResponse) {
	x.info.addFlag(flagRL)
	h := make(http.Header, 4)
	for _, hv := range resp.GetResponseHeadersToAdd() {
		h.Set(hv.GetKey(), hv.GetValue())
	}
	f.respOps.apply(h, nil)
	if !f.noRateLimitedHdr {
		h["X-Envoy-Ratelimited"] = []string{"true"}
	}
	x.replyHeader = h
	x.localReply(f.status, string(resp.GetRawBody()), "request_rate_limited", f.grpcStatus, false, nil)
}

// ---- rate_limits of virtual hosts and routes ----

// rateLimit is one compiled envoy.config.route.v3.RateLimit: its actions
// build one descriptor, or none when an action produces nothing.
type rateLimit struct {
	actions []rlAction
}

type rlActionKind uint8

const (
	rlRequestHeader rlActionKind = iota
	rlGenericKey
	rlHeaderValueMatch
	rlRemoteAddress
	rlDestinationCluster
)

type rlAction struct {
	kind         rlActionKind
	key, value   string
	defaultValue string // header_value_match: the value when the headers do not match as expected
	canon        string // request_headers
	pseudo       byte
	skipIfAbsent bool
	headers      []headerMatcher // header_value_match
	expectMatch  bool
}

// compileRateLimits compiles the rate_limits of a virtual host or route
// for the stage-0 filter; entries of other stages are left out (they are
// for other ratelimit filter instances, which Weft does not run).
func compileRateLimits(rls []*routev3.RateLimit) ([]rateLimit, error) {
	var out []rateLimit
	for i, rl := range rls {
		if rl.GetStage().GetValue() != 0 {
			return nil, fmt.Errorf("rate_limits[%d].stage: only 0 is supported", i)
		}
		var field string
		switch {
		case rl.GetDisableKey() != "":
			field = "disable_key"
		case rl.GetLimit() != nil:
			field = "limit"
		case rl.GetHitsAddend() != nil:
			field = "hits_addend"
		case rl.GetApplyOnStreamDone():
			field = "apply_on_stream_done"
		case rl.GetXRatelimitOption() != routev3.RateLimit_UNSPECIFIED:
			field = "x_ratelimit_option"
		}
		if field != "" {
			return nil, fmt.Errorf("rate_limits[%d].%s is not supported", i, field)
		}
		if len(rl.GetActions()) == 0 {
			return nil, fmt.Errorf("rate_limits[%d].actions: at least one is required", i)
		}
		var r rateLimit
		for j, a := range rl.GetActions() {
			act, err := compileRLAction(a)
			if err != nil {
				return nil, fmt.Errorf("rate_limits[%d].actions[%d]: %w", i, j, err)
			}
			r.actions = append(r.actions, act)
		}
		out = append(out, r)
	}
	return out, nil
}

func compileRLAction(a *routev3.RateLimit_Action) (rlAction, error) {
	switch s := a.GetActionSpecifier().(type) {
	case *routev3.RateLimit_Action_RequestHeaders_:
		rh := s.RequestHeaders
		act := rlAction{kind: rlRequestHeader, key: rh.GetDescriptorKey(), skipIfAbsent: rh.GetSkipIfAbsent()}
		act.canon, act.pseudo = headerKey(rh.GetHeaderName())
		return act, nil
	case *routev3.RateLimit_Action_GenericKey_:
		return rlAction{kind: rlGenericKey, key: cmp.Or(s.GenericKey.GetDescriptorKey(), "generic_key"),
			value: s.GenericKey.GetDescriptorValue()}, nil
	case *routev3.RateLimit_Action_HeaderValueMatch_:
		hv := s.HeaderValueMatch
		act := rlAction{kind: rlHeaderValueMatch, key: cmp.Or(hv.GetDescriptorKey(), "header_match"),
			value: hv.GetDescriptorValue(), defaultValue: hv.GetDefaultValue(), expectMatch: true}
		if e := hv.GetExpectMatch(); e != nil {
			act.expectMatch = e.GetValue()
		}
		for _, h := range hv.GetHeaders() {
			m, err := compileHeaderMatcher(h)
			if err != nil {
				return act, fmt.Errorf("header_value_match: %w", err)
			}
			act.headers = append(act.headers, m)
		}
		return act, nil
	case *routev3.RateLimit_Action_RemoteAddress_:
		return rlAction{kind: rlRemoteAddress, key: "remote_address"}, nil
	case *routev3.RateLimit_Action_DestinationCluster_:
		return rlAction{kind: rlDestinationCluster, key: "destination_cluster"}, nil
	}
	return rlAction{}, fmt.Errorf("%s is not supported (request_headers, generic_key, header_value_match, remote_address, destination_cluster)", actionName(a))
}

// actionName is the proto field name of a's action.
func actionName(a *routev3.RateLimit_Action) string {
	var name string
	a.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		name = string(fd.Name())
		return false
	})
	return cmp.Or(name, "an empty action")
}

// rateLimitDescriptors is the descriptors of the route's rate limits
// and, when the route has none or include_vh_rate_limits, its virtual
// host's, in that order, as Envoy builds them.
func (rt *route) rateLimitDescriptors(x *exchange) []*rlcommonv3.RateLimitDescriptor {
	if len(rt.rateLimits) == 0 && len(rt.vh.rateLimits) == 0 {
		return nil
	}
	var out []*rlcommonv3.RateLimitDescriptor
	for i := range rt.rateLimits {
		if d := rt.rateLimits[i].descriptor(x); d != nil {
			out = append(out, d)
		}
	}
	if len(rt.rateLimits) == 0 || rt.includeVHRateLimits {
		for i := range rt.vh.rateLimits {
			if d := rt.vh.rateLimits[i].descriptor(x); d != nil {
				out = append(out, d)
			}
		}
	}
	return out
}

// descriptor is the descriptor the actions build, nil when one of them
// produces no entry (Envoy then skips the whole descriptor).
func (r *rateLimit) descriptor(x *exchange) *rlcommonv3.RateLimitDescriptor {
	d := &rlcommonv3.RateLimitDescriptor{Entries: make([]*rlcommonv3.RateLimitDescriptor_Entry, 0, len(r.actions))}
	for i := range r.actions {
		a := &r.actions[i]
		key, value, ok := a.entry(x)
		switch {
		case ok:
			d.Entries = append(d.Entries, &rlcommonv3.RateLimitDescriptor_Entry{Key: key, Value: value})
		case a.kind == rlRequestHeader && a.skipIfAbsent:
		default:
			return nil
		}
	}
	if len(d.Entries) == 0 {
		return nil
	}
	return d
}

// entry is the descriptor entry of action a for x; false: none.
func (a *rlAction) entry(x *exchange) (string, string, bool) {
	switch a.kind {
	case rlRequestHeader:
		v, ok := x.v.header(a.canon, a.pseudo)
		return a.key, v, ok
	case rlGenericKey:
		return a.key, a.value, true
	case rlHeaderValueMatch:
		match := true
		for i := range a.headers {
			if !a.headers[i].match(&x.v) {
				match = false
				break
			}
		}
		if match == a.expectMatch {
			return a.key, a.value, true
		}
		return a.key, a.defaultValue, a.defaultValue != ""
	case rlRemoteAddress:
		addr := remoteAddr(x)
		return a.key, addr, addr != ""
	case rlDestinationCluster:
		// A route with weighted clusters picks one in the router, after
		// this filter: no single destination cluster yet, no entry.
		return a.key, x.rt.cluster, x.rt.cluster != ""
	}
	return "", "", false
}

// remoteAddr is the downstream address Envoy trusts with no
// xff_num_trusted_hops: the connection's peer.
func remoteAddr(x *exchange) string {
	if p, ok := x.getPeer(); ok && p.Addr.IsValid() {
		return p.Addr.Unmap().String()
	}
	host, _, err := net.SplitHostPort(x.r.RemoteAddr)
	if err != nil {
		return ""
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return ""
	}
	return a.Unmap().String()
}
