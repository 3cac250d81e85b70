package workload

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/pkg/mesh"
	"google.golang.org/protobuf/proto"
	securityapi "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
)

// selectorPolicy is a WORKLOAD_SELECTOR Authorization and the pod labels it
// selects.
type selectorPolicy struct {
	name        string // "<ns>/<name>"
	matchLabels map[string]string
}

// translateAuthorizationPolicies converts the L4 part of each
// AuthorizationPolicy, as Istio's convertAuthorizationPolicy does for
// ztunnel.
func (t *translator) translateAuthorizationPolicies(aps []*securityv1.AuthorizationPolicy, pods []*corev1.Pod) {
	for _, ap := range aps {
		if ap == nil {
			continue
		}
		a := t.authorization(ap, t.selectsOnlyUnenrolled(ap, pods))
		if a == nil {
			continue
		}
		name := key(ap.Namespace, ap.Name)
		t.authorizations[name] = a
		if a.Scope == workloadv1.Scope_WORKLOAD_SELECTOR {
			t.selectorPolicies[ap.Namespace] = append(t.selectorPolicies[ap.Namespace],
				selectorPolicy{name: name, matchLabels: ap.Spec.GetSelector().GetMatchLabels()})
		}
	}
}

// With outsideMesh (the policy selects only pods outside the mesh, such as
// an ingress gateway's), nothing is reported: no node agent enforces the
// policy, and a gateway applies it whole (control/waypoint reports what it
// cannot, and a policy no gateway takes).
func (t *translator) authorization(ap *securityv1.AuthorizationPolicy, outsideMesh bool) *workloadv1.Authorization {
	spec := &ap.Spec
	report := func(format string, args ...any) {
		if !outsideMesh {
			t.problem("AuthorizationPolicy", ap.Namespace, ap.Name, format, args...)
		}
	}
	if len(spec.TargetRefs) > 0 || spec.TargetRef != nil {
		// Bound to a Gateway or Service: a waypoint enforces it, not the
		// node agent (Istio: "TargetRef is not intended for ztunnel").
		return nil
	}
	var dryRun bool
	if v, ok := ap.Annotations[annotationDryRun]; ok {
		var err error
		if dryRun, err = strconv.ParseBool(v); err != nil {
			report("annotation %s: %q is not a boolean; the policy is enforced", annotationDryRun, v)
		}
	}
	var action workloadv1.Action
	switch spec.Action {
	case securityapi.AuthorizationPolicy_ALLOW:
		action = workloadv1.Action_ALLOW
	case securityapi.AuthorizationPolicy_DENY:
		action = workloadv1.Action_DENY
	default:
		// As Istio: ztunnel supports neither AUDIT nor CUSTOM.
		report("spec.action: %s is not supported at L4 (only ALLOW and DENY); the policy is ignored", spec.Action)
		return nil
	}
	a := &workloadv1.Authorization{
		Name:      ap.Name,
		Namespace: ap.Namespace,
		Action:    action,
	}
	switch {
	// An empty matchLabels selects every workload, as in sidecar mode.
	case len(spec.GetSelector().GetMatchLabels()) > 0:
		a.Scope = workloadv1.Scope_WORKLOAD_SELECTOR
	case ap.Namespace == t.cfg.RootNamespace:
		a.Scope = workloadv1.Scope_GLOBAL
	default:
		a.Scope = workloadv1.Scope_NAMESPACE
	}
	for i, r := range spec.Rules {
		b := ruleBuilder{action: action, policyNamespace: ap.Namespace, trustDomain: t.cfg.TrustDomain}
		rule := b.rule(r)
		for _, msg := range b.problems(i) {
			report("%s", msg)
		}
		if rule != nil {
			a.Rules = append(a.Rules, rule)
		}
	}
	if dryRun {
		// Never enforced, also by an agent that cannot read DryRun.
		a.DryRun = &workloadv1.DryRun{Action: a.Action, Rules: a.Rules}
		a.Action, a.Rules = workloadv1.Action_DENY, nil
	}
	return a
}

// selectsOnlyUnenrolled: ap has a selector that picks pods, none of them
// in the mesh.
func (t *translator) selectsOnlyUnenrolled(ap *securityv1.AuthorizationPolicy, pods []*corev1.Pod) bool {
	sel := ap.Spec.GetSelector().GetMatchLabels()
	if len(sel) == 0 || len(ap.Spec.TargetRefs) > 0 || ap.Spec.TargetRef != nil {
		return false
	}
	picked := false
	for _, p := range pods {
		if p == nil || (ap.Namespace != t.cfg.RootNamespace && p.Namespace != ap.Namespace) || !selects(sel, p.Labels) {
			continue
		}
		if mesh.Enrolled(p.Labels, t.namespaceLabels(p.Namespace)) {
			return false
		}
		picked = true
	}
	return picked
}

