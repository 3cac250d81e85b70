package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
)

// conn is Conn normalised once per Check.
type conn struct {
	src, dst      netip.Addr
	port          uint16
	authenticated bool
	principal     string
	namespace     string // "" when unknown
}

// policy is a compiled Authorization.
type policy struct {
	key       string // "<ns>/<name>"
	namespace string
	scope     workloadv1.Scope
	deny      bool
	rules     []rule
	// dryRun: evaluated for Decision.DryRun only (never enforced);
	// dryDenied is its would-be denial, built once.
	dryRun    bool
	dryDenied string
}

type rule struct {
	clauses []clause
}

type clause struct {
	any []match // any may match
}

// match is a compiled Match; an empty slice constrains nothing.
type match struct {
	ports, notPorts                                      []uint16
	srcIPs, notSrcIPs, dstIPs, notDstIPs                 []netip.Prefix
	principals, notPrincipals, namespaces, notNamespaces []strMatch
}

type strKind uint8

const (
	kindExact strKind = iota
	kindPrefix
	kindSuffix
	kindPresence
)

type strMatch struct {
	kind strKind
	s    string
}

func (p *policy) matches(c *conn) bool {
	for i := range p.rules {
		if p.rules[i].matches(c) {
			return true
		}
	}
	return false
}

func (r *rule) matches(c *conn) bool {
	for i := range r.clauses {
		if !r.clauses[i].matches(c) {
			return false
		}
	}
	return true
}

func (cl *clause) matches(c *conn) bool {
	for i := range cl.any {
		if cl.any[i].matches(c) {
			return true
		}
	}
	return false
}

func (m *match) matches(c *conn) bool {
	// Cheapest checks first.
	if len(m.ports) > 0 && !slices.Contains(m.ports, c.port) {
		return false
	}
	if slices.Contains(m.notPorts, c.port) {
		return false
	}
	if len(m.dstIPs) > 0 && !anyContains(m.dstIPs, c.dst) {
		return false
	}
	if anyContains(m.notDstIPs, c.dst) {
		return false
	}
	if len(m.srcIPs) > 0 && !anyContains(m.srcIPs, c.src) {
		return false
	}
	if anyContains(m.notSrcIPs, c.src) {
		return false
	}
	// An unauthenticated peer has no principal and no namespace: positive
	// fields fail, not_ fields hold.
	if len(m.principals) > 0 && (!c.authenticated || !anyString(m.principals, c.principal)) {
		return false
	}
	if c.authenticated && anyString(m.notPrincipals, c.principal) {
		return false
	}
	hasNS := c.namespace != ""
	if len(m.namespaces) > 0 && (!hasNS || !anyString(m.namespaces, c.namespace)) {
		return false
	}
	if hasNS && anyString(m.notNamespaces, c.namespace) {
		return false
	}
	return true
}

func anyContains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func anyString(ms []strMatch, v string) bool {
	for _, m := range ms {
		if m.matches(v) {
			return true
		}
	}
	return false
}

func (m strMatch) matches(v string) bool {
	switch m.kind {
	case kindExact:
		return v == m.s
	case kindPrefix:
		return strings.HasPrefix(v, m.s)
	case kindSuffix:
		return strings.HasSuffix(v, m.s)
	default: // kindPresence
		return v != ""
	}
}

// compile turns an Authorization into a policy; nil if it must be ignored.
// The problems describe malformed parts and how they were handled.
func compile(a *workloadv1.Authorization) (*policy, []string) {
	key := a.GetNamespace() + "/" + a.GetName()
	var problems []string
	switch a.GetScope() {
	case workloadv1.Scope_GLOBAL, workloadv1.Scope_NAMESPACE, workloadv1.Scope_WORKLOAD_SELECTOR:
	default:
		return nil, []string{fmt.Sprintf("%s: unknown scope %d; the policy is ignored", key, a.GetScope())}
	}
	p := &policy{key: key, namespace: a.GetNamespace(), scope: a.GetScope()}
	action, rules := a.GetAction(), a.GetRules()
	if d := a.GetDryRun(); d != nil {
		action, rules = d.GetAction(), d.GetRules()
		p.dryRun, p.dryDenied = true, "denied["+key+"]"
	}
	switch action {
	case workloadv1.Action_ALLOW:
	case workloadv1.Action_DENY:
		p.deny = true
	default:
		return nil, []string{fmt.Sprintf("%s: unknown action %d; the policy is ignored", key, action)}
	}
	for i, r := range rules {
		c := ruleCompiler{deny: p.deny}
		cr := c.rule(r)
		for _, msg := range c.invalid {
			if p.deny {
				problems = append(problems, fmt.Sprintf("%s: rule %d: %s; ignored, so this DENY rule matches more", key, i, msg))
			} else {
				problems = append(problems, fmt.Sprintf("%s: rule %d: %s; the ALLOW rule never matches", key, i, msg))
			}
		}
		if !p.deny && len(c.invalid) > 0 {
			continue // fail closed: the ALLOW rule is dropped
		}
		p.rules = append(p.rules, cr)
	}
	return p, problems
}

