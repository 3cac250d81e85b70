package route

import (
	"fmt"
	"net/http"
	"net/textproto"
	"regexp"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// reqView is the per-request data the matchers read, computed once without
// allocating.
type reqView struct {
	r        *http.Request
	path     string // :path after normalization (with query)
	pathOnly string // :path without query
	query    string // raw query string (no '?')
	host     string // :authority
	scheme   string // :scheme
}

// newReqView is the view of r with path, its normalized origin-form
// target (no fragment).
func newReqView(r *http.Request, path string) reqView {
	v := reqView{r: r, host: r.Host, path: path, pathOnly: path}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		v.pathOnly, v.query = path[:i], path[i+1:]
	}
	switch {
	case r.URL != nil && r.URL.Scheme != "":
		v.scheme = r.URL.Scheme
	case r.TLS != nil:
		v.scheme = "https"
	default:
		v.scheme = "http"
	}
	return v
}

// header returns the value of a request header for matching: pseudo headers
// map to the request line; multiple values are joined with "," as Envoy's
// getAllOfHeaderAsString does (only then does it allocate).
func (v *reqView) header(canon string, pseudo byte) (string, bool) {
	if v.r == nil {
		return "", false // a connection (network RBAC) has no headers at all
	}
	switch pseudo {
	case pseudoMethod:
		return v.r.Method, true
	case pseudoAuthority:
		return v.host, true
	case pseudoScheme:
		return v.scheme, true
	case pseudoPath:
		return v.path, true
	}
	vals, ok := v.r.Header[canon]
	if !ok || len(vals) == 0 {
		return "", false
	}
	if len(vals) == 1 {
		return vals[0], true
	}
	return strings.Join(vals, ","), true
}

const (
	pseudoNone byte = iota
	pseudoMethod
	pseudoAuthority
	pseudoScheme
	pseudoPath
)

func headerKey(name string) (canon string, pseudo byte) {
	switch strings.ToLower(name) {
	case ":method":
		return "", pseudoMethod
	case ":authority", "host":
		return "", pseudoAuthority
	case ":scheme":
		return "", pseudoScheme
	case ":path":
		return "", pseudoPath
	}
	return textproto.CanonicalMIMEHeaderKey(name), pseudoNone
}

// ---- string matcher (envoy.type.matcher.v3.StringMatcher) ----

type strKind uint8

const (
	strExact strKind = iota
	strPrefix
	strSuffix
	strContains
	strRegex
)

type stringMatcher struct {
	kind       strKind
	s          string
	ignoreCase bool
	re         *regexp.Regexp
}

func compileStringMatcher(m *matcherv3.StringMatcher) (stringMatcher, error) {
	if m == nil {
		return stringMatcher{}, fmt.Errorf("string matcher missing")
	}
	sm := stringMatcher{ignoreCase: m.GetIgnoreCase()}
	switch p := m.MatchPattern.(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.kind, sm.s = strExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.kind, sm.s = strPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.kind, sm.s = strSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.kind, sm.s = strContains, p.Contains
		if sm.ignoreCase {
			sm.s = strings.ToLower(sm.s)
		}
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileRegex(p.SafeRegex)
		if err != nil {
			return sm, err
		}
		sm.kind, sm.re = strRegex, re
	default:
		return sm, fmt.Errorf("unsupported string matcher %T", m.MatchPattern)
	}
	return sm, nil
}

// compileRegex compiles an RE2 regex for a full match (Envoy's safe_regex
// semantics: the whole value must match).
func compileRegex(r *matcherv3.RegexMatcher) (*regexp.Regexp, error) {
	if r == nil {
		return nil, fmt.Errorf("regex matcher missing")
	}
	re, err := regexp.Compile(`^(?:` + r.GetRegex() + `)$`)
	if err != nil {
		return nil, fmt.Errorf("invalid RE2 regex %q: %w", r.GetRegex(), err)
	}
	return re, nil
}

func (m *stringMatcher) match(v string) bool {
	switch m.kind {
	case strExact:
		if m.ignoreCase {
			return strings.EqualFold(v, m.s)
		}
		return v == m.s
	case strPrefix:
		if m.ignoreCase {
			return len(v) >= len(m.s) && strings.EqualFold(v[:len(m.s)], m.s)
		}
		return strings.HasPrefix(v, m.s)
	case strSuffix:
		if m.ignoreCase {
			return len(v) >= len(m.s) && strings.EqualFold(v[len(v)-len(m.s):], m.s)
		}
		return strings.HasSuffix(v, m.s)
	case strContains:
		if m.ignoreCase {
			return containsFold(v, m.s)
		}
		return strings.Contains(v, m.s)
	case strRegex:
		return m.re.MatchString(v)
	}
	return false
}

