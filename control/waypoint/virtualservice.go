package waypoint

import (
	"fmt"
	"math"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	wellknown "github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/weft-mesh/weft/pkg/mesh"
	"github.com/weft-mesh/weft/waypoint/route"
)

const (
	kindVS   = "VirtualService"
	meshName = "mesh"
)

type virtualService struct {
	obj *networkingv1.VirtualService
}

// forMesh reports whether a gateways list includes the mesh (empty means
// the mesh only).
func forMesh(gateways []string) bool {
	return len(gateways) == 0 || slices.Contains(gateways, meshName)
}

// indexVirtualServices picks one VirtualService per host: the oldest valid
// one. VirtualServices bound to gateways only, and delegates (no hosts),
// are not for the mesh.
func (t *translator) indexVirtualServices(vss []*networkingv1.VirtualService) {
	vss = slices.DeleteFunc(slices.Clone(vss), func(v *networkingv1.VirtualService) bool { return v == nil })
	slices.SortFunc(vss, func(a, b *networkingv1.VirtualService) int { return olderFirst(&a.ObjectMeta, &b.ObjectMeta) })
	for _, vs := range vss {
		if !forMesh(vs.Spec.Gateways) || len(vs.Spec.Hosts) == 0 {
			continue
		}
		if !t.checkWeights(vs) {
			continue
		}
		if exportRestricted(vs.Spec.ExportTo) {
			t.problem(kindVS, vs.Namespace, vs.Name, "spec.exportTo: %v is not supported; the VirtualService applies to clients of every namespace", vs.Spec.ExportTo)
		}
		for i, h := range vs.Spec.Hosts {
			path := fmt.Sprintf("spec.hosts[%d]", i)
			if strings.Contains(h, "*") {
				t.problem(kindVS, vs.Namespace, vs.Name, "%s: wildcard host %q is not supported; ignored", path, h)
				continue
			}
			svc := t.resolveHost(h, vs.Namespace)
			if svc == nil {
				t.problem(kindVS, vs.Namespace, vs.Name, "%s: %q is not a Service of the mesh; ignored", path, h)
				continue
			}
			if len(t.httpRoutes[svc.fqdn]) > 0 {
				r := t.httpRoutes[svc.fqdn][0]
				t.problem(kindVS, vs.Namespace, vs.Name, "%s: %s has HTTPRoute %s/%s, which takes precedence; ignored for this host",
					path, svc.fqdn, r.obj.Namespace, r.obj.Name)
				continue
			}
			if prev := t.virtualServices[svc.fqdn]; prev != nil {
				if prev.obj != vs {
					t.problem(kindVS, vs.Namespace, vs.Name, "%s: %s already has the older VirtualService %s/%s; ignored for this host",
						path, svc.fqdn, prev.obj.Namespace, prev.obj.Name)
				}
				continue
			}
			t.virtualServices[svc.fqdn] = &virtualService{obj: vs}
		}
	}
}

// checkWeights applies Istio's validation: the weights of a route with
// several destinations add up to 100. A VirtualService failing it is not
// applied at all (Istio's webhook would have rejected it).
func (t *translator) checkWeights(vs *networkingv1.VirtualService) bool {
	ok := true
	check := func(path string, weights []int32) {
		if len(weights) < 2 {
			if len(weights) == 1 && (weights[0] < 0 || weights[0] > 100) {
				t.problem(kindVS, vs.Namespace, vs.Name, "%s: weight %d is out of range 0-100; the VirtualService is ignored", path, weights[0])
				ok = false
			}
			return
		}
		var sum int32
		for _, w := range weights {
			if w < 0 {
				t.problem(kindVS, vs.Namespace, vs.Name, "%s: negative weight %d; the VirtualService is ignored", path, w)
				ok = false
				return
			}
			sum += w
		}
		if sum != 100 {
			t.problem(kindVS, vs.Namespace, vs.Name, "%s: weights add up to %d, not 100; the VirtualService is ignored", path, sum)
			ok = false
		}
	}
	for i, r := range vs.Spec.Http {
		var ws []int32
		for _, d := range r.GetRoute() {
			ws = append(ws, d.Weight)
		}
		check(fmt.Sprintf("spec.http[%d].route", i), ws)
	}
	for i, r := range vs.Spec.Tcp {
		var ws []int32
		for _, d := range r.GetRoute() {
			ws = append(ws, d.Weight)
		}
		check(fmt.Sprintf("spec.tcp[%d].route", i), ws)
	}
	for i, r := range vs.Spec.Tls {
		var ws []int32
		for _, d := range r.GetRoute() {
			ws = append(ws, d.Weight)
		}
		check(fmt.Sprintf("spec.tls[%d].route", i), ws)
	}
	return ok
}

