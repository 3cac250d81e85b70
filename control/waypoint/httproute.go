package waypoint

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/control/refgrant"
)

const kindHTTPRoute = "HTTPRoute"

// gammaRoute is an HTTPRoute attached to a Service (GAMMA), optionally to
// one port of it.
type gammaRoute struct {
	obj  *gatewayv1.HTTPRoute
	port uint32 // 0: every port
}

// indexHTTPRoutes attaches HTTPRoutes to the Services their parentRefs
// name. Only producer routes (in the Service's namespace) apply: a waypoint
// cannot tell which namespace a client is in.
func (t *translator) indexHTTPRoutes(hrs []*gatewayv1.HTTPRoute) {
	hrs = slices.DeleteFunc(slices.Clone(hrs), func(r *gatewayv1.HTTPRoute) bool { return r == nil })
	slices.SortFunc(hrs, func(a, b *gatewayv1.HTTPRoute) int { return olderFirst(&a.ObjectMeta, &b.ObjectMeta) })
	for _, hr := range hrs {
		for i, pr := range hr.Spec.ParentRefs {
			if pr.Group == nil || *pr.Group != "" || pr.Kind == nil || *pr.Kind != "Service" {
				continue // a Gateway parent: not for the mesh
			}
			path := fmt.Sprintf("spec.parentRefs[%d]", i)
			ns := hr.Namespace
			if pr.Namespace != nil && string(*pr.Namespace) != "" {
				ns = string(*pr.Namespace)
			}
			if ns != hr.Namespace {
				t.problem(kindHTTPRoute, hr.Namespace, hr.Name,
					"%s: consumer routes (parent Service in another namespace) are not supported by waypoints; ignored", path)
				continue
			}
			svc := t.services[t.fqdn(string(pr.Name), ns)]
			if svc == nil {
				t.problem(kindHTTPRoute, hr.Namespace, hr.Name, "%s: Service %s/%s is not in the mesh; ignored", path, ns, pr.Name)
				continue
			}
			g := &gammaRoute{obj: hr}
			if pr.Port != nil {
				g.port = uint32(*pr.Port)
				if svc.port(g.port) == nil {
					t.problem(kindHTTPRoute, hr.Namespace, hr.Name, "%s.port: Service %s/%s has no port %d; ignored", path, ns, pr.Name, g.port)
					continue
				}
			}
			t.httpRoutes[svc.fqdn] = append(t.httpRoutes[svc.fqdn], g)
		}
	}
}

type hrContext struct {
	t  *translator
	hr *gatewayv1.HTTPRoute
	pc *portConfig
}

func (c *hrContext) problem(format string, args ...any) {
	c.t.problem(kindHTTPRoute, c.hr.Namespace, c.hr.Name, format, args...)
}

// gammaCandidate is one match of one rule, ordered by Gateway API
// precedence.
type gammaCandidate struct {
	route     *gatewayv1.HTTPRoute
	rule      int
	match     int
	m         gatewayv1.HTTPRouteMatch
	pathKind  int // 0 exact, 1 prefix, 2 regex
	pathLen   int
	hasMethod bool
}