// containsFold reports whether lower-case needle occurs in s, ASCII
// case-insensitively, without allocating.
func containsFold(s, needle string) bool {
	n := len(needle)
	if n == 0 {
		return true
	}
	for i := 0; i+n <= len(s); i++ {
		if strings.EqualFold(s[i:i+n], needle) {
			return true
		}
	}
	return false
}

// ---- header matcher (envoy.config.route.v3.HeaderMatcher) ----

type headerMatcher struct {
	name          string
	canon         string
	pseudo        byte
	present       bool // present_match kind
	presentValue  bool
	sm            stringMatcher
	invert        bool
	missingAsEmpt bool
	rangeMatch    bool
	rStart, rEnd  int64
}

func compileHeaderMatcher(h *routev3.HeaderMatcher) (headerMatcher, error) {
	hm := headerMatcher{name: h.GetName(), invert: h.GetInvertMatch(), missingAsEmpt: h.GetTreatMissingHeaderAsEmpty()}
	hm.canon, hm.pseudo = headerKey(h.GetName())
	var err error
	switch s := h.HeaderMatchSpecifier.(type) {
	case *routev3.HeaderMatcher_StringMatch:
		hm.sm, err = compileStringMatcher(s.StringMatch)
	case *routev3.HeaderMatcher_PresentMatch:
		hm.present, hm.presentValue = true, s.PresentMatch
	case *routev3.HeaderMatcher_ExactMatch:
		hm.sm = stringMatcher{kind: strExact, s: s.ExactMatch}
	case *routev3.HeaderMatcher_PrefixMatch:
		hm.sm = stringMatcher{kind: strPrefix, s: s.PrefixMatch}
	case *routev3.HeaderMatcher_SuffixMatch:
		hm.sm = stringMatcher{kind: strSuffix, s: s.SuffixMatch}
	case *routev3.HeaderMatcher_ContainsMatch:
		hm.sm = stringMatcher{kind: strContains, s: s.ContainsMatch}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		var re *regexp.Regexp
		re, err = compileRegex(s.SafeRegexMatch)
		hm.sm = stringMatcher{kind: strRegex, re: re}
	case *routev3.HeaderMatcher_RangeMatch:
		hm.rangeMatch, hm.rStart, hm.rEnd = true, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
	case nil:
		// Envoy: no specifier = the header must be present (deprecated
		// exact_match "" semantics: any value).
		hm.present, hm.presentValue = true, true
	default:
		err = fmt.Errorf("unsupported header match %T", s)
	}
	if err != nil {
		return hm, fmt.Errorf("header %q: %w", h.GetName(), err)
	}
	return hm, nil
}

// match implements Envoy's HeaderUtility::matchHeaders.
func (m *headerMatcher) match(v *reqView) bool {
	val, ok := v.header(m.canon, m.pseudo)
	if !ok && !m.missingAsEmpt {
		if m.invert {
			return m.present && m.presentValue
		}
		return m.present && !m.presentValue
	}
	var match bool
	switch {
	case m.present:
		match = m.presentValue
	case m.rangeMatch:
		n, err := parseInt64(val)
		match = err == nil && n >= m.rStart && n < m.rEnd
	default:
		match = m.sm.match(val)
	}
	return match != m.invert
}