// tcpOnly: the VirtualService has a tcp or tls route and no http route
// for port.
func (v *virtualService) tcpOnly(port uint32) bool {
	hasTCP := false
	for _, r := range v.obj.Spec.Tcp {
		if len(r.Match) == 0 {
			hasTCP = true
		}
		for _, m := range r.Match {
			if m.Port == 0 || m.Port == port {
				hasTCP = true
			}
		}
	}
	for _, r := range v.obj.Spec.Tls {
		for _, m := range r.GetMatch() {
			if m.Port == 0 || m.Port == port {
				hasTCP = true
			}
		}
	}
	if !hasTCP {
		return false
	}
	for _, r := range v.obj.Spec.Http {
		if len(r.Match) == 0 {
			return false
		}
		for _, m := range r.Match {
			if m.Port == 0 || m.Port == port {
				return false
			}
		}
	}
	return true
}

// vsContext reports problems on one VirtualService.
type vsContext struct {
	t  *translator
	vs *networkingv1.VirtualService
	pc *portConfig
}

func (c *vsContext) problem(format string, args ...any) {
	c.t.problem(kindVS, c.vs.Namespace, c.vs.Name, format, args...)
}

// destination resolves an Istio destination to a cluster of pc's snapshot.
func (c *vsContext) destination(path string, d *networkingapi.Destination) (clusterRef, bool) {
	svc := c.t.resolveHost(d.GetHost(), c.vs.Namespace)
	if svc == nil {
		c.problem("%s.host: %q is not a Service of the mesh; destination left out", path, d.GetHost())
		return clusterRef{}, false
	}
	port, ok := destinationPort(svc, d.GetPort().GetNumber(), c.pc)
	if !ok {
		if d.GetPort().GetNumber() != 0 {
			c.problem("%s.port: %s has no port %d; destination left out", path, svc.fqdn, d.GetPort().GetNumber())
		} else {
			c.problem("%s.port: required, %s has several ports; destination left out", path, svc.fqdn)
		}
		return clusterRef{}, false
	}
	ref := clusterRef{svc: svc, port: port, subset: d.GetSubset()}
	if ref.subset != "" && !c.t.hasSubset(svc, ref.subset) {
		c.problem("%s.subset: %q is not defined by a DestinationRule for %s; destination left out", path, ref.subset, svc.fqdn)
		return clusterRef{}, false
	}
	return ref, true
}

// destinationPort picks the port of a destination: the given one, else
// the port being translated if the service has it, else its only port.
func destinationPort(svc *service, want uint32, pc *portConfig) (uint32, bool) {
	if want != 0 {
		return want, svc.port(want) != nil
	}
	if svc.port(pc.port.number) != nil {
		return pc.port.number, true
	}
	if len(svc.ports) == 1 {
		return svc.ports[0].number, true
	}
	return 0, false
}

func (t *translator) hasSubset(svc *service, subset string) bool {
	dr := t.destinationRules[svc.fqdn]
	return dr != nil && dr.subsets[subset] != nil
}

// vsHTTPRoutes translates the http routes of a VirtualService that apply to
// pc's port, in order.
func (t *translator) vsHTTPRoutes(pc *portConfig, vs *virtualService) []*routev3.Route {
	c := &vsContext{t: t, vs: vs.obj, pc: pc}
	var out []*routev3.Route
	for i, hr := range vs.obj.Spec.Http {
		if hr == nil {
			continue
		}
		path := fmt.Sprintf("spec.http[%d]", i)
		matches := c.matches(path, hr.Match)
		if len(matches) == 0 {
			continue
		}
		base := c.route(path, hr)
		if base == nil {
			continue
		}
		base.Name = fmt.Sprintf("%s/%s.%d", vs.obj.Namespace, vs.obj.Name, i)
		for _, m := range matches {
			r := cloneRoute(base)
			r.Match = m
			out = append(out, r)
		}
	}
	return out
}