// podPolicies lists the WORKLOAD_SELECTOR policies that apply to a pod:
// those of its namespace and of the root namespace (which select in every
// namespace), plus the one derived from its PeerAuthentication.
func (t *translator) podPolicies(pod *corev1.Pod) []string {
	var out []string
	add := func(ns string) {
		for _, p := range t.selectorPolicies[ns] {
			if selects(p.matchLabels, pod.Labels) {
				out = append(out, p.name)
			}
		}
	}
	add(pod.Namespace)
	if pod.Namespace != t.cfg.RootNamespace {
		add(t.cfg.RootNamespace)
	}
	if pa := t.peerAuthPolicy(pod); pa != "" {
		out = append(out, pa)
	}
	slices.Sort(out)
	return out
}

// ruleBuilder translates one AuthorizationPolicy rule. A rule is a
// conjunction of clauses (from, to, each when condition); a clause is a
// disjunction of matches.
//
// What cannot be enforced at L4 is handled fail-closed, like Istio's
// handleRule:
//   - L7 attributes (and trustDomains, connection.sni: also only a waypoint
//     can check them): an ALLOW rule using any can never match at L4 and is
//     dropped; a DENY rule is kept without them, so it matches more.
//   - malformed values (bad port, bad CIDR): Istio silently drops the value,
//     which can turn a DENY rule into one that matches less (fail open).
//     Weft drops the whole ALLOW rule, and for DENY ignores the whole field
//     holding the bad value, so the rule matches more.
type ruleBuilder struct {
	action          workloadv1.Action
	policyNamespace string
	trustDomain     string
	l7              []string // attributes only a waypoint can check
	invalid         []string // "<field>: <what is wrong>"
}

func (b *ruleBuilder) rule(r *securityapi.Rule) *workloadv1.Rule {
	if r == nil {
		b.invalid = append(b.invalid, "the rule is null")
		r = &securityapi.Rule{}
	}
	out := &workloadv1.Rule{}
	var from, to []*workloadv1.Match
	for i, f := range r.From {
		from = append(from, b.source(fmt.Sprintf("from[%d].source", i), f.GetSource()))
	}
	for i, op := range r.To {
		to = append(to, b.operation(fmt.Sprintf("to[%d].operation", i), op.GetOperation()))
	}
	out.Clauses = appendClause(out.Clauses, from...)
	out.Clauses = appendClause(out.Clauses, to...)
	for i, cond := range r.When {
		if m := b.condition(fmt.Sprintf("when[%d]", i), cond); m != nil {
			out.Clauses = appendClause(out.Clauses, m)
		}
	}
	if b.action == workloadv1.Action_ALLOW && (len(b.l7) > 0 || len(b.invalid) > 0) {
		return nil
	}
	return out
}

// appendClause adds the disjunction of matches as a clause, unless it is
// always true (no matches, or one that constrains nothing): that clause
// would not change the rule.
func appendClause(clauses []*workloadv1.Clause, matches ...*workloadv1.Match) []*workloadv1.Clause {
	if len(matches) == 0 || slices.ContainsFunc(matches, func(m *workloadv1.Match) bool { return proto.Size(m) == 0 }) {
		return clauses
	}
	return append(clauses, &workloadv1.Clause{Matches: matches})
}

// problems explains, for rule i, what the translation had to change.
func (b *ruleBuilder) problems(i int) []string {
	var out []string
	if len(b.l7) > 0 {
		slices.Sort(b.l7)
		attrs := strings.Join(slices.Compact(b.l7), ", ")
		if b.action == workloadv1.Action_ALLOW {
			out = append(out, fmt.Sprintf("rule %d uses L7 attributes (%s): enforced by a waypoint only; "+
				"at L4 this ALLOW rule can never match, so it is dropped (stricter than written)", i, attrs))
		} else {
			out = append(out, fmt.Sprintf("rule %d uses L7 attributes (%s): enforced by a waypoint only; "+
				"at L4 this DENY rule is enforced without them, so it matches more connections (stricter than written)", i, attrs))
		}
	}
	for _, msg := range b.invalid {
		if b.action == workloadv1.Action_ALLOW {
			out = append(out, fmt.Sprintf("rule %d: %s; the rule is dropped (it allows nothing)", i, msg))
		} else {
			out = append(out, fmt.Sprintf("rule %d: %s; ignored, so this DENY rule matches more connections", i, msg))
		}
	}
	return out
}

