package analyze

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/weft-mesh/weft/control/workload"
	"github.com/weft-mesh/weft/pkg/mesh"
)

const annotationDryRun = mesh.AnnotationDryRun

func (a *analyzer) authorizationPolicies() {
	for _, ap := range a.s.AuthorizationPolicies {
		if ap == nil || dryRun(ap) {
			continue
		}
		if refs := targetRefs(ap); len(refs) > 0 {
			a.targetRefPolicy(ap, refs)
		} else {
			a.selectorL7Policy(ap)
		}
	}
	a.contradictions()
}

func dryRun(ap *securityv1.AuthorizationPolicy) bool {
	v, err := strconv.ParseBool(ap.Annotations[annotationDryRun])
	return err == nil && v
}

func targetRefs(ap *securityv1.AuthorizationPolicy) []*typeapi.PolicyTargetReference {
	refs := slices.Clone(ap.Spec.TargetRefs)
	if ap.Spec.TargetRef != nil {
		refs = append(refs, ap.Spec.TargetRef)
	}
	return slices.DeleteFunc(refs, func(r *typeapi.PolicyTargetReference) bool { return r == nil })
}

// targetRefPolicy: a policy bound with targetRefs is enforced by the
// waypoint of its target only; node agents ignore it. Without a waypoint
// it is not enforced at all.
func (a *analyzer) targetRefPolicy(ap *securityv1.AuthorizationPolicy, refs []*typeapi.PolicyTargetReference) {
	for i, ref := range refs {
		ns := ref.Namespace
		if ns == "" {
			ns = ap.Namespace
		}
		if ns != ap.Namespace {
			continue // control/waypoint reports it
		}
		switch {
		case ref.Group == "gateway.networking.k8s.io" && ref.Kind == "Gateway":
			if a.waypoints[ns+"/"+ref.Name] == nil {
				a.add(Error, "AuthorizationPolicy", ap.Namespace, ap.Name, CodePolicyTargetNotFound, fmt.Sprintf(
					"targetRefs[%d]: Gateway %s/%s is not a waypoint (no Gateway of class %s has that name): node agents ignore policies bound with targetRefs, so this policy is not enforced at all",
					i, ns, ref.Name, workload.WaypointGatewayClass))
			}
		case (ref.Group == "" || ref.Group == "core") && ref.Kind == "Service":
			if a.services[ns+"/"+ref.Name] == nil {
				continue // control/waypoint reports it
			}
			addr := a.wout.Addresses[ns+"/"+fqdn(ref.Name, ns)]
			if addr.GetService() != nil && addr.GetService().GetWaypoint() == nil {
				a.add(Error, "AuthorizationPolicy", ap.Namespace, ap.Name, CodeL7PolicyNoWaypoint, fmt.Sprintf(
					"targetRefs[%d]: Service %s/%s has no waypoint (label istio.io/use-waypoint on the Service or its namespace): node agents ignore policies bound with targetRefs, so this policy is not enforced at all; enroll the Service in a waypoint",
					i, ns, ref.Name))
			}
		}
	}
}

// selectorL7Policy: a selector or namespace-wide policy is enforced by the
// node agents only (at L4); control/workload reports its L7 attributes.
// Without a waypoint they cannot be enforced at all; with one, the policy
// still has to be bound to it with targetRefs.
func (a *analyzer) selectorL7Policy(ap *securityv1.AuthorizationPolicy) {
	var msgs []string
	for _, p := range a.wout.Problems {
		if p.Kind == "AuthorizationPolicy" && p.Namespace == ap.Namespace && p.Name == ap.Name && l7Problem.MatchString(p.Message) {
			msgs = append(msgs, p.Message)
		}
	}
	if len(msgs) == 0 {
		return
	}
	l7 := strings.Join(msgs, "; ")
	var without []string
	waypoints := map[string]bool{}
	for _, p := range a.selectedPods(ap) {
		ws := a.podWaypoints(p)
		if len(ws) == 0 {
			without = append(without, p.Namespace+"/"+p.Name)
		}
		for _, w := range ws {
			waypoints[w] = true
		}
	}
	switch {
	case len(without) > 0:
		a.add(Error, "AuthorizationPolicy", ap.Namespace, ap.Name, CodeL7PolicyNoWaypoint, fmt.Sprintf(
			"%s. It selects pods without a waypoint (%s), where it is enforced only partially, at L4: enroll them in a waypoint (istio.io/use-waypoint) and bind the policy to it with targetRefs",
			l7, abbreviate(without, 5)))
	case len(waypoints) > 0:
		a.add(Warning, "AuthorizationPolicy", ap.Namespace, ap.Name, CodeL7PolicySelector, fmt.Sprintf(
			"%s. Its pods use waypoint(s) %s, but waypoints enforce only policies bound with targetRefs (to the waypoint Gateway or a Service): replace the selector with targetRefs",
			l7, strings.Join(slices.Sorted(maps.Keys(waypoints)), ", ")))
	default:
		a.add(Warning, "AuthorizationPolicy", ap.Namespace, ap.Name, CodeL7PolicyNoWaypoint, l7+". It selects no pod now")
	}
}