// matches translates the matches of one http route that apply to the port.
func (c *vsContext) matches(path string, ms []*networkingapi.HTTPMatchRequest) []*routev3.RouteMatch {
	if len(ms) == 0 {
		return []*routev3.RouteMatch{prefixRouteMatch("/")}
	}
	var out []*routev3.RouteMatch
	for j, m := range ms {
		mp := fmt.Sprintf("%s.match[%d]", path, j)
		if m == nil || (m.Port != 0 && m.Port != c.pc.port.number) || !c.pc.bound(m.Gateways, c.vs.Namespace) {
			continue
		}
		if !c.sourceApplies(mp, m) {
			continue
		}
		rm, err := vsMatch(m)
		if err != nil {
			c.problem("%s.%v; this match never applies", mp, err)
			continue
		}
		if m.SourceNamespace != "" {
			rm.FilterState = []*matcherv3.FilterStateMatcher{sourceNamespaceMatcher(m.SourceNamespace)}
		}
		out = append(out, rm)
	}
	return out
}

// sourceApplies reports whether the source fields of a match can be
// honoured where pc translates it, reporting those that cannot. A waypoint
// knows its client's identity from the HBONE tunnel, hence its namespace,
// but not its pod labels (the workload index it gets carries none, and
// labels in headers could be forged). At a Gateway, Istio documents both
// fields as applying only with the mesh gateway.
func (c *vsContext) sourceApplies(mp string, m *networkingapi.HTTPMatchRequest) bool {
	switch {
	case len(m.SourceLabels) > 0:
		c.problem("%s: sourceLabels is not supported (a waypoint knows its client's identity, not its pod labels); this match never applies", mp)
		return false
	case m.SourceNamespace != "" && len(validation.IsDNS1123Label(m.SourceNamespace)) > 0:
		c.problem("%s: sourceNamespace %q is not a namespace name; this match never applies", mp, m.SourceNamespace)
		return false
	case m.SourceNamespace != "" && c.pc.gateway != "":
		c.problem("%s: sourceNamespace applies only to the mesh (Istio: the VirtualService's gateways must include mesh), not to Gateway %s; this match never applies", mp, c.pc.gateway)
		return false
	}
	return true
}

// sourceNamespaceMatcher matches requests whose authenticated peer (the
// verified HBONE client certificate, the identity AuthorizationPolicy
// trusts) is in namespace ns. Istio's waypoints compare sourceNamespace
// with the waypoint's own namespace instead, which says nothing about the
// client; Weft matches the client, which is what the field means.
func sourceNamespaceMatcher(ns string) *matcherv3.FilterStateMatcher {
	return &matcherv3.FilterStateMatcher{Key: mesh.PeerPrincipalFilterState,
		Matcher: &matcherv3.FilterStateMatcher_StringMatch{StringMatch: namespaceMatcher(ns)}}
}

type fieldError struct {
	field string
	err   error
}

func (e *fieldError) Error() string { return e.field + ": " + e.err.Error() }

func vsMatch(m *networkingapi.HTTPMatchRequest) (*routev3.RouteMatch, error) {
	rm := &routev3.RouteMatch{}
	switch u := m.Uri.GetMatchType().(type) {
	case nil:
		rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
	case *networkingapi.StringMatch_Exact:
		rm.PathSpecifier = &routev3.RouteMatch_Path{Path: u.Exact}
	case *networkingapi.StringMatch_Prefix:
		rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: u.Prefix}
	case *networkingapi.StringMatch_Regex:
		if err := checkRegex(u.Regex); err != nil {
			return nil, &fieldError{"uri.regex", err}
		}
		rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: u.Regex}}
	}
	if m.IgnoreUriCase {
		rm.CaseSensitive = wrapperspb.Bool(false)
	}
	for _, h := range []struct {
		name string
		sm   *networkingapi.StringMatch
	}{{":scheme", m.Scheme}, {":method", m.Method}, {":authority", m.Authority}} {
		if h.sm == nil {
			continue
		}
		hm, err := headerMatch(h.name, h.sm, false)
		if err != nil {
			return nil, &fieldError{strings.TrimPrefix(h.name, ":"), err}
		}
		rm.Headers = append(rm.Headers, hm)
	}
	for _, name := range sortedKeys(m.Headers) {
		hm, err := headerMatch(strings.ToLower(name), m.Headers[name], false)
		if err != nil {
			return nil, &fieldError{"headers." + name, err}
		}
		rm.Headers = append(rm.Headers, hm)
	}
	for _, name := range sortedKeys(m.WithoutHeaders) {
		hm, err := headerMatch(strings.ToLower(name), m.WithoutHeaders[name], true)
		if err != nil {
			return nil, &fieldError{"withoutHeaders." + name, err}
		}
		rm.Headers = append(rm.Headers, hm)
	}
	for _, name := range sortedKeys(m.QueryParams) {
		qm := &routev3.QueryParameterMatcher{Name: name}
		sm, err := stringMatcher(m.QueryParams[name])
		if err != nil {
			return nil, &fieldError{"queryParams." + name, err}
		}
		if sm == nil {
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		} else {
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: sm}
		}
		rm.QueryParameters = append(rm.QueryParameters, qm)
	}
	return rm, nil
}