func parseInt64(s string) (int64, error) {
	var n int64
	neg := false
	if s == "" {
		return 0, errInvalidInt
	}
	if s[0] == '-' || s[0] == '+' {
		neg = s[0] == '-'
		s = s[1:]
		if s == "" {
			return 0, errInvalidInt
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' || n > (1<<62)/10 {
			return 0, errInvalidInt
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, nil
}

var errInvalidInt = fmt.Errorf("invalid integer")

// ---- query parameter matcher ----

type queryMatcher struct {
	name    string
	present bool
	sm      stringMatcher
}

func compileQueryMatcher(q *routev3.QueryParameterMatcher) (queryMatcher, error) {
	qm := queryMatcher{name: q.GetName()}
	switch s := q.QueryParameterMatchSpecifier.(type) {
	case *routev3.QueryParameterMatcher_StringMatch:
		sm, err := compileStringMatcher(s.StringMatch)
		if err != nil {
			return qm, fmt.Errorf("query parameter %q: %w", q.GetName(), err)
		}
		qm.sm = sm
	case *routev3.QueryParameterMatcher_PresentMatch:
		if !s.PresentMatch {
			return qm, fmt.Errorf("query parameter %q: present_match false is invalid", q.GetName())
		}
		qm.present = true
	case nil:
		qm.present = true
	default:
		return qm, fmt.Errorf("query parameter %q: unsupported matcher %T", q.GetName(), s)
	}
	return qm, nil
}

// firstQueryValue returns the first value of the raw query parameter name
// (Envoy matches raw, not percent-decoded, values; "k" alone has value "").
func firstQueryValue(query, name string) (string, bool) {
	for query != "" {
		var kv string
		kv, query, _ = strings.Cut(query, "&")
		if k, val, _ := strings.Cut(kv, "="); k == name {
			return val, true
		}
	}
	return "", false
}

func (m *queryMatcher) match(v *reqView) bool {
	val, ok := firstQueryValue(v.query, m.name)
	if !ok {
		return false
	}
	if m.present {
		return true
	}
	return m.sm.match(val)
}

// ---- route match ----

type pathKind uint8

const (
	pathPrefix pathKind = iota
	pathExact
	pathRegex
	pathSeparatedPrefix
)

type routeMatch struct {
	kind          pathKind
	s             string
	caseSensitive bool
	re            *regexp.Regexp
	headers       []headerMatcher
	query         []queryMatcher
	grpc          bool
	fraction      *fraction
	// peer matches the authenticated peer's SPIFFE ID (filter_state
	// io.istio.peer_principal), all of them.
	peer []stringMatcher
}

func compileRouteMatch(m *routev3.RouteMatch) (routeMatch, error) {
	rm := routeMatch{caseSensitive: true}
	if m == nil {
		return rm, fmt.Errorf("route has no match")
	}
	if cs := m.GetCaseSensitive(); cs != nil {
		rm.caseSensitive = cs.GetValue()
	}
	switch p := m.PathSpecifier.(type) {
	case *routev3.RouteMatch_Prefix:
		rm.kind, rm.s = pathPrefix, p.Prefix
	case *routev3.RouteMatch_Path:
		rm.kind, rm.s = pathExact, p.Path
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileRegex(p.SafeRegex)
		if err != nil {
			return rm, err
		}
		rm.kind, rm.re = pathRegex, re
	case *routev3.RouteMatch_PathSeparatedPrefix:
		rm.kind, rm.s = pathSeparatedPrefix, p.PathSeparatedPrefix
	default:
		return rm, fmt.Errorf("unsupported path specifier %T", m.PathSpecifier)
	}
	for _, h := range m.GetHeaders() {
		hm, err := compileHeaderMatcher(h)
		if err != nil {
			return rm, err
		}
		rm.headers = append(rm.headers, hm)
	}
	for _, q := range m.GetQueryParameters() {
		qm, err := compileQueryMatcher(q)
		if err != nil {
			return rm, err
		}
		rm.query = append(rm.query, qm)
	}
	if m.GetGrpc() != nil {
		rm.grpc = true
	}
	if rf := m.GetRuntimeFraction(); rf != nil {
		f := compileFraction(rf.GetDefaultValue(), 0)
		rm.fraction = &f
	}
	for _, f := range m.GetFilterState() {
		sm, err := compilePeerMatcher(f)
		if err != nil {
			return rm, err
		}
		rm.peer = append(rm.peer, sm)
	}
	if len(m.GetCookies()) > 0 || m.GetTlsContext() != nil || len(m.GetDynamicMetadata()) > 0 {
		return rm, fmt.Errorf("unsupported route match fields (cookies/tls_context/dynamic_metadata)")
	}
	return rm, nil
}

// compilePeerMatcher compiles a route filter_state matcher. The only
// filter state a waypoint has is the peer's principal, set from the
// verified tunnel certificate (Peer.ID), never from request headers.
func compilePeerMatcher(f *matcherv3.FilterStateMatcher) (stringMatcher, error) {
	if f.GetKey() != mesh.PeerPrincipalFilterState {
		return stringMatcher{}, fmt.Errorf("filter_state key %q: only %q is supported", f.GetKey(), mesh.PeerPrincipalFilterState)
	}
	if f.GetStringMatch() == nil {
		return stringMatcher{}, fmt.Errorf("filter_state %q: only string_match is supported", f.GetKey())
	}
	return compileStringMatcher(f.GetStringMatch())
}

// matchPeer reports whether the authenticated peer's SPIFFE ID matches
// every filter_state matcher; without an identity nothing matches, as in
// Envoy when the filter state object is absent.
func (m *routeMatch) matchPeer(v *reqView) bool {
	if len(m.peer) == 0 {
		return true
	}
	if v.r == nil {
		return false
	}
	p, ok := PeerFrom(v.r.Context())
	if !ok || p.ID.IsZero() {
		return false
	}
	id := p.ID.String()
	for i := range m.peer {
		if !m.peer[i].match(id) {
			return false
		}
	}
	return true
}

func hasPrefixCase(s, prefix string, cs bool) bool {
	if cs {
		return strings.HasPrefix(s, prefix)
	}
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// matchPath reports whether the path part matches and, for rewrites, the
// length of the :path prefix the route matched (Envoy's matched path).
func (m *routeMatch) matchPath(v *reqView) (bool, int) {
	switch m.kind {
	case pathPrefix:
		// Envoy: prefix matches the beginning of :path (query included).
		return hasPrefixCase(v.path, m.s, m.caseSensitive), len(m.s)
	case pathExact:
		if m.caseSensitive {
			return v.pathOnly == m.s, len(m.s)
		}
		return strings.EqualFold(v.pathOnly, m.s), len(m.s)
	case pathRegex:
		// case_sensitive is ignored for safe_regex (Envoy docs).
		return m.re.MatchString(v.pathOnly), len(v.pathOnly)
	case pathSeparatedPrefix:
		p := v.pathOnly
		if !hasPrefixCase(p, m.s, m.caseSensitive) {
			return false, 0
		}
		return len(p) == len(m.s) || p[len(m.s)] == '/', len(m.s)
	}
	return false, 0
}

func (m *routeMatch) match(v *reqView, rnd func() uint64) (bool, int) {
	ok, n := m.matchPath(v)
	if !ok {
		return false, 0
	}
	if m.grpc && !isGRPC(v.r) {
		return false, 0
	}
	if !m.matchPeer(v) {
		return false, 0
	}
	for i := range m.headers {
		if !m.headers[i].match(v) {
			return false, 0
		}
	}
	for i := range m.query {
		if !m.query[i].match(v) {
			return false, 0
		}
	}
	if m.fraction != nil && !m.fraction.sample(rnd) {
		return false, 0
	}
	return true, n
}

func isGRPC(r *http.Request) bool {
	ct := r.Header["Content-Type"]
	return len(ct) > 0 && strings.HasPrefix(ct[0], "application/grpc")
}

// ---- virtual host selection ----

type domainIndex struct {
	exact    map[string]*vhost
	suffixes []domainEntry // "*.foo" -> ".foo", longest first
	prefixes []domainEntry // "foo*" -> "foo", longest first
	any      *vhost
}

type domainEntry struct {
	s  string
	vh *vhost
}

// find implements Envoy's virtual host search: exact domain, then the
// longest suffix wildcard, then the longest prefix wildcard, then "*".
// Wildcards must match at least one character. Matching is
// case-insensitive (Envoy lower-cases the host).
func (d *domainIndex) find(host string) *vhost {
	if hasUpper(host) {
		host = strings.ToLower(host)
	}
	if vh, ok := d.exact[host]; ok {
		return vh
	}
	for _, e := range d.suffixes {
		if len(host) > len(e.s) && strings.HasSuffix(host, e.s) {
			return e.vh
		}
	}
	for _, e := range d.prefixes {
		if len(host) > len(e.s) && strings.HasPrefix(host, e.s) {
			return e.vh
		}
	}
	return d.any
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return true
		}
	}
	return false
}

// stripPort removes a trailing :port from host (IPv6 literals in brackets).
func stripPort(host string) string {
	i := strings.LastIndexByte(host, ':')
	if i < 0 {
		return host
	}
	if strings.IndexByte(host, ']') > i { // "[::1]" without port
		return host
	}
	if host[0] != '[' && strings.Count(host, ":") > 1 { // bare IPv6
		return host
	}
	return host[:i]
}
