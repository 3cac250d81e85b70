package route

import (
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// ---- retry policy ----

type retryOn uint32

const (
	retry5xx retryOn = 1 << iota
	retryGatewayError
	retryReset
	retryConnectFailure
	retryRetriable4xx
	retryRefusedStream
	retryStatusCodes
	retryGRPCCancelled
	retryGRPCDeadlineExceeded
	retryGRPCResourceExhausted
	retryGRPCUnavailable
	retryGRPCInternal
)

// retryConditions are the retry_on conditions the router acts on. Others
// Envoy knows (retriable-headers, envoy-ratelimited, reset-before-request,
// http3-post-connect-failure, ...) are ignored; the control plane reports
// them instead of sending them (RetryCondition).
var retryConditions = map[string]retryOn{
	"5xx":                    retry5xx,
	"gateway-error":          retryGatewayError,
	"reset":                  retryReset,
	"connect-failure":        retryConnectFailure,
	"retriable-4xx":          retryRetriable4xx,
	"refused-stream":         retryRefusedStream,
	"retriable-status-codes": retryStatusCodes,
	"cancelled":              retryGRPCCancelled,
	"deadline-exceeded":      retryGRPCDeadlineExceeded,
	"resource-exhausted":     retryGRPCResourceExhausted,
	"unavailable":            retryGRPCUnavailable,
	"internal":               retryGRPCInternal,
}

// RetryCondition reports whether the router acts on the retry_on condition
// name.
func RetryCondition(name string) bool {
	_, ok := retryConditions[name]
	return ok
}

type retryPolicy struct {
	on          retryOn
	numRetries  int
	perTry      time.Duration
	statusCodes []int
	base, max   time.Duration
}

func compileRetry(rp *routev3.RetryPolicy) (*retryPolicy, error) {
	p := &retryPolicy{numRetries: 1, base: 25 * time.Millisecond}
	if n := rp.GetNumRetries(); n != nil {
		p.numRetries = int(n.GetValue())
	}
	for _, tok := range strings.Split(rp.GetRetryOn(), ",") {
		p.on |= retryConditions[strings.TrimSpace(tok)] // others: 0, ignored
	}
	if t := rp.GetPerTryTimeout(); t != nil {
		p.perTry = t.AsDuration()
	}
	for _, c := range rp.GetRetriableStatusCodes() {
		p.statusCodes = append(p.statusCodes, int(c))
	}
	if bo := rp.GetRetryBackOff(); bo != nil {
		if bi := bo.GetBaseInterval(); bi != nil {
			if bi.AsDuration() <= 0 {
				return nil, fmt.Errorf("retry_back_off.base_interval must be > 0")
			}
			p.base = bi.AsDuration()
		}
		if mi := bo.GetMaxInterval(); mi != nil {
			p.max = mi.AsDuration()
			if p.max < p.base {
				return nil, fmt.Errorf("retry_back_off.max_interval must be >= base_interval")
			}
		}
	}
	if p.max == 0 {
		p.max = 10 * p.base // Envoy: default max is 10x base
	}
	return p, nil
}

// retriableResponse implements Envoy's RetryStateImpl::wouldRetryFromHeaders.
func (p *retryPolicy) retriableResponse(resp *http.Response) bool {
	code := resp.StatusCode
	if p.on&retry5xx != 0 && code >= 500 && code <= 599 {
		return true
	}
	if p.on&retryGatewayError != 0 && (code == 502 || code == 503 || code == 504) {
		return true
	}
	if p.on&retryRetriable4xx != 0 && code == 409 {
		return true
	}
	if p.on&retryStatusCodes != 0 {
		for _, c := range p.statusCodes {
			if c == code {
				return true
			}
		}
	}
	if p.on&(retryGRPCCancelled|retryGRPCDeadlineExceeded|retryGRPCResourceExhausted|retryGRPCUnavailable|retryGRPCInternal) != 0 {
		if gs := resp.Header["Grpc-Status"]; len(gs) > 0 {
			switch gs[0] {
			case "1":
				return p.on&retryGRPCCancelled != 0
			case "4":
				return p.on&retryGRPCDeadlineExceeded != 0
			case "8":
				return p.on&retryGRPCResourceExhausted != 0
			case "13":
				return p.on&retryGRPCInternal != 0
			case "14":
				return p.on&retryGRPCUnavailable != 0
			}
		}
	}
	return false
}

// retriableFailure implements Envoy's wouldRetryFromReset (per-try timeouts
// are local resets there). Overflow is never retried.
func (p *retryPolicy) retriableFailure(k failKind) bool {
	switch k {
	case failOverflow, failNoHealthy, failNoCluster, failDownstream, failRouteTimeout:
		return false
	}
	if p.on&(retry5xx|retryGatewayError|retryReset) != 0 {
		return true
	}
	switch k {
	case failRefused:
		return p.on&retryRefusedStream != 0
	case failConnect:
		return p.on&retryConnectFailure != 0
	}
	return false
}

// backoff returns Envoy's JitteredExponentialBackOffStrategy delay for
// retry n (1-based): random in [0, (2^n - 1) * base), capped at max.
func (p *retryPolicy) backoff(n int, rnd func() uint64) time.Duration {
	if n > 30 {
		n = 30
	}
	ceil := uint64((1<<n)-1) * uint64(p.base)
	if ceil == 0 {
		return 0
	}
	d := time.Duration(rnd() % ceil)
	if d > p.max {
		d = p.max
	}
	return d
}

// ---- hash policy ----

type hashKind uint8

const (
	hashHeader hashKind = iota
	hashCookie
	hashSourceIP
	hashQuery
)

type hashPolicy struct {
	kind     hashKind
	terminal bool
	canon    string
	pseudo   byte
	name     string // cookie / query parameter name
	ttl      time.Duration
	hasTTL   bool
	path     string
	attrs    string // "; name=value" cookie attributes
	rewrite  *regexp.Regexp
	rewSub   string
}

func compileHashPolicy(h *routev3.RouteAction_HashPolicy) (hashPolicy, error) {
	hp := hashPolicy{terminal: h.GetTerminal()}
	switch s := h.PolicySpecifier.(type) {
	case *routev3.RouteAction_HashPolicy_Header_:
		hp.kind = hashHeader
		hp.canon, hp.pseudo = headerKey(s.Header.GetHeaderName())
		if rr := s.Header.GetRegexRewrite(); rr != nil {
			re, err := regexp.Compile(rr.GetPattern().GetRegex())
			if err != nil {
				return hp, fmt.Errorf("header regex_rewrite: %w", err)
			}
			hp.rewrite, hp.rewSub = re, re2Substitution(rr.GetSubstitution())
		}
	case *routev3.RouteAction_HashPolicy_Cookie_:
		hp.kind = hashCookie
		hp.name = s.Cookie.GetName()
		hp.path = s.Cookie.GetPath()
		if t := s.Cookie.GetTtl(); t != nil {
			hp.hasTTL, hp.ttl = true, t.AsDuration()
		}
		for _, a := range s.Cookie.GetAttributes() {
			hp.attrs += "; " + a.GetName()
			if a.GetValue() != "" {
				hp.attrs += "=" + a.GetValue()
			}
		}
	case *routev3.RouteAction_HashPolicy_ConnectionProperties_:
		if !s.ConnectionProperties.GetSourceIp() {
			return hp, fmt.Errorf("connection_properties without source_ip")
		}
		hp.kind = hashSourceIP
	case *routev3.RouteAction_HashPolicy_QueryParameter_:
		hp.kind = hashQuery
		hp.name = s.QueryParameter.GetName()
	default:
		return hp, fmt.Errorf("unsupported hash policy %T", s)
	}
	return hp, nil
}

// computeHash implements Envoy's HashPolicyImpl::generateHash (xxHash64
// of each key; results combined by rotate-left-1 xor; terminal stops once
// a hash exists). It may set x.setCookie (cookie policy with ttl and no
// cookie in the request), which the response carries.
func (x *exchange) computeHash(policies []hashPolicy, h http.Header) (uint64, bool) {
	var hash uint64
	have := false
	for i := range policies {
		hp := &policies[i]
		var nh uint64
		ok := false
		switch hp.kind {
		case hashHeader:
			var vals []string
			if hp.pseudo != pseudoNone {
				if v, found := x.v.header("", hp.pseudo); found {
					nh, ok = x.hashValue(hp, v), true
				}
				break
			}
			vals = h[hp.canon]
			if len(vals) == 1 {
				nh, ok = x.hashValue(hp, vals[0]), true
			} else if len(vals) > 1 {
				// Envoy hashes all values of a multi-valued header.
				nh, ok = x.hashValue(hp, strings.Join(vals, "")), true
			}
		case hashCookie:
			if v := cookieValue(h, hp.name); v != "" {
				nh, ok = xxhash.Sum64String(v), true
			} else if hp.hasTTL {
				v := x.newCookieValue()
				c := hp.name + `="` + v + `"`
				if hp.ttl > 0 {
					c += "; Max-Age=" + strconv.FormatInt(int64(hp.ttl/time.Second), 10)
				}
				if hp.path != "" {
					c += "; Path=" + hp.path
				}
				c += hp.attrs + "; HttpOnly"
				x.setCookie = c
				nh, ok = xxhash.Sum64String(v), true
			}
		case hashSourceIP:
			if a := x.sourceAddr(); a.IsValid() {
				var buf [64]byte
				nh, ok = xxhash.Sum64(a.AppendTo(buf[:0])), true
			}
		case hashQuery:
			if v, found := firstQueryValue(x.v.query, hp.name); found {
				nh, ok = xxhash.Sum64String(v), true
			}
		}
		if ok {
			old := uint64(0)
			if have {
				old = hash<<1 | hash>>63
			}
			hash = old ^ nh
			have = true
		}
		if hp.terminal && have {
			break
		}
	}
	return hash, have
}

func (x *exchange) hashValue(hp *hashPolicy, v string) uint64 {
	if hp.rewrite != nil {
		v = hp.rewrite.ReplaceAllString(v, hp.rewSub)
	}
	return xxhash.Sum64String(v)
}

// sourceAddr is the downstream client address (Peer.Addr, else the TCP
// peer of the request).
func (x *exchange) sourceAddr() netip.Addr {
	if p, ok := x.getPeer(); ok && p.Addr.IsValid() {
		return p.Addr.Unmap()
	}
	if ap, err := netip.ParseAddrPort(x.r.RemoteAddr); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// newCookieValue is Envoy's generated cookie: hex(xxHash64(remote address +
// local address)), stable per connection.
func (x *exchange) newCookieValue() string {
	s := x.r.RemoteAddr
	if p, ok := x.getPeer(); ok {
		s += p.Addr.String() + p.Dest.String()
	}
	return strconv.FormatUint(xxhash.Sum64String(s), 16)
}

// cookieValue returns the value of cookie name from Cookie headers (quotes
// stripped, as Envoy's parseCookieValue).
func cookieValue(h http.Header, name string) string {
	for _, line := range h["Cookie"] {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = strings.TrimSpace(part)
			k, v, ok := strings.Cut(part, "=")
			if !ok || k != name {
				continue
			}
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v
		}
	}
	return ""
}

// ---- mirror policy ----

type mirrorPolicy struct {
	cluster     string
	frac        fraction
	noSuffix    bool
	hostRewrite string
}

// shadowHost appends "-shadow" to the host part of an authority, keeping
// the port, as Envoy's shadow writer does ("foo:8080" -> "foo-shadow:8080").
func shadowHost(host string) string {
	h := host
	port := ""
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") && (host[0] == '[' || strings.Count(host, ":") == 1) {
		h, port = host[:i], host[i:]
	}
	return h + "-shadow" + port
}