// stringMatcher converts an Istio StringMatch; nil (and no error) for an
// empty match, which Istio treats as "present".
func stringMatcher(sm *networkingapi.StringMatch) (*matcherv3.StringMatcher, error) {
	switch v := sm.GetMatchType().(type) {
	case *networkingapi.StringMatch_Exact:
		return exactMatcher(v.Exact), nil
	case *networkingapi.StringMatch_Prefix:
		if v.Prefix == "" {
			return nil, nil
		}
		return prefixMatcher(v.Prefix), nil
	case *networkingapi.StringMatch_Regex:
		if err := checkRegex(v.Regex); err != nil {
			return nil, err
		}
		return regexMatcher(v.Regex), nil
	}
	return nil, nil
}

func headerMatch(name string, sm *networkingapi.StringMatch, invert bool) (*routev3.HeaderMatcher, error) {
	hm := &routev3.HeaderMatcher{Name: name, InvertMatch: invert}
	m, err := stringMatcher(sm)
	if err != nil {
		return nil, err
	}
	if m == nil {
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
	} else {
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: m}
	}
	return hm, nil
}

// redirect translates an http route's redirect.
func (c *vsContext) redirect(path string, rd *networkingapi.HTTPRedirect) *routev3.RedirectAction {
	ra := &routev3.RedirectAction{HostRedirect: rd.Authority}
	switch {
	case rd.Uri != "":
		ra.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: rd.Uri}
	case rd.PrefixRewrite != "":
		ra.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: rd.PrefixRewrite}
	}
	switch p := rd.RedirectPort.(type) {
	case *networkingapi.HTTPRedirect_Port:
		ra.PortRedirect = p.Port
	case *networkingapi.HTTPRedirect_DerivePort:
		// As istiod: routes are made per port, so the request's
		// port is the one they are made for.
		if p.DerivePort == networkingapi.HTTPRedirect_FROM_REQUEST_PORT && c.pc != nil && c.pc.port != nil {
			ra.PortRedirect = c.pc.port.number
		}
	}
	if rd.Scheme != "" {
		ra.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: rd.Scheme}
	}
	code, ok := redirectCode(rd.RedirectCode)
	if !ok {
		c.problem("%s.redirect.redirectCode: %d is not a redirect status (301, 302, 303, 307, 308); using 301", path, rd.RedirectCode)
	}
	ra.ResponseCode = code
	return ra
}

// route translates everything of an http route but its match; nil when the
// route cannot be translated.
func (c *vsContext) route(path string, hr *networkingapi.HTTPRoute) *routev3.Route {
	r := &routev3.Route{}
	switch {
	case hr.Redirect != nil:
		r.Action = &routev3.Route_Redirect{Redirect: c.redirect(path, hr.Redirect)}
	case hr.DirectResponse != nil:
		body := hr.DirectResponse.GetBody().GetString_()
		if b := hr.DirectResponse.GetBody().GetBytes(); len(b) > 0 {
			body = string(b)
		}
		st := hr.DirectResponse.Status
		if st < 200 || st > 599 {
			c.problem("%s.directResponse.status: %d is not an HTTP status; route ignored", path, st)
			return nil
		}
		r.Action = directResponse(st, body)
	case len(hr.Route) > 0:
		a := c.routeAction(path, hr, r)
		if a == nil {
			return nil
		}
		if a.ClusterSpecifier == nil {
			// Every destination was left out: fail like Istio does for
			// a missing cluster.
			r.Action = directResponse(503, "")
		} else {
			r.Action = &routev3.Route_Route{Route: a}
		}
	default:
		c.problem("%s: no route, redirect or directResponse; route ignored", path)
		return nil
	}
	if h := hr.Headers; h != nil {
		r.RequestHeadersToAdd = append(headerOps(h.GetRequest().GetSet(), h.GetRequest().GetAdd()), r.RequestHeadersToAdd...)
		r.RequestHeadersToRemove = append(slices.Clone(h.GetRequest().GetRemove()), r.RequestHeadersToRemove...)
		r.ResponseHeadersToAdd = append(headerOps(h.GetResponse().GetSet(), h.GetResponse().GetAdd()), r.ResponseHeadersToAdd...)
		r.ResponseHeadersToRemove = append(slices.Clone(h.GetResponse().GetRemove()), r.ResponseHeadersToRemove...)
	}
	if hr.Fault != nil {
		if f := c.fault(path+".fault", hr.Fault); f != nil {
			setPerFilter(r, wellknown.Fault, f)
			c.pc.fault = true
		}
	}
	if hr.CorsPolicy != nil {
		if cp := c.cors(path+".corsPolicy", hr.CorsPolicy); cp != nil {
			setPerFilter(r, wellknown.CORS, cp)
			c.pc.cors = true
		}
	}
	return r
}