// unsupported records attribute attr and its negation (Istio names it
// notAttr) where they are set: the node agents cannot evaluate them.
func (b *ruleBuilder) unsupported(attr string, values, notValues []string) {
	if len(values) > 0 {
		b.l7 = append(b.l7, attr)
	}
	if len(notValues) > 0 {
		b.l7 = append(b.l7, "not"+strings.ToUpper(attr[:1])+attr[1:])
	}
}

func (b *ruleBuilder) source(path string, s *securityapi.Source) *workloadv1.Match {
	m := &workloadv1.Match{}
	if s == nil {
		return m
	}
	b.unsupported("requestPrincipals", s.RequestPrincipals, s.NotRequestPrincipals)
	// remoteIpBlocks is the client address from X-Forwarded-For or the PROXY
	// protocol (Istio treats it as L7): at L4 the peer may be a gateway.
	b.unsupported("remoteIpBlocks", s.RemoteIpBlocks, s.NotRemoteIpBlocks)
	b.unsupported("trustDomains", s.TrustDomains, s.NotTrustDomains)

	m.Principals = stringMatches(s.Principals)
	m.NotPrincipals = stringMatches(s.NotPrincipals)
	m.Namespaces = stringMatches(s.Namespaces)
	m.NotNamespaces = stringMatches(s.NotNamespaces)
	if len(s.ServiceAccounts) > 0 && (len(s.Principals) > 0 || len(s.Namespaces) > 0) {
		b.invalid = append(b.invalid, path+".serviceAccounts: cannot be combined with principals or namespaces")
	} else {
		m.Principals = append(m.Principals, b.serviceAccounts(path+".serviceAccounts", s.ServiceAccounts)...)
	}
	m.NotPrincipals = append(m.NotPrincipals, b.serviceAccounts(path+".notServiceAccounts", s.NotServiceAccounts)...)
	m.Principals, m.NotPrincipals = sortStringMatches(m.Principals), sortStringMatches(m.NotPrincipals)
	m.SourceIps = b.ips(path+".ipBlocks", s.IpBlocks)
	m.NotSourceIps = b.ips(path+".notIpBlocks", s.NotIpBlocks)
	return m
}

func (b *ruleBuilder) operation(path string, op *securityapi.Operation) *workloadv1.Match {
	m := &workloadv1.Match{}
	if op == nil {
		return m
	}
	b.unsupported("hosts", op.Hosts, op.NotHosts)
	b.unsupported("methods", op.Methods, op.NotMethods)
	b.unsupported("paths", op.Paths, op.NotPaths)
	m.DestinationPorts = b.ports(path+".ports", op.Ports)
	m.NotDestinationPorts = b.ports(path+".notPorts", op.NotPorts)
	return m
}

// condition translates the L4 "when" keys (Istio's l4WhenAttributes); any
// other key is L7. It returns nil when the condition adds no L4 clause.
func (b *ruleBuilder) condition(path string, c *securityapi.Condition) *workloadv1.Match {
	if c == nil {
		return nil
	}
	if len(c.Values) == 0 && len(c.NotValues) == 0 {
		b.invalid = append(b.invalid, fmt.Sprintf("%s (%s): needs values or notValues", path, c.Key))
		return nil
	}
	m := &workloadv1.Match{}
	switch c.Key {
	case "source.ip":
		m.SourceIps, m.NotSourceIps = b.ips(path+".values", c.Values), b.ips(path+".notValues", c.NotValues)
	case "destination.ip":
		m.DestinationIps, m.NotDestinationIps = b.ips(path+".values", c.Values), b.ips(path+".notValues", c.NotValues)
	case "destination.port":
		m.DestinationPorts, m.NotDestinationPorts = b.ports(path+".values", c.Values), b.ports(path+".notValues", c.NotValues)
	case "source.namespace":
		m.Namespaces, m.NotNamespaces = stringMatches(c.Values), stringMatches(c.NotValues)
	case "source.principal":
		m.Principals, m.NotPrincipals = stringMatches(c.Values), stringMatches(c.NotValues)
	default:
		b.l7 = append(b.l7, c.Key)
		return nil
	}
	return m
}