// gammaRoutes translates the HTTPRoutes attached to pc's service port. As
// in the Gateway API, all their rules are merged and ordered by match
// precedence: exact path, longest prefix, regex, method, number of header
// matches, number of query matches, oldest route, rule and match order.
func (t *translator) gammaRoutes(pc *portConfig, attached []*gammaRoute) []*routev3.Route {
	var cands []gammaCandidate
	for _, g := range attached {
		if g.port != 0 && g.port != pc.port.number {
			continue
		}
		for i, rule := range g.obj.Spec.Rules {
			ms := rule.Matches
			if len(ms) == 0 {
				ms = []gatewayv1.HTTPRouteMatch{{}}
			}
			for j, m := range ms {
				cd := gammaCandidate{route: g.obj, rule: i, match: j, m: m, pathKind: 1, pathLen: 1, hasMethod: m.Method != nil}
				if m.Path != nil {
					switch ptrOr(m.Path.Type, gatewayv1.PathMatchPathPrefix) {
					case gatewayv1.PathMatchExact:
						cd.pathKind = 0
					case gatewayv1.PathMatchRegularExpression:
						cd.pathKind = 2
					}
					cd.pathLen = len(ptrOr(m.Path.Value, "/"))
				}
				cands = append(cands, cd)
			}
		}
	}
	slices.SortStableFunc(cands, func(a, b gammaCandidate) int {
		return cmp.Or(
			cmp.Compare(a.pathKind, b.pathKind),
			-cmp.Compare(a.pathLen, b.pathLen),
			-cmp.Compare(boolInt(a.hasMethod), boolInt(b.hasMethod)),
			-cmp.Compare(len(a.m.Headers), len(b.m.Headers)),
			-cmp.Compare(len(a.m.QueryParams), len(b.m.QueryParams)),
			olderFirst(&a.route.ObjectMeta, &b.route.ObjectMeta),
			cmp.Compare(a.rule, b.rule),
			cmp.Compare(a.match, b.match),
		)
	})
	bases := map[string]*routev3.Route{}
	var out []*routev3.Route
	for _, cd := range cands {
		c := &hrContext{t: t, hr: cd.route, pc: pc}
		path := fmt.Sprintf("spec.rules[%d]", cd.rule)
		key := fmt.Sprintf("%s/%s.%d", cd.route.Namespace, cd.route.Name, cd.rule)
		base, seen := bases[key]
		if !seen {
			base = c.rule(path, &cd.route.Spec.Rules[cd.rule])
			if base != nil {
				base.Name = key
			}
			bases[key] = base
		}
		if base == nil {
			continue
		}
		matches, err := gammaMatch(cd.m)
		if err != nil {
			c.problem("%s.matches[%d].%v; this match never applies", path, cd.match, err)
			continue
		}
		for _, gm := range matches {
			r := cloneRoute(base)
			r.Match = gm.match
			fixPrefixRewrite(r, gm)
			out = append(out, r)
		}
	}
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// gammaRouteMatch is one Envoy match of a Gateway API match. A PathPrefix
// "/foo" becomes two: path "/foo" and prefix "/foo/" (Gateway API prefixes
// match whole path segments).
type gammaRouteMatch struct {
	match *routev3.RouteMatch
	// prefix is the Gateway API prefix this match stands for ("" for
	// exact and regex matches), exact whether it is the exact variant.
	prefix string
	exact  bool
}

func gammaMatch(m gatewayv1.HTTPRouteMatch) ([]gammaRouteMatch, error) {
	var headers []*routev3.HeaderMatcher
	if m.Method != nil {
		headers = append(headers, &routev3.HeaderMatcher{Name: ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exactMatcher(string(*m.Method))}})
	}
	for i, h := range m.Headers {
		sm := exactMatcher(h.Value)
		if ptrOr(h.Type, gatewayv1.HeaderMatchExact) == gatewayv1.HeaderMatchRegularExpression {
			if err := checkRegex(h.Value); err != nil {
				return nil, &fieldError{fmt.Sprintf("headers[%d].value", i), err}
			}
			sm = regexMatcher(h.Value)
		}
		headers = append(headers, &routev3.HeaderMatcher{Name: strings.ToLower(string(h.Name)),
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}})
	}
	var query []*routev3.QueryParameterMatcher
	for i, q := range m.QueryParams {
		sm := exactMatcher(q.Value)
		if ptrOr(q.Type, gatewayv1.QueryParamMatchExact) == gatewayv1.QueryParamMatchRegularExpression {
			if err := checkRegex(q.Value); err != nil {
				return nil, &fieldError{fmt.Sprintf("queryParams[%d].value", i), err}
			}
			sm = regexMatcher(q.Value)
		}
		query = append(query, &routev3.QueryParameterMatcher{Name: string(q.Name),
			QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: sm}})
	}
	mk := func(ps *routev3.RouteMatch) *routev3.RouteMatch {
		ps.Headers, ps.QueryParameters = headers, query
		return ps
	}
	typ, value := gatewayv1.PathMatchPathPrefix, "/"
	if m.Path != nil {
		typ, value = ptrOr(m.Path.Type, gatewayv1.PathMatchPathPrefix), ptrOr(m.Path.Value, "/")
	}
	switch typ {
	case gatewayv1.PathMatchExact:
		return []gammaRouteMatch{{match: mk(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: value}})}}, nil
	case gatewayv1.PathMatchRegularExpression:
		if err := checkRegex(value); err != nil {
			return nil, &fieldError{"path.value", err}
		}
		return []gammaRouteMatch{{match: mk(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{
			SafeRegex: &matcherv3.RegexMatcher{Regex: value}}})}}, nil
	}
	p := strings.TrimRight(value, "/")
	if p == "" {
		return []gammaRouteMatch{{match: mk(prefixRouteMatch("/")), prefix: "/"}}, nil
	}
	return []gammaRouteMatch{
		{match: mk(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: p}}), prefix: p, exact: true},
		{match: mk(prefixRouteMatch(p + "/")), prefix: p},
	}, nil
}