func setPerFilter(r *routev3.Route, name string, cfg interface{ ProtoReflect() protoreflectMessage }) {
	if r.TypedPerFilterConfig == nil {
		r.TypedPerFilterConfig = map[string]*anyMsg{}
	}
	r.TypedPerFilterConfig[name] = mustAny(cfg)
}

func redirectCode(code uint32) (routev3.RedirectAction_RedirectResponseCode, bool) {
	switch code {
	case 0, 301:
		return routev3.RedirectAction_MOVED_PERMANENTLY, true
	case 302:
		return routev3.RedirectAction_FOUND, true
	case 303:
		return routev3.RedirectAction_SEE_OTHER, true
	case 307:
		return routev3.RedirectAction_TEMPORARY_REDIRECT, true
	case 308:
		return routev3.RedirectAction_PERMANENT_REDIRECT, true
	}
	return routev3.RedirectAction_MOVED_PERMANENTLY, false
}

// routeAction translates destinations, rewrite, timeout, retries and
// mirrors. Destination header operations of a single destination go to r.
func (c *vsContext) routeAction(path string, hr *networkingapi.HTTPRoute, r *routev3.Route) *routev3.RouteAction {
	a := &routev3.RouteAction{Timeout: durationpb.New(0)}
	switch {
	case hr.Timeout == nil:
	case hr.Timeout.AsDuration() < 0:
		c.problem("%s.timeout: %v is negative; ignored (no timeout)", path, hr.Timeout.AsDuration())
	default:
		a.Timeout = durationpb.New(hr.Timeout.AsDuration())
	}
	var dests []weightedDestination
	for k, d := range hr.Route {
		dp := fmt.Sprintf("%s.route[%d]", path, k)
		if d == nil || (d.Weight == 0 && len(hr.Route) > 1) {
			continue
		}
		ref, ok := c.destination(dp+".destination", d.Destination)
		if !ok {
			continue
		}
		wd := weightedDestination{cluster: c.pc.use(ref), ref: ref, weight: uint32(d.Weight)}
		if h := d.Headers; h != nil {
			wd.requestAdd = headerOps(h.GetRequest().GetSet(), h.GetRequest().GetAdd())
			wd.requestRemove = slices.Clone(h.GetRequest().GetRemove())
			wd.responseAdd = headerOps(h.GetResponse().GetSet(), h.GetResponse().GetAdd())
			wd.responseRemove = slices.Clone(h.GetResponse().GetRemove())
		}
		dests = append(dests, wd)
	}
	if len(dests) > 0 {
		clusterSpecifier(r, a, dests)
		for _, d := range dests {
			if hp := c.t.hashPolicy(d.ref); hp != nil {
				a.HashPolicy = []*routev3.RouteAction_HashPolicy{hp}
				break
			}
		}
	}
	if rw := hr.Rewrite; rw != nil {
		if rw.Uri != "" {
			a.PrefixRewrite = rw.Uri
		}
		if rr := rw.UriRegexRewrite; rr != nil {
			if err := checkRegex(rr.Match); err != nil {
				c.problem("%s.rewrite.uriRegexRewrite.match: %v; route ignored", path, err)
				return nil
			}
			if rw.Uri != "" {
				c.problem("%s.rewrite: uri and uriRegexRewrite are exclusive; using uri", path)
			} else {
				a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: rr.Match}, Substitution: rr.Rewrite}
			}
		}
		if rw.Authority != "" {
			a.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: rw.Authority}
		}
	}
	a.RetryPolicy = c.retryPolicy(path+".retries", hr.Retries)
	if hr.Mirror != nil {
		pct := percent(100)
		switch {
		case hr.MirrorPercentage != nil:
			pct = c.percentage(path+".mirrorPercentage", hr.MirrorPercentage.Value)
		case legacyMirrorPercent(hr) != nil:
			pct = c.percentage(path+".mirrorPercent", float64(legacyMirrorPercent(hr).Value))
		}
		if ref, ok := c.destination(path+".mirror", hr.Mirror); ok {
			a.RequestMirrorPolicies = append(a.RequestMirrorPolicies, mirrorPolicy(c.pc.use(ref), pct))
		}
	}
	for k, m := range hr.Mirrors {
		pct := percent(100)
		if m.GetPercentage() != nil {
			pct = c.percentage(fmt.Sprintf("%s.mirrors[%d].percentage", path, k), m.Percentage.Value)
		}
		if ref, ok := c.destination(fmt.Sprintf("%s.mirrors[%d].destination", path, k), m.GetDestination()); ok {
			a.RequestMirrorPolicies = append(a.RequestMirrorPolicies, mirrorPolicy(c.pc.use(ref), pct))
		}
	}
	return a
}

