package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
)

// TestPlanIndexesExactPrincipals: a policy is indexed by principal only
// when every rule has a clause whose every match names only exact
// principals; anything else stays open (evaluated for every connection).
func TestPlanIndexesExactPrincipals(t *testing.T) {
	p := func(ms ...*workloadv1.StringMatch) *workloadv1.Match { return &workloadv1.Match{Principals: ms} }
	ports := &workloadv1.Match{DestinationPorts: []uint32{80}}
	tests := []struct {
		name  string
		rules []*workloadv1.Rule
		want  []string // nil: open
	}{
		{"exact principals", []*workloadv1.Rule{one(p(exact("a"), exact("b")))}, []string{"a", "b"}},
		{"and a port clause", []*workloadv1.Rule{ruleOf(clauseOf(ports), clauseOf(p(exact("a"))))}, []string{"a"}},
		{"principals with other fields", []*workloadv1.Rule{one(&workloadv1.Match{Principals: sm(exact("a")), DestinationPorts: []uint32{80}})}, []string{"a"}},
		{"every rule's principals", []*workloadv1.Rule{one(p(exact("a"))), one(p(exact("b"), exact("a")))}, []string{"a", "b"}},
		{"no rule: matches nothing", nil, []string{}},
		{"a prefix", []*workloadv1.Rule{one(p(exact("a"), prefix("b")))}, nil},
		{"presence", []*workloadv1.Rule{one(p(presence()))}, nil},
		{"a match without principals", []*workloadv1.Rule{ruleOf(clauseOf(p(exact("a")), ports))}, nil},
		{"a rule without principals", []*workloadv1.Rule{one(p(exact("a"))), one(ports)}, nil},
		{"a rule without clauses", []*workloadv1.Rule{ruleOf()}, nil},
		{"not_principals", []*workloadv1.Rule{one(&workloadv1.Match{NotPrincipals: sm(exact("a"))})}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore(set(auth(nsScope, allow, "ns", "p", tc.rules...)))
			cs := s.Plan(Destination{Namespace: "ns"}).enforced.allow
			var got []string
			if len(cs.open) == 0 {
				got = []string{}
				for k := range cs.byPrincipal {
					got = append(got, k)
				}
				slices.Sort(got)
			}
			if !slices.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
				t.Errorf("indexed by %q (open %v), want %q", got, cs.open, tc.want)
			}
		})
	}
}

func TestPlansAreShared(t *testing.T) {
	s, dst := benchStore(1000, 10)
	if s.Plan(dst) != s.Plan(Destination{Namespace: dst.Namespace, Policies: slices.Clone(dst.Policies)}) {
		t.Error("two destinations with the same policies got two plans")
	}
	if s.Plan(dst) == s.Plan(Destination{Namespace: "other", Policies: dst.Policies}) {
		t.Error("destinations of two namespaces share a plan")
	}
	if NewStore(nil).Plan(dst) == s.Plan(dst) {
		t.Error("two stores share a plan")
	}
}

// TestIndexDecidesAsLinear runs the fuzz target's check on generated
// inputs, and asserts the generator exercises the index.
func TestIndexDecidesAsLinear(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	indexed := 0
	for range 3000 {
		b := make([]byte, 96)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if checkIndexAgainstLinear(t, b) {
			indexed++
		}
	}
	if indexed < 300 {
		t.Errorf("only %d of 3000 inputs had an indexed policy applying", indexed)
	}
}

// FuzzPlanIndex: whatever the policies, a plan decides every connection
// as evaluating every applicable policy in order would (the index only
// skips policies that cannot match), including the deciding policy and
// the dry-run outcome.
func FuzzPlanIndex(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{5, 0, 1, 0, 1, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte("\x03\x02\x01\x00\x02\x01\x01\x00\x03\x02\x01\x00\x02\x01\x01\x00\x07\x07\x07"))
	f.Fuzz(func(t *testing.T, b []byte) { checkIndexAgainstLinear(t, b) })
}

