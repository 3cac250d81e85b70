// Package policy evaluates Weft's L4 Authorization resources (translated by
// the control plane from Istio AuthorizationPolicy and PeerAuthentication) for
// a connection arriving at a destination workload. It is pure: no I/O, no
// clock, no logging.
//
// Semantics are Istio's, as ztunnel implements them:
//
//   - The policies that apply to a destination are the GLOBAL ones, the
//     NAMESPACE ones of the destination's namespace and the WORKLOAD_SELECTOR
//     ones the destination workload names (Workload.authorization_policies).
//     Names that are unknown, or that name a policy of another scope, are
//     ignored, as ztunnel does (the workload may arrive before its policy).
//   - If any applicable DENY policy matches, the connection is denied. Else,
//     if no ALLOW policy applies, it is allowed. Else it is allowed iff some
//     ALLOW policy matches.
//   - A policy matches if any rule matches (no rules: matches nothing); a
//     rule if all its clauses match (no clauses: matches everything); a
//     clause if any of its matches matches; a Match if every non-empty field
//     matches: within a positive field any entry may match, a not_ field
//     must match no entry.
//   - Principals and namespaces come from the peer's authenticated identity.
//     A plaintext connection (Conn.Principal == "") has neither: it never
//     satisfies a positive principals/namespaces field (not even presence)
//     and always satisfies a not_principals/not_namespaces field. That is how
//     PeerAuthentication STRICT ("DENY not_principals: [presence]") rejects
//     plaintext.
//
// Malformed input (the control plane never sends it, but the agent must not
// trust that) fails closed:
//
//   - An unparsable IP/CIDR, a port of 0 or above 65535, a StringMatch with
//     no match type, a Match with no field and a Clause with no match are
//     "invalid parts".
//   - In an ALLOW policy, a rule containing an invalid part can never match
//     (so the policy allows less).
//   - In a DENY policy, an invalid part constrains nothing: a field holding
//     an invalid value is ignored as a whole, an empty Match or Clause
//     matches everything (so the policy denies more). This mirrors what the
//     control plane does with malformed AuthorizationPolicies.
//   - A policy with an unknown scope or action is ignored (ztunnel rejects
//     such a resource too); Store.Problems reports it.
//
// Everything is parsed once when the Store is built, and the policies that
// apply to a destination once per destination (Store.Plan); Plan.Check
// does not allocate.
package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
)

// Conn is an incoming connection as the destination's node agent sees it.
type Conn struct {
	SourceIP, DestIP netip.Addr
	DestPort         uint16
	// Principal is the peer's authenticated identity in Istio's form
	// "cluster.local/ns/x/sa/y" (a "spiffe://" prefix is tolerated); "" for
	// plaintext (unauthenticated) connections.
	Principal string
	// Namespace is the peer's namespace from its identity; ignored when
	// Principal is "".
	Namespace string
}

// Destination is the workload a connection is for.
type Destination struct {
	// Namespace of the destination workload (selects NAMESPACE policies).
	Namespace string
	// Policies are the WORKLOAD_SELECTOR policy names "<ns>/<name>" from
	// Workload.authorization_policies.
	Policies []string
}

// Decision is the outcome of Check.
type Decision struct {
	Allowed bool
	// Policy is the deciding policy "<ns>/<name>": the DENY policy that
	// matched or the ALLOW policy that matched; "" when no policy decided
	// (no ALLOW policy applies, or none matched).
	Policy string
	Reason string
	// DryRun is the would-be decision of the dry-run policies (Istio's
	// istio.io/dry-run) that apply, as the waypoint logs it: "" (none
	// applies), "allowed", or "denied[<ns>/<name>]" ("denied[none]": no
	// dry-run ALLOW policy matched). It is never enforced.
	DryRun string
}

// Values of Decision.DryRun besides "denied[<policy>]".
const (
	DryRunAllowed = "allowed"
	dryRunNoAllow = "denied[none]"
)

// Reasons given in Decision.Reason.
const (
	ReasonDenyMatched    = "a DENY policy matched"
	ReasonNoAllowPolicy  = "no ALLOW policy applies"
	ReasonAllowMatched   = "an ALLOW policy matched"
	ReasonNoAllowMatched = "no ALLOW policy matched"
)

// group holds the policies of one scope key, split by action, in name order
// so that Decision.Policy is deterministic.
type group struct {
	deny, allow []*policy
}

// Store is an immutable, indexed snapshot of the Authorization resources.
// It is safe for concurrent use. A nil *Store holds no policies. The node
// agent's config.Store compiles one whenever the Authorization resources
// change and serves it on its Snapshot (Snapshot.Policy), beside the
// workloads it applies to.
type Store struct {
	enforced, dryRun index
	size             int
	problems         []string
	cache            planCache
}

// index holds policies by scope key.
type index struct {
	global      group
	byNamespace map[string]*group
	byName      map[string]*group // WORKLOAD_SELECTOR policies, one each
}

// group returns the group p belongs to in ix, created if needed; nil for
// a second WORKLOAD_SELECTOR policy of the same name.
func (ix *index) group(p *policy) *group {
	switch p.scope {
	case workloadv1.Scope_GLOBAL:
		return &ix.global
	case workloadv1.Scope_NAMESPACE:
		if ix.byNamespace[p.namespace] == nil {
			ix.byNamespace[p.namespace] = &group{}
		}
		return ix.byNamespace[p.namespace]
	}
	if ix.byName[p.key] != nil {
		return nil
	}
	ix.byName[p.key] = &group{}
	return ix.byName[p.key]
}

// NewStore indexes and compiles the Authorization resources (keyed by xDS
// resource name; the policy's own namespace and name are used). Cost is
// linear in the size of the policies (plus sorting the names).
func NewStore(auths map[string]*workloadv1.Authorization) *Store {
	s := &Store{
		enforced: index{byNamespace: map[string]*group{}, byName: map[string]*group{}},
		dryRun:   index{byNamespace: map[string]*group{}, byName: map[string]*group{}},
	}
	var all []*policy
	for _, a := range auths {
		if a == nil {
			continue
		}
		p, problems := compile(a)
		s.problems = append(s.problems, problems...)
		if p != nil {
			all = append(all, p)
		}
	}
	slices.SortFunc(all, func(a, b *policy) int { return cmp.Compare(a.key, b.key) })
	for _, p := range all {
		ix := &s.enforced
		if p.dryRun {
			ix = &s.dryRun
		}
		g := ix.group(p)
		if g == nil {
			s.problems = append(s.problems, fmt.Sprintf("%s: duplicate policy; the first one is used", p.key))
			continue
		}
		if p.deny {
			g.deny = append(g.deny, p)
		} else {
			g.allow = append(g.allow, p)
		}
		s.size++
	}
	slices.Sort(s.problems)
	return s
}

// Len is the number of policies in force.
func (s *Store) Len() int {
	if s == nil {
		return 0
	}
	return s.size
}

// Problems describes, sorted, the malformed parts of the input and how they
// were handled (see the package documentation). Callers should log them.
func (s *Store) Problems() []string {
	if s == nil {
		return nil
	}
	return slices.Clone(s.problems)
}

// decision is a Decision with what planPart.decide knows besides: whether
// any policy applied, and the deciding policy.
type decision struct {
	Decision
	applied bool
	by      *policy
}