func mirrorPolicy(cluster string, pct *typev3.FractionalPercent) *routev3.RouteAction_RequestMirrorPolicy {
	return &routev3.RouteAction_RequestMirrorPolicy{
		Cluster:         cluster,
		RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: pct},
	}
}

// retryOnValues are the retry conditions Istio accepts; those the waypoint
// router does not act on (route.RetryCondition) are reported as not
// supported, the others as unknown.
var retryOnValues = map[string]bool{
	"5xx": true, "gateway-error": true, "reset": true, "connect-failure": true, "envoy-ratelimited": true,
	"retriable-4xx": true, "refused-stream": true, "retriable-status-codes": true, "retriable-headers": true,
	"cancelled": true, "deadline-exceeded": true, "internal": true, "resource-exhausted": true, "unavailable": true,
	"reset-before-request": true, "http3-post-connect-failure": true,
}

// retryPolicy translates retries; unset is Istio's default policy, and
// attempts 0 (or negative) no retries.
func (c *vsContext) retryPolicy(path string, r *networkingapi.HTTPRetry) *routev3.RetryPolicy {
	if r == nil {
		return defaultRetryPolicy()
	}
	if r.Attempts <= 0 {
		if r.Attempts < 0 {
			c.problem("%s.attempts: %d is negative; no retries", path, r.Attempts)
		} else if r.PerTryTimeout != nil || r.RetryOn != "" {
			c.problem("%s: attempts is 0 (no retries); perTryTimeout and retryOn are ignored", path)
		}
		return nil
	}
	p := defaultRetryPolicy()
	p.NumRetries = wrapperspb.UInt32(uint32(r.Attempts))
	if t := r.PerTryTimeout; t != nil {
		if t.AsDuration() < 0 {
			c.problem("%s.perTryTimeout: %v is negative; ignored (no per-try timeout)", path, t.AsDuration())
		} else {
			p.PerTryTimeout = durationpb.New(t.AsDuration())
		}
	}
	if r.RetryOn != "" {
		on, codes := c.retryOn(path+".retryOn", r.RetryOn)
		if on == "" {
			c.problem("%s.retryOn: no supported condition; using the default (%s)", path, p.RetryOn)
			return p
		}
		p.RetryOn, p.RetriableStatusCodes = on, codes
	}
	return p
}

// retryOn splits Istio's retryOn: conditions the router acts on stay,
// status codes become retriable_status_codes (with the
// retriable-status-codes condition), the rest is reported.
func (c *vsContext) retryOn(path, s string) (string, []uint32) {
	var on []string
	var codes []uint32
	for _, v := range strings.Split(s, ",") {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		var code uint32
		if _, err := fmt.Sscanf(v, "%d", &code); err == nil && fmt.Sprint(code) == v {
			if code < 100 || code > 599 {
				c.problem("%s: %q is not an HTTP status; ignored", path, v)
				continue
			}
			codes = append(codes, code)
			continue
		}
		switch {
		case !retryOnValues[v]:
			c.problem("%s: unknown retry condition %q; ignored", path, v)
		case !route.RetryCondition(v):
			c.problem("%s: %q is not supported; ignored", path, v)
		case !slices.Contains(on, v):
			on = append(on, v)
		}
	}
	if len(codes) > 0 && !slices.Contains(on, "retriable-status-codes") {
		on = append(on, "retriable-status-codes")
	}
	slices.Sort(codes)
	return strings.Join(on, ","), slices.Compact(codes)
}