// ports parses port numbers. On a bad value the whole field is dropped
// (see ruleBuilder).
func (b *ruleBuilder) ports(field string, values []string) []uint32 {
	if len(values) == 0 {
		return nil
	}
	out := make([]uint32, 0, len(values))
	for _, v := range values {
		p, err := strconv.ParseUint(v, 10, 16)
		if err != nil || p == 0 {
			b.invalid = append(b.invalid, fmt.Sprintf("%s: %q is not a port number (1-65535)", field, v))
			return nil
		}
		out = append(out, uint32(p))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// ips parses IPs and CIDRs into canonical text. On a bad value the whole
// field is dropped (see ruleBuilder).
func (b *ruleBuilder) ips(field string, values []string) []string {
	if len(values) == 0 {
		return nil
	}
	out := make([]string, 0, len(values))
	for _, v := range values {
		s, err := canonicalIPOrCIDR(v)
		if err != nil {
			b.invalid = append(b.invalid, fmt.Sprintf("%s: %q is not an IP address or CIDR", field, v))
			return nil
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func canonicalIPOrCIDR(v string) (string, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return "", err
		}
		return p.Masked().String(), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return "", err
	}
	if a.Zone() != "" { // node agents refuse the whole update for one
		return "", fmt.Errorf("%q has a zone", v)
	}
	return a.String(), nil
}

// serviceAccounts turns "<ns>/<sa>" or "<sa>" (the policy's namespace) into
// exact principal matches "<trust domain>/ns/<ns>/sa/<sa>". Wildcards are
// not allowed (Istio API).
func (b *ruleBuilder) serviceAccounts(field string, values []string) []*workloadv1.StringMatch {
	if len(values) == 0 {
		return nil
	}
	out := make([]*workloadv1.StringMatch, 0, len(values))
	for _, v := range values {
		ns, sa, ok := strings.Cut(v, "/")
		if !ok {
			ns, sa = b.policyNamespace, v
		}
		if ns == "" || sa == "" || strings.Contains(v, "*") || strings.Contains(sa, "/") {
			b.invalid = append(b.invalid, fmt.Sprintf("%s: %q is not <namespace>/<serviceaccount> or <serviceaccount>", field, v))
			return nil
		}
		out = append(out, exact(principal(b.trustDomain, ns, sa)))
	}
	return out
}

// principal is Istio's principal form of a SPIFFE identity: the URI
// without "spiffe://".
func principal(trustDomain, ns, sa string) string {
	return trustDomain + "/ns/" + ns + "/sa/" + sa
}

func exact(s string) *workloadv1.StringMatch {
	return &workloadv1.StringMatch{MatchType: &workloadv1.StringMatch_Exact{Exact: s}}
}

// stringMatch converts an Istio string value: "*" is presence (any
// non-empty value), "*x" a suffix, "x*" a prefix, anything else exact.
// Principals keep Istio's form "cluster.local/ns/x/sa/y".
func stringMatch(v string) *workloadv1.StringMatch {
	switch {
	case v == "*":
		return &workloadv1.StringMatch{MatchType: &workloadv1.StringMatch_Presence{Presence: true}}
	case strings.HasPrefix(v, "*"):
		return &workloadv1.StringMatch{MatchType: &workloadv1.StringMatch_Suffix{Suffix: v[1:]}}
	case strings.HasSuffix(v, "*"):
		return &workloadv1.StringMatch{MatchType: &workloadv1.StringMatch_Prefix{Prefix: v[:len(v)-1]}}
	default:
		return exact(v)
	}
}

func stringMatches(values []string) []*workloadv1.StringMatch {
	if len(values) == 0 {
		return nil
	}
	out := make([]*workloadv1.StringMatch, 0, len(values))
	for _, v := range values {
		out = append(out, stringMatch(v))
	}
	return sortStringMatches(out)
}

// sortStringMatches orders matches by kind then value and drops duplicates.
func sortStringMatches(ms []*workloadv1.StringMatch) []*workloadv1.StringMatch {
	if len(ms) < 2 {
		return ms
	}
	rank := func(m *workloadv1.StringMatch) (int, string) {
		switch v := m.MatchType.(type) {
		case *workloadv1.StringMatch_Exact:
			return 0, v.Exact
		case *workloadv1.StringMatch_Prefix:
			return 1, v.Prefix
		case *workloadv1.StringMatch_Suffix:
			return 2, v.Suffix
		default:
			return 3, ""
		}
	}
	c := func(a, b *workloadv1.StringMatch) int {
		ra, va := rank(a)
		rb, vb := rank(b)
		return cmp.Or(cmp.Compare(ra, rb), cmp.Compare(va, vb))
	}
	slices.SortFunc(ms, c)
	return slices.CompactFunc(ms, func(a, b *workloadv1.StringMatch) bool { return c(a, b) == 0 })
}