// podWaypoints are the waypoints (hostnames) traffic to a pod may pass:
// its own, and those of the Services selecting it.
func (a *analyzer) podWaypoints(p *corev1.Pod) []string {
	var out []string
	if w := a.wout.Addresses["Kubernetes//Pod/"+p.Namespace+"/"+p.Name].GetWorkload().GetWaypoint(); w != nil {
		out = append(out, w.GetHostname())
	}
	for _, svc := range a.s.Services {
		if svc == nil || svc.Namespace != p.Namespace || len(svc.Spec.Selector) == 0 || !subset(svc.Spec.Selector, p.Labels) {
			continue
		}
		if w := a.wout.Addresses[svc.Namespace+"/"+fqdn(svc.Name, svc.Namespace)].GetService().GetWaypoint(); w != nil {
			out = append(out, w.GetHostname())
		}
	}
	return out
}

// selectedPods are the pods a selector or namespace-wide policy applies to
// (the root namespace's apply in every namespace), waypoints excluded.
func (a *analyzer) selectedPods(ap *securityv1.AuthorizationPolicy) []*corev1.Pod {
	sel := ap.Spec.GetSelector().GetMatchLabels()
	var out []*corev1.Pod
	for _, p := range a.s.Pods {
		if p == nil || podDone(p) || p.Labels[labelGatewayName] != "" ||
			(p.Namespace != ap.Namespace && ap.Namespace != a.o.RootNamespace) || !subset(sel, p.Labels) {
			continue
		}
		out = append(out, p)
	}
	return out
}

func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