// percentage is percent(v), reporting a value outside 0-100 (clamped, as
// percent does).
func (c *vsContext) percentage(path string, v float64) *typev3.FractionalPercent {
	if v < 0 || v > 100 {
		c.problem("%s: %v is outside 0-100; using %v", path, v, math.Max(0, math.Min(100, v)))
	}
	return percent(v)
}

// faultPercent is a fault's percentage, else its deprecated integer
// percent (0 when unset, as in Istio).
func (c *vsContext) faultPercent(path string, pct *networkingapi.Percent, deprecated int32) *typev3.FractionalPercent {
	if pct != nil {
		return c.percentage(path+".percentage", pct.Value)
	}
	return c.percentage(path+".percent", float64(deprecated))
}

func (c *vsContext) fault(path string, f *networkingapi.HTTPFaultInjection) *faultv3.HTTPFault {
	out := &faultv3.HTTPFault{}
	if f.Delay != nil {
		out.Delay = c.faultDelay(path+".delay", f.Delay)
	}
	if f.Abort != nil {
		out.Abort = c.faultAbort(path+".abort", f.Abort)
	}
	if out.Delay == nil && out.Abort == nil {
		return nil
	}
	return out
}

// faultDelay translates a delay; nil when none can be injected.
func (c *vsContext) faultDelay(path string, d *networkingapi.HTTPFaultInjection_Delay) *faultcommonv3.FaultDelay {
	fd := d.GetFixedDelay()
	switch {
	case fd == nil:
		c.problem("%s: only fixedDelay is supported; no delay injected", path)
		return nil
	case fd.AsDuration() <= 0:
		c.problem("%s.fixedDelay: %v is not positive; no delay injected", path, fd.AsDuration())
		return nil
	}
	return &faultcommonv3.FaultDelay{
		FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(fd.AsDuration())},
		//lint:ignore SA1019 users still write the deprecated field; it is honoured or reported
		Percentage: c.faultPercent(path, d.Percentage, d.Percent),
	}
}

// faultAbort translates an abort; nil when none can be injected.
func (c *vsContext) faultAbort(path string, a *networkingapi.HTTPFaultInjection_Abort) *faultv3.FaultAbort {
	fa := &faultv3.FaultAbort{Percentage: c.faultPercent(path, a.Percentage, 0)}
	switch e := a.ErrorType.(type) {
	case *networkingapi.HTTPFaultInjection_Abort_HttpStatus:
		if e.HttpStatus < 200 || e.HttpStatus > 599 {
			c.problem("%s.httpStatus: %d is not an HTTP status; no abort injected", path, e.HttpStatus)
			return nil
		}
		fa.ErrorType = &faultv3.FaultAbort_HttpStatus{HttpStatus: uint32(e.HttpStatus)}
	case *networkingapi.HTTPFaultInjection_Abort_GrpcStatus:
		code, ok := grpcCode(e.GrpcStatus)
		if !ok {
			c.problem("%s.grpcStatus: unknown gRPC status %q; no abort injected", path, e.GrpcStatus)
			return nil
		}
		fa.ErrorType = &faultv3.FaultAbort_GrpcStatus{GrpcStatus: code}
	default:
		c.problem("%s: only httpStatus and grpcStatus are supported; no abort injected", path)
		return nil
	}
	return fa
}

func grpcCode(s string) (uint32, bool) {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		name := strings.ToUpper(c.String())
		// codes.Code.String gives "DeadlineExceeded"; Istio uses
		// "DEADLINE_EXCEEDED".
		var b strings.Builder
		for i, r := range c.String() {
			if i > 0 && r >= 'A' && r <= 'Z' {
				b.WriteByte('_')
			}
			b.WriteRune(r)
		}
		if strings.EqualFold(s, b.String()) || strings.EqualFold(s, name) {
			return uint32(c), true
		}
	}
	var n uint32
	if _, err := fmt.Sscanf(s, "%d", &n); err == nil && n <= 16 {
		return n, true
	}
	return 0, false
}

