package route

import (
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// localRateLimitName is the filter's canonical extension name (the key of
// its typed_per_filter_config when the filter has another name).
const localRateLimitName = "envoy.filters.http.local_ratelimit"

// localRateLimitFilter is envoy.filters.http.local_ratelimit. Its own
// LocalRateLimit is the default; the most specific typed_per_filter_config
// (route, virtual host, route configuration) replaces it, with its own
// token bucket. Envoy semantics:
//   - filter_enabled and filter_enforced default to 0 % (their
//     default_value is sampled; runtime keys are not read): a filter config
//     without them does nothing, the usual shape when only per-route
//     configs set limits;
//   - each enabled request takes a token; without one it is rate limited:
//     when enforced, a local reply with status (default 429, and 429 for a
//     status below 400), body "local_rate_limited", details
//     local_rate_limited, flag RL and response_headers_to_add (gRPC:
//     trailers-only, UNAVAILABLE or RESOURCE_EXHAUSTED); when not
//     enforced, request_headers_to_add_when_not_enforced and the request
//     goes on;
//   - enable_x_ratelimit_headers DRAFT_VERSION_03: every response of an
//     enabled request, local replies included, gets x-ratelimit-limit (the
//     bucket's max_tokens), x-ratelimit-remaining (tokens left now) and
//     x-ratelimit-reset (seconds to the next fill, rounded up);
//   - enable_retry_after_header: a 429 gets Retry-After (seconds to the
//     next fill, at least 1) unless response_headers_to_add set one.
//
// x-envoy-ratelimited is not sent: Envoy's local filter does not send it
// (the global ratelimit filter does).
type localRateLimitFilter struct {
	name string
	def  *localRateLimit
}

type localRateLimit struct {
	bucket     *tokenBucket // nil: no token bucket (filter-level config only)
	enabled    fraction
	enforced   fraction
	status     int
	grpcStatus int // -1: mapped from status
	respOps    *headerOps
	reqOps     *headerOps // request_headers_to_add_when_not_enforced
	xHeaders   bool
	retryAfter bool
}

// compileLocalRateLimit compiles c; perRoute requires a token bucket, as
// Envoy rejects a per-route config without one. What the filter cannot do
// is an error (the config would be NACKed) rather than a silent change of
// semantics.
func compileLocalRateLimit(c *localratelimitv3.LocalRateLimit, perRoute bool) (*localRateLimit, error) {
	if err := unsupportedLocalRateLimit(c); err != nil {
		return nil, err
	}
	l := &localRateLimit{
		enabled:    compileFraction(c.GetFilterEnabled().GetDefaultValue(), 0),
		enforced:   compileFraction(c.GetFilterEnforced().GetDefaultValue(), 0),
		status:     http.StatusTooManyRequests,
		grpcStatus: -1,
		xHeaders:   c.GetEnableXRatelimitHeaders() == ratelimitv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03,
		retryAfter: c.GetEnableRetryAfterHeader(),
	}
	if s := int(c.GetStatus().GetCode()); s >= 400 {
		l.status = s
	}
	if c.GetRateLimitedAsResourceExhausted() {
		l.grpcStatus = 8 // RESOURCE_EXHAUSTED
	}
	var err error
	if l.respOps, err = compileHeaderOps(c.GetResponseHeadersToAdd(), nil); err != nil {
		return nil, fmt.Errorf("response_headers_to_add: %w", err)
	}
	if l.reqOps, err = compileHeaderOps(c.GetRequestHeadersToAddWhenNotEnforced(), nil); err != nil {
		return nil, fmt.Errorf("request_headers_to_add_when_not_enforced: %w", err)
	}
	switch tb := c.GetTokenBucket(); {
	case tb != nil:
		if l.bucket, err = compileTokenBucket(tb); err != nil {
			return nil, fmt.Errorf("token_bucket: %w", err)
		}
	case perRoute:
		return nil, fmt.Errorf("token_bucket is required in a per-route config")
	}
	return l, nil
}

// unsupportedLocalRateLimit names the first field set that the filter
// does not implement.
func unsupportedLocalRateLimit(c *localratelimitv3.LocalRateLimit) error {
	var field string
	switch {
	case len(c.GetDescriptors()) > 0:
		field = "descriptors"
	case len(c.GetRateLimits()) > 0:
		field = "rate_limits"
	case c.GetLocalRateLimitPerDownstreamConnection():
		field = "local_rate_limit_per_downstream_connection"
	case c.GetLocalClusterRateLimit() != nil:
		field = "local_cluster_rate_limit"
	default:
		return nil
	}
	return fmt.Errorf("%s is not supported", field)
}

func compileTokenBucket(tb *typev3.TokenBucket) (*tokenBucket, error) {
	perFill := uint32(1)
	if v := tb.GetTokensPerFill(); v != nil {
		perFill = v.GetValue()
	}
	interval := tb.GetFillInterval().AsDuration()
	switch {
	case tb.GetMaxTokens() == 0:
		return nil, fmt.Errorf("max_tokens must be > 0")
	case perFill == 0:
		return nil, fmt.Errorf("tokens_per_fill must be > 0")
	case interval < 50*time.Millisecond:
		// Envoy's limit, "to avoid too aggressive refills".
		return nil, fmt.Errorf("fill_interval must be >= 50ms")
	}
	return newTokenBucket(tb.GetMaxTokens(), perFill, interval), nil
}

// config is the LocalRateLimit that applies to x (nil: none).
func (f *localRateLimitFilter) config(x *exchange) *localRateLimit {
	if pf, ok := x.perFilter(f.name, localRateLimitName); ok {
		if pf.disabled {
			return nil
		}
		if pf.localRateLimit != nil {
			return pf.localRateLimit
		}
	}
	return f.def
}

func (f *localRateLimitFilter) decode(x *exchange) bool {
	l := f.config(x)
	if l == nil || l.bucket == nil || !l.enabled.sample(x.p.rnd) {
		return true
	}
	if l.xHeaders {
		x.rateLimited, x.rateLimitBy = l.bucket, f
	}
	if l.bucket.take() {
		return true
	}
	if !l.enforced.sample(x.p.rnd) {
		l.reqOps.apply(x.r.Header, nil)
		return true
	}
	x.info.addFlag(flagRL)
	h := make(http.Header, 4)
	l.respOps.apply(h, nil)
	if l.retryAfter && l.status == http.StatusTooManyRequests && len(h["Retry-After"]) == 0 {
		h["Retry-After"] = []string{strconv.FormatInt(max(l.bucket.nextFill(), 1), 10)}
	}
	f.encode(x, h)
	x.replyHeader = h
	x.localReply(l.status, "local_rate_limited", "local_rate_limited", l.grpcStatus, false, nil)
	return false
}

// encode adds the x-ratelimit headers of the bucket decode used.
func (f *localRateLimitFilter) encode(x *exchange, h http.Header) {
	b := x.rateLimited
	if b == nil || x.rateLimitBy != f {
		return
	}
	h["X-Ratelimit-Limit"] = []string{strconv.FormatUint(b.max, 10)}
	h["X-Ratelimit-Remaining"] = []string{strconv.FormatUint(b.remaining(), 10)}
	h["X-Ratelimit-Reset"] = []string{strconv.FormatInt(b.nextFill(), 10)}
}

// tokenBucket is Envoy's local rate limit token bucket: it starts full
// with max tokens and gets perFill more (up to max) every interval since
// it was made. Fills are counted lazily from the clock instead of by a
// timer, and the state is one atomic word (tokens in the high 32 bits,
// the number of the last fill applied in the low 32), so that taking a
// token neither allocates nor locks. Fill numbers wrap after 2^32
// intervals (6.8 years at the 50 ms minimum); only differences count.
type tokenBucket struct {
	max, perFill uint64
	interval     time.Duration
	start        time.Time
	state        atomic.Uint64
}

func newTokenBucket(max, perFill uint32, interval time.Duration) *tokenBucket {
	b := &tokenBucket{max: uint64(max), perFill: uint64(perFill), interval: interval, start: time.Now()}
	b.state.Store(uint64(max) << 32)
	return b
}

// fill is the number of fills due now.
func (b *tokenBucket) fill() uint32 { return uint32(time.Since(b.start) / b.interval) }

// refilled is state s with the fills up to fill applied. A fill number
// not after s's (another request stored a later one) changes nothing.
func (b *tokenBucket) refilled(s uint64, fill uint32) uint64 {
	tokens, last := s>>32, uint32(s)
	n := int32(fill - last)
	if n <= 0 {
		return s
	}
	// n*perFill cannot overflow: n < 2^31 and perFill < 2^32.
	tokens = min(b.max, tokens+uint64(n)*b.perFill)
	return tokens<<32 | uint64(fill)
}

// take takes a token, false when there is none.
func (b *tokenBucket) take() bool {
	fill := b.fill()
	for {
		old := b.state.Load()
		s := b.refilled(old, fill)
		if s>>32 == 0 {
			return false
		}
		if b.state.CompareAndSwap(old, s-1<<32) {
			return true
		}
	}
}

// remaining is the number of tokens now.
func (b *tokenBucket) remaining() uint64 { return b.refilled(b.state.Load(), b.fill()) >> 32 }

// nextFill is the number of seconds to the next fill, rounded up.
func (b *tokenBucket) nextFill() int64 {
	next := b.start.Add(time.Duration(uint64(time.Since(b.start)/b.interval)+1) * b.interval)
	return int64((time.Until(next) + time.Second - 1) / time.Second)
}

// ValidateLocalRateLimit reports whether the waypoint runs c: as the
// filter's config, or (perRoute) in typed_per_filter_config. The control
// plane checks what it sends with it, so that a config the waypoint would
// refuse is reported on its source instead of failing a whole chain.
func ValidateLocalRateLimit(c *localratelimitv3.LocalRateLimit, perRoute bool) error {
	if err := c.ValidateAll(); err != nil {
		return err
	}
	_, err := compileLocalRateLimit(c, perRoute)
	return err
}