// ---- redirect ----

type redirectAction struct {
	scheme        string
	host          string
	port          uint32
	path          string
	hasPath       bool
	pathHasQuery  bool
	prefixRewrite string
	hasPrefixRw   bool
	regex         *regexp.Regexp
	regexSub      string
	code          int
	stripQuery    bool
}

func compileRedirect(r *routev3.RedirectAction, m *routeMatch) (*redirectAction, error) {
	ra := &redirectAction{host: r.GetHostRedirect(), port: r.GetPortRedirect(), stripQuery: r.GetStripQuery()}
	switch s := r.SchemeRewriteSpecifier.(type) {
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			ra.scheme = "https"
		}
	case *routev3.RedirectAction_SchemeRedirect:
		ra.scheme = strings.ToLower(s.SchemeRedirect)
	}
	switch s := r.PathRewriteSpecifier.(type) {
	case *routev3.RedirectAction_PathRedirect:
		ra.path, ra.hasPath = s.PathRedirect, true
		ra.pathHasQuery = strings.Contains(s.PathRedirect, "?")
	case *routev3.RedirectAction_PrefixRewrite:
		ra.prefixRewrite, ra.hasPrefixRw = s.PrefixRewrite, true
	case *routev3.RedirectAction_RegexRewrite:
		re, err := regexp.Compile(s.RegexRewrite.GetPattern().GetRegex())
		if err != nil {
			return nil, fmt.Errorf("redirect regex_rewrite: %w", err)
		}
		ra.regex, ra.regexSub = re, re2Substitution(s.RegexRewrite.GetSubstitution())
	case nil:
	default:
		return nil, fmt.Errorf("unsupported redirect path rewrite %T", s)
	}
	switch r.GetResponseCode() {
	case routev3.RedirectAction_MOVED_PERMANENTLY:
		ra.code = 301
	case routev3.RedirectAction_FOUND:
		ra.code = 302
	case routev3.RedirectAction_SEE_OTHER:
		ra.code = 303
	case routev3.RedirectAction_TEMPORARY_REDIRECT:
		ra.code = 307
	case routev3.RedirectAction_PERMANENT_REDIRECT:
		ra.code = 308
	default:
		return nil, fmt.Errorf("unknown redirect response_code %v", r.GetResponseCode())
	}
	return ra, nil
}