// checkIndexAgainstLinear builds policies and a destination from b,
// compares the plan's decisions with linear's for a set of connections,
// and reports whether any applicable policy was indexed.
func checkIndexAgainstLinear(t *testing.T, b []byte) bool {
	g := &policyGen{b: b}
	auths, dst := g.policies()
	plan := NewStore(auths).Plan(dst)
	ref := linear(plan)
	for _, c := range genConns() {
		if got, want := plan.Check(c), ref.Check(c); got != want {
			t.Fatalf("policies %v, destination %+v, connection %+v: indexed %+v, linear %+v", auths, dst, c, got, want)
		}
	}
	return len(plan.enforced.deny.byPrincipal)+len(plan.enforced.allow.byPrincipal)+
		len(plan.dryRun.deny.byPrincipal)+len(plan.dryRun.allow.byPrincipal) > 0
}

// linear is p with every policy open: each check evaluates every
// applicable policy in order.
func linear(p *Plan) *Plan {
	open := func(cs candidates) candidates {
		out := candidates{all: cs.all}
		for i := range cs.all {
			out.open = append(out.open, int32(i))
		}
		return out
	}
	part := func(pp planPart) planPart { return planPart{deny: open(pp.deny), allow: open(pp.allow)} }
	return &Plan{enforced: part(p.enforced), dryRun: part(p.dryRun)}
}

var genPrincipals = []string{"cluster.local/ns/a/sa/x", "cluster.local/ns/a/sa/y", "cluster.local/ns/b/sa/x"}

// genConns are plaintext and authenticated connections (with and without
// the spiffe:// prefix) on two ports from two sources.
func genConns() []Conn {
	var out []Conn
	for _, principal := range append([]string{"", "spiffe://" + genPrincipals[0]}, genPrincipals...) {
		for _, port := range []uint16{80, 8080} {
			for _, src := range []string{"10.0.0.1", "192.168.0.1"} {
				c := Conn{SourceIP: netip.MustParseAddr(src), DestIP: netip.MustParseAddr("10.1.0.1"), DestPort: port, Principal: principal}
				if principal != "" {
					c.Namespace = "a"
				}
				out = append(out, c)
			}
		}
	}
	return out
}

// policyGen makes policies from fuzz input; it reads zeros once b is used up.
type policyGen struct{ b []byte }

func (g *policyGen) n(k int) int {
	if len(g.b) == 0 {
		return 0
	}
	v := int(g.b[0]) % k
	g.b = g.b[1:]
	return v
}

func (g *policyGen) policies() (map[string]*workloadv1.Authorization, Destination) {
	auths := map[string]*workloadv1.Authorization{}
	dst := Destination{Namespace: "a", Policies: []string{"a/unknown"}}
	for i := range g.n(8) + 1 {
		scope := []workloadv1.Scope{global, nsScope, selector}[g.n(3)]
		a := auth(scope, []workloadv1.Action{allow, deny}[g.n(2)], []string{"a", "b"}[g.n(2)], fmt.Sprintf("p%d", i))
		for range g.n(3) {
			a.Rules = append(a.Rules, g.rule())
		}
		if g.n(4) == 0 {
			a = dryRun(a)
		}
		auths[a.Namespace+"/"+a.Name] = a
		if scope == selector && g.n(3) > 0 {
			dst.Policies = append(dst.Policies, a.Namespace+"/"+a.Name)
		}
	}
	return auths, dst
}

func (g *policyGen) rule() *workloadv1.Rule {
	r := ruleOf()
	for range g.n(3) {
		cl := clauseOf()
		for range g.n(2) + 1 {
			cl.Matches = append(cl.Matches, g.match())
		}
		r.Clauses = append(r.Clauses, cl)
	}
	return r
}

func (g *policyGen) match() *workloadv1.Match {
	m := &workloadv1.Match{}
	for range g.n(3) {
		m.Principals = append(m.Principals, g.stringMatch())
	}
	if g.n(4) == 0 {
		m.NotPrincipals = sm(g.stringMatch())
	}
	if g.n(4) == 0 {
		m.Namespaces = sm(exact([]string{"a", "b"}[g.n(2)]))
	}
	if g.n(3) == 0 {
		m.DestinationPorts = []uint32{[]uint32{80, 8080}[g.n(2)]}
	}
	if g.n(4) == 0 {
		m.SourceIps = []string{"10.0.0.0/8"}
	}
	return m
}

func (g *policyGen) stringMatch() *workloadv1.StringMatch {
	switch g.n(5) {
	case 0:
		return prefix("cluster.local/ns/a/")
	case 1:
		return presence()
	default:
		return exact(genPrincipals[g.n(len(genPrincipals))])
	}
}