type ruleCompiler struct {
	deny    bool
	invalid []string
	// position of the match being compiled, for messages
	clause, match int
}

func (rc *ruleCompiler) problem(field, format string, args ...any) {
	rc.invalid = append(rc.invalid, fmt.Sprintf("clause %d match %d: %s: ", rc.clause, rc.match, field)+fmt.Sprintf(format, args...))
}

func (rc *ruleCompiler) rule(r *workloadv1.Rule) rule {
	out := rule{clauses: make([]clause, 0, len(r.GetClauses()))}
	for i, cl := range r.GetClauses() {
		if len(cl.GetMatches()) == 0 {
			// Matches everything for DENY (dropped), invalid for ALLOW.
			rc.invalid = append(rc.invalid, fmt.Sprintf("clause %d has no match", i))
			continue
		}
		c := clause{any: make([]match, 0, len(cl.GetMatches()))}
		for j, m := range cl.GetMatches() {
			rc.clause, rc.match = i, j
			c.any = append(c.any, rc.compileMatch(m))
		}
		out.clauses = append(out.clauses, c)
	}
	return out
}

func (rc *ruleCompiler) compileMatch(m *workloadv1.Match) match {
	if m == nil || (len(m.Principals) == 0 && len(m.NotPrincipals) == 0 &&
		len(m.Namespaces) == 0 && len(m.NotNamespaces) == 0 &&
		len(m.SourceIps) == 0 && len(m.NotSourceIps) == 0 &&
		len(m.DestinationIps) == 0 && len(m.NotDestinationIps) == 0 &&
		len(m.DestinationPorts) == 0 && len(m.NotDestinationPorts) == 0) {
		rc.invalid = append(rc.invalid, fmt.Sprintf("clause %d match %d is empty", rc.clause, rc.match))
		return match{} // matches everything (DENY only: ALLOW drops the rule)
	}
	return match{
		ports:         rc.ports("destination_ports", m.DestinationPorts),
		notPorts:      rc.ports("not_destination_ports", m.NotDestinationPorts),
		srcIPs:        rc.prefixes("source_ips", m.SourceIps),
		notSrcIPs:     rc.prefixes("not_source_ips", m.NotSourceIps),
		dstIPs:        rc.prefixes("destination_ips", m.DestinationIps),
		notDstIPs:     rc.prefixes("not_destination_ips", m.NotDestinationIps),
		principals:    rc.strings("principals", m.Principals),
		notPrincipals: rc.strings("not_principals", m.NotPrincipals),
		namespaces:    rc.strings("namespaces", m.Namespaces),
		notNamespaces: rc.strings("not_namespaces", m.NotNamespaces),
	}
}

// ports converts port numbers; on an invalid one the field is dropped (it
// then constrains nothing; for ALLOW the whole rule is dropped by compile).
func (rc *ruleCompiler) ports(field string, in []uint32) []uint16 {
	if len(in) == 0 {
		return nil
	}
	out := make([]uint16, 0, len(in))
	for _, p := range in {
		if p == 0 || p > 65535 {
			rc.problem(field, "%d is not a port number (1-65535)", p)
			return nil
		}
		out = append(out, uint16(p))
	}
	return out
}

func (rc *ruleCompiler) prefixes(field string, in []string) []netip.Prefix {
	if len(in) == 0 {
		return nil
	}
	out := make([]netip.Prefix, 0, len(in))
	for _, v := range in {
		p, ok := parsePrefix(v)
		if !ok {
			rc.problem(field, "%q is not an IP address or CIDR", v)
			return nil
		}
		out = append(out, p)
	}
	return out
}

func (rc *ruleCompiler) strings(field string, in []*workloadv1.StringMatch) []strMatch {
	if len(in) == 0 {
		return nil
	}
	out := make([]strMatch, 0, len(in))
	for _, m := range in {
		switch t := m.GetMatchType().(type) {
		case *workloadv1.StringMatch_Exact:
			out = append(out, strMatch{kind: kindExact, s: t.Exact})
		case *workloadv1.StringMatch_Prefix:
			out = append(out, strMatch{kind: kindPrefix, s: t.Prefix})
		case *workloadv1.StringMatch_Suffix:
			out = append(out, strMatch{kind: kindSuffix, s: t.Suffix})
		case *workloadv1.StringMatch_Presence:
			if !t.Presence {
				rc.problem(field, "presence is false")
				return nil
			}
			out = append(out, strMatch{kind: kindPresence})
		default:
			rc.problem(field, "a string match has no match type")
			return nil
		}
	}
	return out
}

// parsePrefix parses "a.b.c.d/n", "a::/n" or a single address, masked; an
// IPv4-mapped IPv6 value is turned into IPv4 (connections are unmapped too).
func parsePrefix(v string) (netip.Prefix, bool) {
	var p netip.Prefix
	if strings.Contains(v, "/") {
		var err error
		if p, err = netip.ParsePrefix(v); err != nil {
			return netip.Prefix{}, false
		}
	} else {
		a, err := netip.ParseAddr(v)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, false
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), true
}