// prefixReplacement marks a ReplacePrefixMatch value on a route until the
// match is known (fixPrefixRewrite).
const prefixReplacementMarker = "\x00replace-prefix:"

// fixPrefixRewrite completes a ReplacePrefixMatch for the Envoy match the
// route got: Envoy replaces the matched prefix, which for "/foo/" includes
// the trailing slash.
func fixPrefixRewrite(r *routev3.Route, gm gammaRouteMatch) {
	fix := func(s string) (string, bool) {
		repl, ok := strings.CutPrefix(s, prefixReplacementMarker)
		if !ok {
			return s, false
		}
		switch {
		case gm.prefix == "" || gm.prefix == "/":
			// Regex/exact matches or "/": replace the leading "/".
			return strings.TrimRight(repl, "/") + "/", true
		case gm.exact:
			if repl == "" {
				return "/", true
			}
			return repl, true
		default:
			return strings.TrimRight(repl, "/") + "/", true
		}
	}
	switch a := r.Action.(type) {
	case *routev3.Route_Route:
		if s, ok := fix(a.Route.PrefixRewrite); ok {
			a.Route.PrefixRewrite = s
		}
	case *routev3.Route_Redirect:
		if pr, ok := a.Redirect.PathRewriteSpecifier.(*routev3.RedirectAction_PrefixRewrite); ok {
			if s, ok := fix(pr.PrefixRewrite); ok {
				pr.PrefixRewrite = s
			}
		}
	}
}

// rule translates a rule's filters, backends and timeouts; nil when the
// rule cannot be translated.
func (c *hrContext) rule(path string, rule *gatewayv1.HTTPRouteRule) *routev3.Route {
	r := &routev3.Route{}
	a := &routev3.RouteAction{Timeout: durationpb.New(0), RetryPolicy: defaultRetryPolicy()}
	redirect, broken := c.filters(path, rule.Filters, r, a)
	if broken {
		r.Action = directResponse(500, "")
		return r
	}
	if redirect != nil {
		r.Action = &routev3.Route_Redirect{Redirect: redirect}
		return r
	}
	c.timeouts(path, rule.Timeouts, a)
	if rule.Retry != nil {
		a.RetryPolicy = retryPolicy(rule.Retry, a.RetryPolicy.GetPerTryTimeout())
	}
	dests := c.destinations(path, rule.BackendRefs)
	if len(dests) == 0 {
		// No usable backend: the Gateway API answers 500.
		r.Action = directResponse(500, "")
		return r
	}
	clusterSpecifier(r, a, dests)
	for _, d := range dests {
		if hp := c.t.hashPolicy(d.ref); hp != nil {
			a.HashPolicy = []*routev3.RouteAction_HashPolicy{hp}
			break
		}
	}
	r.Action = &routev3.Route_Route{Route: a}
	return r
}

// filters applies a rule's filters to the route r and its action a. It
// returns the redirect if a filter asks for one, and broken when a filter
// is not supported: then the whole rule answers 500, as the Gateway API
// requires, rather than forwarding without the filter.
func (c *hrContext) filters(path string, filters []gatewayv1.HTTPRouteFilter, r *routev3.Route, a *routev3.RouteAction) (redirect *routev3.RedirectAction, broken bool) {
	for i, f := range filters {
		fp := fmt.Sprintf("%s.filters[%d]", path, i)
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
			add, remove := headerFilter(f.RequestHeaderModifier)
			r.RequestHeadersToAdd = append(r.RequestHeadersToAdd, add...)
			r.RequestHeadersToRemove = append(r.RequestHeadersToRemove, remove...)
		case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
			add, remove := headerFilter(f.ResponseHeaderModifier)
			r.ResponseHeadersToAdd = append(r.ResponseHeadersToAdd, add...)
			r.ResponseHeadersToRemove = append(r.ResponseHeadersToRemove, remove...)
		case gatewayv1.HTTPRouteFilterRequestRedirect:
			redirect = c.redirect(fp, f.RequestRedirect)
		case gatewayv1.HTTPRouteFilterURLRewrite:
			urlRewrite(a, f.URLRewrite)
		case gatewayv1.HTTPRouteFilterRequestMirror:
			c.mirror(fp, f.RequestMirror, a)
		default:
			c.problem("%s.type: filter %s is not supported; the rule answers 500", fp, f.Type)
			broken = true
		}
	}
	return redirect, broken
}

