package waypoint

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
)

// VirtualService delegation, as istiod merges it (mergeVirtualServicesIfNeeded)
// before anything else reads VirtualServices, for waypoints and gateways
// alike: an http route of a root VirtualService (one with hosts) that names
// a delegate is replaced by the delegate's http routes, each with its
// matches merged with the root route's (a delegate match must be narrower
// than a root match, or the delegate route conflicts and is dropped) and
// the root route's rewrite, timeout, retries, fault, mirrors, CORS policy
// and headers where it sets none. One level only. The delegate (a
// VirtualService without hosts) applies nowhere else. Its destination
// hosts are short names of its own namespace, not the root's.

// expandDelegates returns vss with every root VirtualService that delegates
// replaced by a copy with its delegating routes expanded; the inputs are
// not modified (they are shared informer objects).
func (t *translator) expandDelegates(vss []*networkingv1.VirtualService) []*networkingv1.VirtualService {
	byName := map[string]*networkingv1.VirtualService{}
	for _, vs := range vss {
		if vs != nil {
			byName[vs.Namespace+"/"+vs.Name] = vs
		}
	}
	out := make([]*networkingv1.VirtualService, 0, len(vss))
	for _, vs := range vss {
		if vs == nil || len(vs.Spec.Hosts) == 0 || !slices.ContainsFunc(vs.Spec.Http, func(r *networkingapi.HTTPRoute) bool { return r.GetDelegate() != nil }) {
			out = append(out, vs)
			continue
		}
		root := vs.DeepCopy()
		var routes []*networkingapi.HTTPRoute
		for i, r := range root.Spec.Http {
			if r.GetDelegate() == nil {
				routes = append(routes, r)
				continue
			}
			routes = append(routes, t.delegatedRoutes(root, fmt.Sprintf("spec.http[%d]", i), r, byName)...)
		}
		root.Spec.Http = routes
		out = append(out, root)
	}
	return out
}

// delegatedRoutes are the routes root's route r at path delegates to.
func (t *translator) delegatedRoutes(root *networkingv1.VirtualService, path string, r *networkingapi.HTTPRoute,
	byName map[string]*networkingv1.VirtualService) []*networkingapi.HTTPRoute {
	bad := func(format string, args ...any) []*networkingapi.HTTPRoute {
		t.problem(kindVS, root.Namespace, root.Name, "%s.delegate: "+format+"; route ignored", append([]any{path}, args...)...)
		return nil
	}
	key := cmp.Or(r.Delegate.Namespace, root.Namespace) + "/" + r.Delegate.Name
	d := byName[key]
	switch {
	case len(r.Route) > 0 || r.Redirect != nil || r.DirectResponse != nil:
		return bad("set with route, redirect or directResponse")
	case d == nil:
		return bad("VirtualService %s not found", key)
	case len(d.Spec.Hosts) > 0:
		return bad("VirtualService %s has hosts; a delegate must have none", key)
	}
	var out []*networkingapi.HTTPRoute
	for j, dr := range d.Spec.Http {
		if dr.GetDelegate() != nil {
			t.problem(kindVS, d.Namespace, d.Name, "spec.http[%d].delegate: only one level of delegation; route ignored", j)
			continue
		}
		leaf := proto.Clone(dr).(*networkingapi.HTTPRoute)
		t.qualifyHosts(leaf, d.Namespace)
		merged, ok := mergeDelegateRoute(r, leaf)
		if !ok {
			t.problem(kindVS, d.Namespace, d.Name, "spec.http[%d].match: not narrower than any match of %s/%s %s; route ignored",
				j, root.Namespace, root.Name, path)
			continue
		}
		out = append(out, merged)
	}
	return out
}

// qualifyHosts makes the destination and mirror hosts of r fully
// qualified in namespace ns, where the delegate's short names point.
func (t *translator) qualifyHosts(r *networkingapi.HTTPRoute, ns string) {
	for _, d := range r.Route {
		if d.GetDestination() != nil {
			d.Destination.Host = t.fqdn(d.Destination.Host, ns)
		}
	}
	if r.Mirror != nil {
		r.Mirror.Host = t.fqdn(r.Mirror.Host, ns)
	}
	for _, m := range r.Mirrors {
		if m.GetDestination() != nil {
			m.Destination.Host = t.fqdn(m.Destination.Host, ns)
		}
	}
}

// mergeDelegateRoute merges root route into leaf (a copy), istiod's
// mergeHTTPRoute; false when the matches conflict.
func mergeDelegateRoute(root, leaf *networkingapi.HTTPRoute) (*networkingapi.HTTPRoute, bool) {
	matches, ok := mergeDelegateMatches(root.Match, leaf.Match)
	if !ok {
		return nil, false
	}
	leaf.Match = matches
	leaf.Name = joinName(root.Name, leaf.Name)
	leaf.Rewrite = cmp.Or(leaf.Rewrite, root.Rewrite)
	leaf.DirectResponse = cmp.Or(leaf.DirectResponse, root.DirectResponse)
	leaf.Timeout = cmp.Or(leaf.Timeout, root.Timeout)
	leaf.Retries = cmp.Or(leaf.Retries, root.Retries)
	leaf.Fault = cmp.Or(leaf.Fault, root.Fault)
	leaf.Mirror = cmp.Or(leaf.Mirror, root.Mirror)
	leaf.MirrorPercentage = cmp.Or(leaf.MirrorPercentage, root.MirrorPercentage)
	leaf.CorsPolicy = cmp.Or(leaf.CorsPolicy, root.CorsPolicy)
	leaf.Headers = cmp.Or(leaf.Headers, root.Headers)
	if leaf.Mirrors == nil {
		leaf.Mirrors = root.Mirrors
	}
	//lint:ignore SA1019 the deprecated field is honoured (legacyMirrorPercent), so it is merged too
	leaf.MirrorPercent = cmp.Or(leaf.MirrorPercent, root.MirrorPercent)
	return leaf, true
}