func abbreviate(xs []string, n int) string {
	slices.Sort(xs)
	if len(xs) <= n {
		return strings.Join(xs, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(xs[:n], ", "), len(xs)-n)
}

// contradictions reports ALLOW rules that a DENY rule on (at least) the same
// targets also matches: DENY policies are evaluated first, so such an ALLOW
// rule never allows anything. Only clear-cut cases: the DENY rule matches
// every request the ALLOW rule does field by field (identical rules, an
// empty DENY rule, or DENY values that include the ALLOW's); attributes
// that overlap in other ways (a namespace and a principal in it, CIDRs,
// wildcards) are not compared.
func (a *analyzer) contradictions() {
	var allows, denies []*securityv1.AuthorizationPolicy
	for _, ap := range a.s.AuthorizationPolicies {
		if ap == nil || dryRun(ap) {
			continue
		}
		switch ap.Spec.Action {
		case securityapi.AuthorizationPolicy_ALLOW:
			allows = append(allows, ap)
		case securityapi.AuthorizationPolicy_DENY:
			denies = append(denies, ap)
		}
	}
	for _, al := range allows {
		if len(al.Spec.Rules) == 0 {
			continue // allow-nothing: intended
		}
		var shadowed []string
		for i, ar := range al.Spec.Rules {
			if by := a.shadowingDeny(al, ar, denies); by != "" {
				shadowed = append(shadowed, fmt.Sprintf("rule %d is matched by %s", i, by))
			}
		}
		if len(shadowed) == 0 {
			continue
		}
		detail := strings.Join(shadowed, "; ")
		if len(shadowed) == len(al.Spec.Rules) {
			a.add(Error, "AuthorizationPolicy", al.Namespace, al.Name, CodePolicyContradiction, fmt.Sprintf(
				"ALLOW policy contradicted by DENY: %s. DENY policies are evaluated first, so this policy allows nothing, and because an ALLOW policy applies, every other request to its targets is denied too",
				detail))
		} else {
			a.add(Warning, "AuthorizationPolicy", al.Namespace, al.Name, CodePolicyContradiction, fmt.Sprintf(
				"ALLOW rules contradicted by DENY: %s. DENY policies are evaluated first, so those rules never allow anything", detail))
		}
	}
}

// shadowingDeny names the first DENY rule (sorted by policy) that applies
// to every target of al and matches every request rule ar matches.
func (a *analyzer) shadowingDeny(al *securityv1.AuthorizationPolicy, ar *securityapi.Rule, denies []*securityv1.AuthorizationPolicy) string {
	var found []string
	for _, d := range denies {
		if !a.coversTargets(d, al) {
			continue
		}
		for j, dr := range d.Spec.Rules {
			if !ruleCovers(dr, ar) {
				continue
			}
			how := "which matches every request it matches"
			switch {
			case isEmptyRule(dr):
				how = "which matches every request"
			case ruleEqual(dr, ar):
				how = "identical"
			}
			found = append(found, fmt.Sprintf("rule %d of DENY %s/%s (%s)", j, d.Namespace, d.Name, how))
			break
		}
	}
	if len(found) == 0 {
		return ""
	}
	slices.Sort(found)
	return found[0]
}

// coversTargets reports whether DENY d applies to (at least) every workload
// or waypoint target ALLOW al applies to. Selector/namespace policies and
// targetRefs policies are enforced in different places and never compared.
func (a *analyzer) coversTargets(d, al *securityv1.AuthorizationPolicy) bool {
	dr, ar := targetRefs(d), targetRefs(al)
	if (len(dr) > 0) != (len(ar) > 0) {
		return false
	}
	if len(ar) > 0 {
		if d.Namespace != al.Namespace {
			return false
		}
		for _, r := range ar {
			if !slices.ContainsFunc(dr, func(x *typeapi.PolicyTargetReference) bool {
				return x.Group == r.Group && x.Kind == r.Kind && x.Name == r.Name && x.Namespace == r.Namespace
			}) {
				return false
			}
		}
		return true
	}
	if d.Namespace != al.Namespace && d.Namespace != a.o.RootNamespace {
		return false
	}
	return subset(d.Spec.GetSelector().GetMatchLabels(), al.Spec.GetSelector().GetMatchLabels())
}

func isEmptyRule(r *securityapi.Rule) bool {
	return r == nil || (len(r.From) == 0 && len(r.To) == 0 && len(r.When) == 0)
}

func ruleEqual(x, y *securityapi.Rule) bool {
	return ruleCovers(x, y) && ruleCovers(y, x)
}

// ruleCovers reports whether DENY rule d matches every request that ALLOW
// rule a matches. A rule is any-of(from) and any-of(to) and all-of(when).
func ruleCovers(d, a *securityapi.Rule) bool {
	if d == nil {
		return true
	}
	if a == nil {
		a = &securityapi.Rule{}
	}
	// Every source of a must be covered by some source of d.
	if len(d.From) > 0 {
		if len(a.From) == 0 {
			// a matches any source: d needs an unconstrained source.
			a = &securityapi.Rule{From: []*securityapi.Rule_From{{Source: &securityapi.Source{}}}, To: a.To, When: a.When}
		}
		for _, af := range a.From {
			if !slices.ContainsFunc(d.From, func(df *securityapi.Rule_From) bool {
				return fieldsCover(sourceFields(df.GetSource()), sourceFields(af.GetSource()))
			}) {
				return false
			}
		}
	}
	if len(d.To) > 0 {
		to := a.To
		if len(to) == 0 {
			to = []*securityapi.Rule_To{{Operation: &securityapi.Operation{}}}
		}
		for _, at := range to {
			if !slices.ContainsFunc(d.To, func(dt *securityapi.Rule_To) bool {
				return fieldsCover(operationFields(dt.GetOperation()), operationFields(at.GetOperation()))
			}) {
				return false
			}
		}
	}
	for _, dc := range d.When {
		if dc == nil {
			continue
		}
		if !slices.ContainsFunc(a.When, func(ac *securityapi.Condition) bool {
			return ac != nil && ac.Key == dc.Key &&
				posCovers(dc.Values, ac.Values) && negCovers(dc.NotValues, ac.NotValues)
		}) {
			return false
		}
	}
	return true
}

// field is one attribute of a source or operation: its values and its
// not-values.
type field struct{ pos, neg []string }

func sourceFields(s *securityapi.Source) []field {
	if s == nil {
		s = &securityapi.Source{}
	}
	return []field{
		{s.Principals, s.NotPrincipals}, {s.RequestPrincipals, s.NotRequestPrincipals},
		{s.Namespaces, s.NotNamespaces}, {s.ServiceAccounts, s.NotServiceAccounts},
		{s.IpBlocks, s.NotIpBlocks}, {s.RemoteIpBlocks, s.NotRemoteIpBlocks},
		{s.TrustDomains, s.NotTrustDomains},
	}
}

func operationFields(o *securityapi.Operation) []field {
	if o == nil {
		o = &securityapi.Operation{}
	}
	return []field{{o.Hosts, o.NotHosts}, {o.Ports, o.NotPorts}, {o.Methods, o.NotMethods}, {o.Paths, o.NotPaths}}
}

func fieldsCover(d, a []field) bool {
	for i := range d {
		if !posCovers(d[i].pos, a[i].pos) || !negCovers(d[i].neg, a[i].neg) {
			return false
		}
	}
	return true
}

// posCovers: "value in d" holds whenever "value in a" does.
func posCovers(d, a []string) bool {
	if len(d) == 0 {
		return true
	}
	if len(a) == 0 {
		return false
	}
	if slices.Contains(d, "*") {
		return true
	}
	for _, v := range a {
		if !slices.Contains(d, v) {
			return false
		}
	}
	return true
}

// negCovers: "value not in d" holds whenever "value not in a" does.
func negCovers(d, a []string) bool {
	for _, v := range d {
		if !slices.Contains(a, v) {
			return false
		}
	}
	return true
}