// urlRewrite applies a URLRewrite filter to a. A prefix replacement is only
// marked here: it depends on the match (fixPrefixRewrite completes it).
func urlRewrite(a *routev3.RouteAction, u *gatewayv1.HTTPURLRewriteFilter) {
	if u == nil {
		return
	}
	if u.Hostname != nil {
		a.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: string(*u.Hostname)}
	}
	if p := u.Path; p != nil {
		switch p.Type {
		case gatewayv1.FullPathHTTPPathModifier:
			a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
				Pattern: &matcherv3.RegexMatcher{Regex: "^/.*$"}, Substitution: ptrOr(p.ReplaceFullPath, "/")}
		case gatewayv1.PrefixMatchHTTPPathModifier:
			a.PrefixRewrite = prefixReplacementMarker + ptrOr(p.ReplacePrefixMatch, "/")
		}
	}
}

// mirror adds a RequestMirror filter's mirror policy to a, sampling its
// percent or fraction of requests (all by default).
func (c *hrContext) mirror(path string, m *gatewayv1.HTTPRequestMirrorFilter, a *routev3.RouteAction) {
	if m == nil {
		return
	}
	ref, ok := c.backend(path+".requestMirror.backendRef", m.BackendRef)
	if !ok {
		return
	}
	pct := percent(100)
	switch {
	case m.Percent != nil:
		pct = percent(float64(*m.Percent))
	case m.Fraction != nil && ptrOr(m.Fraction.Denominator, 100) > 0:
		pct = percent(100 * float64(m.Fraction.Numerator) / float64(ptrOr(m.Fraction.Denominator, 100)))
	}
	a.RequestMirrorPolicies = append(a.RequestMirrorPolicies, mirrorPolicy(c.pc.use(ref), pct))
}

// timeouts applies a rule's request timeout (the route's) and backend
// request timeout (each try's) to a; a value that does not parse is
// reported and left out.
func (c *hrContext) timeouts(path string, to *gatewayv1.HTTPRouteTimeouts, a *routev3.RouteAction) {
	if to == nil {
		return
	}
	if to.Request != nil {
		d, err := time.ParseDuration(string(*to.Request))
		if err != nil {
			c.problem("%s.timeouts.request: %v; no timeout", path, err)
		} else {
			a.Timeout = durationpb.New(d)
		}
	}
	if to.BackendRequest != nil {
		d, err := time.ParseDuration(string(*to.BackendRequest))
		if err != nil {
			c.problem("%s.timeouts.backendRequest: %v; ignored", path, err)
		} else if a.RetryPolicy != nil {
			a.RetryPolicy.PerTryTimeout = durationpb.New(d)
		}
	}
}

// retryPolicy is the retry policy of a rule's retry settings: none for zero
// attempts, else the default one with the attempts and codes of rt and the
// per-try timeout already set (the backend request timeout).
func retryPolicy(rt *gatewayv1.HTTPRouteRetry, perTryTimeout *durationpb.Duration) *routev3.RetryPolicy {
	if rt.Attempts != nil && *rt.Attempts == 0 {
		return nil
	}
	p := defaultRetryPolicy()
	p.PerTryTimeout = perTryTimeout
	if rt.Attempts != nil {
		p.NumRetries = wrapperspb.UInt32(uint32(*rt.Attempts))
	}
	if len(rt.Codes) > 0 {
		p.RetriableStatusCodes = nil
		for _, code := range rt.Codes {
			p.RetriableStatusCodes = append(p.RetriableStatusCodes, uint32(code))
		}
	}
	return p
}