// joinName names a merged route or match as istiod does: the root's name,
// the delegate's, or "<root>-<delegate>" when both have one.
func joinName(root, leaf string) string {
	switch {
	case leaf == "":
		return root
	case root == "":
		return leaf
	}
	return root + "-" + leaf
}

// mergeDelegateMatches: every leaf match must merge with a root match it
// does not conflict with (each such pair gives one merged match).
func mergeDelegateMatches(root, leaf []*networkingapi.HTTPMatchRequest) ([]*networkingapi.HTTPMatchRequest, bool) {
	if len(root) == 0 {
		return leaf, true
	}
	if len(leaf) == 0 {
		return root, true
	}
	var out []*networkingapi.HTTPMatchRequest
	for _, l := range leaf {
		found := false
		for _, r := range root {
			if matchConflict(r, l) {
				continue
			}
			out = append(out, mergeDelegateMatch(r, l))
			found = true
		}
		if !found {
			return nil, false
		}
	}
	return out, len(out) > 0
}

func mergeDelegateMatch(root, leaf *networkingapi.HTTPMatchRequest) *networkingapi.HTTPMatchRequest {
	out := proto.Clone(leaf).(*networkingapi.HTTPMatchRequest)
	out.Name = joinName(root.Name, out.Name)
	out.Uri = cmp.Or(out.Uri, root.Uri)
	out.Scheme = cmp.Or(out.Scheme, root.Scheme)
	out.Method = cmp.Or(out.Method, root.Method)
	out.Authority = cmp.Or(out.Authority, root.Authority)
	out.Headers = mergedMap(root.Headers, leaf.Headers)
	out.WithoutHeaders = mergedMap(root.WithoutHeaders, leaf.WithoutHeaders)
	out.QueryParams = mergedMap(root.QueryParams, leaf.QueryParams)
	out.SourceLabels = mergedMap(root.SourceLabels, leaf.SourceLabels)
	out.Port = cmp.Or(out.Port, root.Port)
	out.SourceNamespace = cmp.Or(out.SourceNamespace, root.SourceNamespace)
	out.StatPrefix = cmp.Or(out.StatPrefix, root.StatPrefix)
	if len(out.Gateways) == 0 {
		out.Gateways = root.Gateways
	}
	return out
}

// mergedMap is root's entries overridden by leaf's (nil when both are
// empty).
func mergedMap[V any](root, leaf map[string]V) map[string]V {
	if len(root) == 0 && len(leaf) == 0 {
		return nil
	}
	out := maps.Clone(root)
	if out == nil {
		out = map[string]V{}
	}
	maps.Copy(out, leaf)
	return out
}

// matchConflict: leaf is not narrower than root (istiod's hasConflict).
func matchConflict(root, leaf *networkingapi.HTTPMatchRequest) bool {
	for _, p := range [][2]*networkingapi.StringMatch{{root.Uri, leaf.Uri}, {root.Scheme, leaf.Scheme},
		{root.Method, leaf.Method}, {root.Authority, leaf.Authority}} {
		if stringMatchConflict(p[0], p[1]) {
			return true
		}
	}
	for _, m := range [][2]map[string]*networkingapi.StringMatch{{root.Headers, leaf.Headers},
		{root.WithoutHeaders, leaf.WithoutHeaders}, {root.QueryParams, leaf.QueryParams}} {
		for k, v := range m[1] {
			if stringMatchConflict(m[0][k], v) {
				return true
			}
		}
	}
	for k, v := range leaf.SourceLabels {
		if rv, ok := root.SourceLabels[k]; ok && rv != v {
			return true
		}
	}
	return root.IgnoreUriCase != leaf.IgnoreUriCase ||
		root.Port > 0 && leaf.Port > 0 && root.Port != leaf.Port ||
		root.SourceNamespace != "" && leaf.SourceNamespace != root.SourceNamespace ||
		len(root.Gateways) > 0 && len(leaf.Gateways) > 0 && !subset(leaf.Gateways, root.Gateways)
}

func subset(small, big []string) bool {
	return !slices.ContainsFunc(small, func(s string) bool { return !slices.Contains(big, s) })
}

// stringMatchConflict: leaf does not match within root (either unset: no
// conflict; regexes are comparable to nothing; an exact root takes the
// same exact value; a prefix root takes a leaf prefix or exact value
// that starts with it).
func stringMatchConflict(root, leaf *networkingapi.StringMatch) bool {
	if root == nil || leaf == nil {
		return false
	}
	if root.GetRegex() != "" || leaf.GetRegex() != "" {
		return true
	}
	if exact := root.GetExact(); exact != "" {
		return leaf.GetExact() != exact
	}
	if prefix := root.GetPrefix(); prefix != "" {
		if p := leaf.GetPrefix(); p != "" {
			return !strings.HasPrefix(p, prefix)
		}
		if e := leaf.GetExact(); e != "" {
			return !strings.HasPrefix(e, prefix)
		}
	}
	return true
}