func (c *vsContext) cors(path string, p *networkingapi.CorsPolicy) *corsv3.CorsPolicy {
	out := &corsv3.CorsPolicy{
		AllowMethods:  strings.Join(p.AllowMethods, ","),
		AllowHeaders:  strings.Join(p.AllowHeaders, ","),
		ExposeHeaders: strings.Join(p.ExposeHeaders, ","),
	}
	//lint:ignore SA1019 users still write the deprecated field; it is honoured or reported
	for _, o := range p.AllowOrigin {
		out.AllowOriginStringMatch = append(out.AllowOriginStringMatch, exactMatcher(o))
	}
	for i, o := range p.AllowOrigins {
		m, err := stringMatcher(o)
		if err != nil {
			c.problem("%s.allowOrigins[%d]: %v; ignored", path, i, err)
			continue
		}
		if m == nil {
			m = prefixMatcher("")
		}
		out.AllowOriginStringMatch = append(out.AllowOriginStringMatch, m)
	}
	if p.MaxAge != nil {
		out.MaxAge = fmt.Sprint(int64(p.MaxAge.AsDuration().Seconds()))
	}
	if p.AllowCredentials != nil {
		out.AllowCredentials = wrapperspb.Bool(p.AllowCredentials.Value)
	}
	if p.UnmatchedPreflights == networkingapi.CorsPolicy_IGNORE {
		out.ForwardNotMatchingPreflights = wrapperspb.Bool(false)
	}
	return out
}

// tcpRoute configures the TCP proxy of a TCP port: the first tcp route of
// the VirtualService that applies to the port, else the service itself.
func (t *translator) tcpRoute(pc *portConfig, vs *virtualService) {
	var dests []weightedDestination
	if vs != nil {
		c := &vsContext{t: t, vs: vs.obj, pc: pc}
		dests = c.firstTCPRoute("waypoints", func(m *networkingapi.L4MatchAttributes) bool {
			return (m.Port == 0 || m.Port == pc.port.number) && forMesh(m.Gateways)
		})
	}
	if len(dests) == 0 {
		dests = []weightedDestination{{cluster: pc.use(pc.defaultRef()), weight: 1}}
	}
	pc.tcpProxy = tcpProxyTo(pc.name, dests)
}

// firstTCPRoute is the destinations of the first tcp route of c.vs that
// applies: it has no match, or a match for which selects is true. Matches
// on the source are reported (they are not supported by where, "waypoints"
// or "gateways") and never apply.
func (c *vsContext) firstTCPRoute(where string, selects func(*networkingapi.L4MatchAttributes) bool) []weightedDestination {
	for i, r := range c.vs.Spec.Tcp {
		path := fmt.Sprintf("spec.tcp[%d]", i)
		applies := len(r.GetMatch()) == 0
		for j, m := range r.GetMatch() {
			if !selects(m) {
				continue
			}
			if len(m.DestinationSubnets) > 0 || m.SourceSubnet != "" || len(m.SourceLabels) > 0 || m.SourceNamespace != "" {
				c.problem("%s.match[%d]: only port and gateways are supported by %s; this match never applies", path, j, where)
				continue
			}
			applies = true
		}
		if applies {
			return c.tcpDestinations(path, r.GetRoute())
		}
	}
	return nil
}

// tcpDestinations resolves the destinations of a tcp or tls route (a
// weight of 0 among several leaves one out; unknown ones are reported).
func (c *vsContext) tcpDestinations(path string, route []*networkingapi.RouteDestination) []weightedDestination {
	var dests []weightedDestination
	for k, d := range route {
		if d == nil || (d.Weight == 0 && len(route) > 1) {
			continue
		}
		if ref, ok := c.destination(fmt.Sprintf("%s.route[%d].destination", path, k), d.Destination); ok {
			dests = append(dests, weightedDestination{cluster: c.pc.use(ref), weight: uint32(d.Weight)})
		}
	}
	return dests
}

// tcpProxyTo is a tcp_proxy to one or more (weighted) clusters.
func tcpProxyTo(stat string, dests []weightedDestination) *tcpproxyv3.TcpProxy {
	tp := &tcpproxyv3.TcpProxy{StatPrefix: stat}
	if len(dests) == 1 {
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_Cluster{Cluster: dests[0].cluster}
		return tp
	}
	wc := &tcpproxyv3.TcpProxy_WeightedCluster{}
	for _, d := range dests {
		wc.Clusters = append(wc.Clusters, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: d.cluster, Weight: d.weight})
	}
	tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: wc}
	return tp
}

// legacyMirrorPercent reads the deprecated mirror_percent, which users still
// write; it is honoured when mirrorPercentage is absent.
func legacyMirrorPercent(hr *networkingapi.HTTPRoute) *wrapperspb.UInt32Value {
	//lint:ignore SA1019 deliberately reading the deprecated field
	return hr.MirrorPercent
}