// destinations are a rule's usable backends with their weights and header
// filters; a backend of weight 0 or that does not resolve is left out.
func (c *hrContext) destinations(path string, refs []gatewayv1.HTTPBackendRef) []weightedDestination {
	var dests []weightedDestination
	for i, b := range refs {
		bp := fmt.Sprintf("%s.backendRefs[%d]", path, i)
		w := ptrOr(b.Weight, 1)
		if w <= 0 {
			continue
		}
		ref, ok := c.backend(bp, b.BackendObjectReference)
		if !ok {
			continue
		}
		wd := weightedDestination{cluster: c.pc.use(ref), ref: ref, weight: uint32(w)}
		for j, f := range b.Filters {
			switch f.Type {
			case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
				wd.requestAdd, wd.requestRemove = headerFilter(f.RequestHeaderModifier)
			case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
				wd.responseAdd, wd.responseRemove = headerFilter(f.ResponseHeaderModifier)
			default:
				c.problem("%s.filters[%d].type: backend filter %s is not supported; ignored", bp, j, f.Type)
			}
		}
		dests = append(dests, wd)
	}
	return dests
}

func headerFilter(f *gatewayv1.HTTPHeaderFilter) ([]*corev3.HeaderValueOption, []string) {
	if f == nil {
		return nil, nil
	}
	var out []*corev3.HeaderValueOption
	for _, h := range f.Set {
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: strings.ToLower(string(h.Name)), Value: h.Value},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
	}
	for _, h := range f.Add {
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: strings.ToLower(string(h.Name)), Value: h.Value},
			AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD})
	}
	return out, lowerAll(f.Remove)
}

func (c *hrContext) redirect(path string, f *gatewayv1.HTTPRequestRedirectFilter) *routev3.RedirectAction {
	ra := &routev3.RedirectAction{ResponseCode: routev3.RedirectAction_FOUND}
	if f == nil {
		return ra
	}
	if f.Scheme != nil {
		ra.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: *f.Scheme}
	}
	if f.Hostname != nil {
		ra.HostRedirect = string(*f.Hostname)
	}
	switch {
	case f.Port != nil:
		ra.PortRedirect = uint32(*f.Port)
	case f.Scheme == nil && c.pc != nil && c.pc.port != nil:
		// Gateway API: without a scheme the port is the listener's (the
		// service port on a waypoint), left out when it is the default
		// one (80 or 443). With a scheme, the proxy drops the request's
		// port when the scheme changes (its default port).
		if n := c.pc.port.number; n != 80 && n != 443 {
			ra.PortRedirect = n
		}
	}
	if p := f.Path; p != nil {
		switch p.Type {
		case gatewayv1.FullPathHTTPPathModifier:
			ra.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: ptrOr(p.ReplaceFullPath, "/")}
		case gatewayv1.PrefixMatchHTTPPathModifier:
			ra.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: prefixReplacementMarker + ptrOr(p.ReplacePrefixMatch, "/")}
		}
	}
	if f.StatusCode != nil {
		code, ok := redirectCode(uint32(*f.StatusCode))
		if !ok {
			c.problem("%s.requestRedirect.statusCode: %d is not supported; using 302", path, *f.StatusCode)
			code = routev3.RedirectAction_FOUND
		}
		ra.ResponseCode = code
	}
	return ra
}

// backend resolves a backendRef to a Service port of the route's
// namespace, or of another one that a ReferenceGrant opens to the route
// (refgrant.HTTPRouteBackend).
func (c *hrContext) backend(path string, b gatewayv1.BackendObjectReference) (clusterRef, bool) {
	if ptrOr(b.Group, "") != "" || ptrOr(b.Kind, "Service") != "Service" {
		c.problem("%s: only Services are supported as backends; backend left out", path)
		return clusterRef{}, false
	}
	ns := cmp.Or(string(ptrOr(b.Namespace, "")), c.hr.Namespace)
	if !refgrant.HTTPRouteBackend(c.t.referenceGrants, c.hr.Namespace, ns, string(b.Name)) {
		c.problem("%s.namespace: no ReferenceGrant in namespace %s allows HTTPRoutes of namespace %s to reference Service %s; backend left out",
			path, ns, c.hr.Namespace, b.Name)
		return clusterRef{}, false
	}
	svc := c.t.services[c.t.fqdn(string(b.Name), ns)]
	if svc == nil {
		c.problem("%s: Service %s/%s is not in the mesh; backend left out", path, ns, b.Name)
		return clusterRef{}, false
	}
	if b.Port == nil {
		c.problem("%s.port: required for a Service backend; backend left out", path)
		return clusterRef{}, false
	}
	if svc.port(uint32(*b.Port)) == nil {
		c.problem("%s.port: Service %s/%s has no port %d; backend left out", path, ns, b.Name, *b.Port)
		return clusterRef{}, false
	}
	return clusterRef{svc: svc, port: uint32(*b.Port)}, true
}
