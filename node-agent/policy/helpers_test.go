package policy

import (
	"net/netip"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
)

func exact(s string) *workloadv1.StringMatch {
	return &workloadv1.StringMatch{MatchType: &workloadv1.StringMatch_Exact{Exact: s}}
}

func prefix(s string) *workloadv1.StringMatch {
	return &workloadv1.StringMatch{MatchType: &workloadv1.StringMatch_Prefix{Prefix: s}}
}

func suffix(s string) *workloadv1.StringMatch {
	return &workloadv1.StringMatch{MatchType: &workloadv1.StringMatch_Suffix{Suffix: s}}
}

func presence() *workloadv1.StringMatch {
	return &workloadv1.StringMatch{MatchType: &workloadv1.StringMatch_Presence{Presence: true}}
}

func sm(ms ...*workloadv1.StringMatch) []*workloadv1.StringMatch { return ms }

func ruleOf(clauses ...*workloadv1.Clause) *workloadv1.Rule {
	return &workloadv1.Rule{Clauses: clauses}
}

func clauseOf(ms ...*workloadv1.Match) *workloadv1.Clause {
	return &workloadv1.Clause{Matches: ms}
}

// one is a rule with a single clause holding a single match.
func one(m *workloadv1.Match) *workloadv1.Rule { return ruleOf(clauseOf(m)) }

func auth(scope workloadv1.Scope, action workloadv1.Action, ns, name string, rules ...*workloadv1.Rule) *workloadv1.Authorization {
	return &workloadv1.Authorization{Name: name, Namespace: ns, Scope: scope, Action: action, Rules: rules}
}

func set(as ...*workloadv1.Authorization) map[string]*workloadv1.Authorization {
	out := make(map[string]*workloadv1.Authorization, len(as))
	for _, a := range as {
		out[a.Namespace+"/"+a.Name] = a
	}
	return out
}

const (
	global   = workloadv1.Scope_GLOBAL
	nsScope  = workloadv1.Scope_NAMESPACE
	selector = workloadv1.Scope_WORKLOAD_SELECTOR
	allow    = workloadv1.Action_ALLOW
	deny     = workloadv1.Action_DENY
)

var (
	mtls = Conn{
		SourceIP:  netip.MustParseAddr("10.0.0.1"),
		DestIP:    netip.MustParseAddr("10.1.0.1"),
		DestPort:  8080,
		Principal: "cluster.local/ns/app/sa/web",
		Namespace: "app",
	}
	plain = Conn{
		SourceIP: netip.MustParseAddr("10.0.0.1"),
		DestIP:   netip.MustParseAddr("10.1.0.1"),
		DestPort: 8080,
	}
)

func with(c Conn, f func(*Conn)) Conn {
	f(&c)
	return c
}
