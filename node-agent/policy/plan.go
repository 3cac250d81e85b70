package policy

import (
	"slices"
	"strings"
	"sync"
)

// Plan is the policies that apply to one destination, in evaluation order
// and indexed by the principals they require, so that a check evaluates
// only the policies that may match the connection's peer: with a thousand
// policies applying, each naming its clients, a check costs a map lookup
// and the few policies that name no exact principal. Store.Plan builds it
// once per destination; Plan.Check does not allocate.
type Plan struct {
	enforced, dryRun planPart
}

// noPolicy is the plan of a nil Store.
var noPolicy = &Plan{}

// planPart is one index's policies for the destination.
type planPart struct {
	deny, allow candidates
}

// candidates are the policies of one action in evaluation order (GLOBAL,
// NAMESPACE, then the destination's listed names; by name within a scope).
type candidates struct {
	all []*policy
	// open holds the positions in all of the policies that may match a
	// connection whatever its principal; byPrincipal those that can match
	// only a connection authenticated as that exact principal. Both are
	// ascending, and each position is in exactly one of them.
	open        []int32
	byPrincipal map[string][]int32
}

func newCandidates(all []*policy) candidates {
	cs := candidates{all: all}
	for i, p := range all {
		principals, ok := p.principalsRequired()
		if !ok {
			cs.open = append(cs.open, int32(i))
			continue
		}
		for _, s := range principals { // distinct
			if cs.byPrincipal == nil { // most plans index nothing: no map
				cs.byPrincipal = map[string][]int32{}
			}
			cs.byPrincipal[s] = append(cs.byPrincipal[s], int32(i))
		}
	}
	return cs
}

// firstMatch returns the first policy, in evaluation order, that matches c.
func (cs *candidates) firstMatch(c *conn) *policy {
	open, named := cs.open, []int32(nil)
	if c.authenticated {
		named = cs.byPrincipal[c.principal]
	}
	for len(open) > 0 || len(named) > 0 {
		var i int32
		if len(named) == 0 || (len(open) > 0 && open[0] < named[0]) {
			i, open = open[0], open[1:]
		} else {
			i, named = named[0], named[1:]
		}
		if p := cs.all[i]; p.matches(c) {
			return p
		}
	}
	return nil
}

// Check decides whether connection c to the plan's destination is
// authorized, and what the dry-run policies would have decided.
func (p *Plan) Check(c Conn) Decision {
	cc := conn{
		src:       c.SourceIP.Unmap(),
		dst:       c.DestIP.Unmap(),
		port:      c.DestPort,
		principal: strings.TrimPrefix(c.Principal, "spiffe://"),
	}
	if cc.principal != "" {
		cc.authenticated = true
		cc.namespace = c.Namespace
	}
	d := p.enforced.decide(&cc)
	if p.dryRun.empty() { // the common case
		return d.Decision
	}
	if dry := p.dryRun.decide(&cc); dry.applied {
		switch {
		case dry.Allowed:
			d.DryRun = DryRunAllowed
		case dry.by != nil:
			d.DryRun = dry.by.dryDenied
		default:
			d.DryRun = dryRunNoAllow
		}
	}
	return d.Decision
}

func (pp *planPart) empty() bool { return len(pp.deny.all) == 0 && len(pp.allow.all) == 0 }

// decide applies Istio's order: any matching DENY denies; else with no
// ALLOW policy the connection is allowed; else the first matching ALLOW
// allows it, and none matching denies it.
func (pp *planPart) decide(cc *conn) decision {
	if p := pp.deny.firstMatch(cc); p != nil {
		return decision{Decision: Decision{Policy: p.key, Reason: ReasonDenyMatched}, applied: true, by: p}
	}
	if len(pp.allow.all) == 0 {
		return decision{Decision: Decision{Allowed: true, Reason: ReasonNoAllowPolicy}, applied: !pp.empty()}
	}
	if p := pp.allow.firstMatch(cc); p != nil {
		return decision{Decision: Decision{Allowed: true, Policy: p.key, Reason: ReasonAllowMatched}, applied: true, by: p}
	}
	return decision{Decision: Decision{Reason: ReasonNoAllowMatched}, applied: true}
}

// planPart collects the policies of ix that apply to dst. Names that are
// unknown or name a policy of another scope are skipped (the package
// documentation says why).
func (ix *index) planPart(dst Destination) planPart {
	var deny, allow []*policy
	add := func(g *group) {
		deny = append(deny, g.deny...)
		allow = append(allow, g.allow...)
	}
	add(&ix.global)
	if g := ix.byNamespace[dst.Namespace]; g != nil {
		add(g)
	}
	for _, name := range dst.Policies {
		if g := ix.byName[name]; g != nil {
			add(g)
		}
	}
	return planPart{deny: newCandidates(deny), allow: newCandidates(allow)}
}

// planCache shares plans between destinations with the same namespace and
// policy names (the replicas of a workload), up to maxCachedPlans; beyond,
// plans are built and not kept (their holders keep them).
type planCache struct {
	mu    sync.Mutex
	plans map[string]*Plan
}

const maxCachedPlans = 1024

// Plan returns the plan of dst: the policies that apply to it, compiled
// for Plan.Check. Plans are cached by the destination's namespace and
// policy names; a caller that checks a destination often keeps its plan
// (the node agent keeps one per workload and snapshot).
func (s *Store) Plan(dst Destination) *Plan {
	if s == nil {
		return noPolicy
	}
	key := dst.Namespace + "\x00" + strings.Join(dst.Policies, "\x00")
	s.cache.mu.Lock()
	p := s.cache.plans[key]
	s.cache.mu.Unlock()
	if p != nil {
		return p
	}
	p = s.buildPlan(dst) // unlocked: other destinations' plans need not wait
	s.cache.mu.Lock()
	defer s.cache.mu.Unlock()
	if raced := s.cache.plans[key]; raced != nil {
		return raced
	}
	if s.cache.plans == nil {
		s.cache.plans = map[string]*Plan{}
	}
	if len(s.cache.plans) < maxCachedPlans {
		s.cache.plans[key] = p
	}
	return p
}

func (s *Store) buildPlan(dst Destination) *Plan {
	return &Plan{enforced: s.enforced.planPart(dst), dryRun: s.dryRun.planPart(dst)}
}

// principalsRequired returns the exact principals one of which a
// connection must be authenticated as for p to match, and false if p may
// match another connection: then some rule has no clause whose every
// match names only exact principals. A policy without rules matches
// nothing and requires no principal.
func (p *policy) principalsRequired() ([]string, bool) {
	var out []string
	for i := range p.rules {
		s, ok := p.rules[i].principalsRequired()
		if !ok {
			return nil, false
		}
		out = append(out, s...)
	}
	slices.Sort(out)
	return slices.Compact(out), true
}

// principalsRequired returns the principals of the first clause of r that
// requires one of some exact principals (a clause holds if any of its
// matches does, and a match with principals requires one of them).
func (r *rule) principalsRequired() ([]string, bool) {
	for i := range r.clauses {
		if s, ok := r.clauses[i].principalsRequired(); ok {
			return s, true
		}
	}
	return nil, false
}

func (cl *clause) principalsRequired() ([]string, bool) {
	var out []string
	for i := range cl.any {
		m := &cl.any[i]
		if len(m.principals) == 0 {
			return nil, false
		}
		for _, s := range m.principals {
			if s.kind != kindExact {
				return nil, false
			}
			out = append(out, s.s)
		}
	}
	return out, len(out) > 0
}
