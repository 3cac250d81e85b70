package route

import (
	"cmp"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbaccfgv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// rbacFilter is envoy.filters.http.rbac (the contract's "rbac-deny" and
// "rbac-allow"). Envoy semantics: a policy matches when any permission and
// any principal match; ALLOW allows iff a policy matches, DENY denies iff
// one matches; no rules = no enforcement. Denials are 403 "RBAC: access
// denied" with details rbac_access_denied_matched_policy[<policy>|none] and
// no response flag. Shadow rules (Istio's istio.io/dry-run policies) are
// evaluated and never enforced: their would-be denial is Info.DryRunDenied.
type rbacFilter struct {
	name   string
	eng    *rbacEngine // nil: not enforcing
	shadow *rbacEngine // nil: no shadow rules
	// shadowPrefix is shadow_rules_stat_prefix. The shadow rules' matched
	// policy is recorded under it (Envoy's <prefix>shadow_effective_policy_id
	// dynamic metadata); with extAuthzShadowPrefix they only select the
	// requests ext_authz checks (Istio's CUSTOM policies), otherwise they
	// are a dry run.
	shadowPrefix string
}

// extAuthzShadowPrefix is Istio's stat prefix of the shadow rules that
// enable ext_authz.
const extAuthzShadowPrefix = "istio_ext_authz_"

type rbacEngine struct {
	allow bool
	// log: action LOG (Istio's AUDIT): a match marks the request for the
	// access log (Envoy's access_log_hint), nothing is denied.
	log      bool
	policies []rbacPolicy // sorted by name, like Envoy's std::map
}

type rbacPolicy struct {
	name       string
	perms      []matcher
	principals []matcher
}

// matcher is a compiled Permission or Principal.
type matcher interface {
	match(x *exchange) bool
}

func (f *rbacFilter) encode(*exchange, http.Header) {}

func (f *rbacFilter) decode(x *exchange) bool {
	if f.shadow != nil {
		f.evaluateShadow(x)
	}
	if f.eng == nil {
		return true
	}
	matched, policy := f.eng.evaluate(x)
	if f.eng.log {
		if matched && x.info.Audit == "" {
			x.info.Audit = policy
		}
		return true
	}
	allowed := matched == f.eng.allow
	if allowed {
		return true
	}
	if policy == "" {
		policy = "none"
	}
	x.localReply(http.StatusForbidden, "RBAC: access denied", "rbac_access_denied_matched_policy["+policy+"]", -1, false, nil)
	return false
}

// evaluateShadow evaluates the shadow rules, as Envoy before the enforced
// ones, and records the policy they matched and, for a dry run, their
// decision (the first denial of the request's filters).
func (f *rbacFilter) evaluateShadow(x *exchange) {
	matched, policy := f.shadow.evaluate(x)
	if matched {
		x.shadowIDs = append(x.shadowIDs, shadowID{f.shadowPrefix, policy})
	}
	if f.shadowPrefix == extAuthzShadowPrefix {
		return
	}
	if matched == f.shadow.allow {
		if x.info.DryRun == "" {
			x.info.DryRun = "allowed"
		}
		return
	}
	if !strings.HasPrefix(x.info.DryRun, "denied") {
		x.info.DryRun = "denied[" + cmp.Or(policy, "none") + "]"
	}
}

func (e *rbacEngine) evaluate(x *exchange) (bool, string) {
	for i := range e.policies {
		p := &e.policies[i]
		if anyMatch(p.perms, x) && anyMatch(p.principals, x) {
			return true, p.name
		}
	}
	return false, ""
}

func anyMatch(ms []matcher, x *exchange) bool {
	for _, m := range ms {
		if m.match(x) {
			return true
		}
	}
	return false
}

func allMatch(ms []matcher, x *exchange) bool {
	for _, m := range ms {
		if !m.match(x) {
			return false
		}
	}
	return true
}

func compileRBAC(name string, c *rbacv3.RBAC) (*rbacFilter, error) {
	if c.GetMatcher() != nil || c.GetShadowMatcher() != nil {
		return nil, fmt.Errorf("RBAC matcher API is not supported (use rules)")
	}
	f := &rbacFilter{name: name, shadowPrefix: c.GetShadowRulesStatPrefix()}
	var err error
	if f.eng, err = compileRules(c.GetRules()); err != nil {
		return nil, err
	}
	if f.shadow, err = compileRules(c.GetShadowRules()); err != nil {
		return nil, fmt.Errorf("shadow_rules: %w", err)
	}
	return f, nil
}

// NetworkRBAC is envoy.filters.network.rbac on a TCP chain: the HTTP
// filter's engine, evaluated once per connection before it is proxied.
// As in Envoy, the connection has no request headers, so header and path
// matchers see an empty request.
type NetworkRBAC struct {
	eng *rbacEngine // nil: not enforcing
}

// CompileNetworkRBAC compiles a network RBAC filter config. Only the
// enforcing rules are supported; shadow rules are ignored as in the HTTP
// filter, and the matcher API is refused so that nothing is dropped quietly.
func CompileNetworkRBAC(c *netrbacv3.RBAC) (*NetworkRBAC, error) {
	if c.GetMatcher() != nil {
		return nil, fmt.Errorf("RBAC matcher API is not supported (use rules)")
	}
	eng, err := compileRules(c.GetRules())
	if err != nil {
		return nil, err
	}
	return &NetworkRBAC{eng: eng}, nil
}

// Allowed decides on a connection from peer (its identity, address and
// original destination). When denied, details is Envoy's connection
// termination detail rbac_access_denied_matched_policy[<policy>|none].
func (n *NetworkRBAC) Allowed(peer Peer) (ok bool, details string) {
	if n == nil || n.eng == nil || n.eng.log {
		return true, "" // LOG never blocks (nothing logs it on a TCP chain)
	}
	// x.v stays empty: no headers, no :path. x.r only backs the address
	// fallbacks, which peer makes unnecessary when it is complete.
	x := &exchange{r: &http.Request{}, peer: peer, hasPeer: true, peerOK: true}
	matched, policy := n.eng.evaluate(x)
	if matched == n.eng.allow {
		return true, ""
	}
	if policy == "" {
		policy = "none"
	}
	return false, "rbac_access_denied_matched_policy[" + policy + "]"
}

func compileRules(rules *rbaccfgv3.RBAC) (*rbacEngine, error) {
	if rules == nil {
		return nil, nil
	}
	e := &rbacEngine{}
	switch rules.GetAction() {
	case rbaccfgv3.RBAC_ALLOW:
		e.allow = true
	case rbaccfgv3.RBAC_DENY:
	case rbaccfgv3.RBAC_LOG:
		e.log = true
	default:
		return nil, fmt.Errorf("unknown RBAC action %v", rules.GetAction())
	}
	names := make([]string, 0, len(rules.GetPolicies()))
	for n := range rules.GetPolicies() {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		pol := rules.GetPolicies()[n]
		if pol.GetCondition() != nil || pol.GetCheckedCondition() != nil {
			return nil, fmt.Errorf("policy %q: CEL conditions are not supported", n)
		}
		cp := rbacPolicy{name: n}
		var err error
		if cp.perms, err = compileAll(pol.GetPermissions(), compilePermission); err != nil {
			return nil, fmt.Errorf("policy %q: permission: %w", n, err)
		}
		if cp.principals, err = compileAll(pol.GetPrincipals(), compilePrincipal); err != nil {
			return nil, fmt.Errorf("policy %q: principal: %w", n, err)
		}
		e.policies = append(e.policies, cp)
	}
	return e, nil
}

type anyM struct{}

func (anyM) match(*exchange) bool { return true }

type andM []matcher

func (m andM) match(x *exchange) bool { return allMatch(m, x) }

type orM []matcher

func (m orM) match(x *exchange) bool { return anyMatch(m, x) }

type notM struct{ m matcher }

func (m notM) match(x *exchange) bool { return !m.m.match(x) }

type headerM struct{ h headerMatcher }

func (m *headerM) match(x *exchange) bool { return m.h.match(&x.v) }

// urlPathM matches the path without query (Envoy's PathMatcher). A
// connection evaluated by the network filter has no :path, which Envoy's
// PathMatcher never matches.
type urlPathM struct{ sm stringMatcher }

func (m *urlPathM) match(x *exchange) bool { return x.v.pathOnly != "" && m.sm.match(x.v.pathOnly) }

type cidrM struct {
	prefix netip.Prefix
	dest   bool // destination_ip instead of the peer address
}

func (m *cidrM) match(x *exchange) bool {
	var a netip.Addr
	if m.dest {
		a = x.destAddrPort().Addr()
	} else {
		a = x.sourceAddr()
	}
	return a.IsValid() && m.prefix.Contains(a.Unmap())
}

type portM struct{ lo, hi uint32 } // [lo, hi]

func (m portM) match(x *exchange) bool {
	ap := x.destAddrPort()
	if !ap.IsValid() {
		return false
	}
	p := uint32(ap.Port())
	return p >= m.lo && p <= m.hi
}

// authM is Principal.authenticated: the peer has an identity and, when
// principal_name is set, its SPIFFE URI matches it.
type authM struct {
	sm  stringMatcher
	any bool
}

func (m *authM) match(x *exchange) bool {
	p, ok := x.getPeer()
	if !ok || p.ID.IsZero() {
		return false
	}
	if m.any {
		return true
	}
	return m.sm.match(p.ID.String())
}

// destAddrPort is the original destination (Peer.Dest, else the local
// address of the downstream connection).
func (x *exchange) destAddrPort() netip.AddrPort {
	if p, ok := x.getPeer(); ok && p.Dest.IsValid() {
		return p.Dest
	}
	if la, ok := x.r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(la.String()); err == nil {
			return ap
		}
	}
	return netip.AddrPort{}
}

func compileCIDR(c *corev3.CidrRange, dest bool) (matcher, error) {
	a, err := netip.ParseAddr(c.GetAddressPrefix())
	if err != nil {
		return nil, fmt.Errorf("cidr %q: %w", c.GetAddressPrefix(), err)
	}
	bits := int(c.GetPrefixLen().GetValue())
	if bits > a.BitLen() {
		return nil, fmt.Errorf("cidr %s/%d: prefix too long", a, bits)
	}
	pfx, err := a.Unmap().Prefix(min(bits, a.Unmap().BitLen()))
	if err != nil {
		return nil, err
	}
	return &cidrM{prefix: pfx, dest: dest}, nil
}

func compilePathMatcher(pm *matcherv3.PathMatcher) (matcher, error) {
	sm, err := compileStringMatcher(pm.GetPath())
	if err != nil {
		return nil, fmt.Errorf("url_path: %w", err)
	}
	return &urlPathM{sm: sm}, nil
}

// compileAll compiles every rule of a list (permissions, principals) into
// its matcher; the first error stops it.
func compileAll[R any](rules []R, compile func(R) (matcher, error)) ([]matcher, error) {
	var ms []matcher
	for _, r := range rules {
		m, err := compile(r)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, nil
}

func compilePermission(p *rbaccfgv3.Permission) (matcher, error) {
	switch r := p.Rule.(type) {
	case *rbaccfgv3.Permission_Any:
		return anyM{}, nil
	case *rbaccfgv3.Permission_AndRules:
		ms, err := compileAll(r.AndRules.GetRules(), compilePermission)
		if err != nil {
			return nil, err
		}
		return andM(ms), nil
	case *rbaccfgv3.Permission_OrRules:
		ms, err := compileAll(r.OrRules.GetRules(), compilePermission)
		if err != nil {
			return nil, err
		}
		return orM(ms), nil
	case *rbaccfgv3.Permission_NotRule:
		m, err := compilePermission(r.NotRule)
		if err != nil {
			return nil, err
		}
		return notM{m}, nil
	case *rbaccfgv3.Permission_Header:
		hm, err := compileHeaderMatcher(r.Header)
		if err != nil {
			return nil, err
		}
		return &headerM{hm}, nil
	case *rbaccfgv3.Permission_UrlPath:
		return compilePathMatcher(r.UrlPath)
	case *rbaccfgv3.Permission_DestinationPort:
		return portM{r.DestinationPort, r.DestinationPort}, nil
	case *rbaccfgv3.Permission_DestinationPortRange:
		// Int32Range: [start, end)
		return portM{uint32(r.DestinationPortRange.GetStart()), uint32(r.DestinationPortRange.GetEnd() - 1)}, nil
	case *rbaccfgv3.Permission_DestinationIp:
		return compileCIDR(r.DestinationIp, true)
	case *rbaccfgv3.Permission_Metadata:
		return compileMetadataMatcher(r.Metadata)
	}
	return nil, fmt.Errorf("unsupported permission %T", p.Rule)
}

func compilePrincipal(p *rbaccfgv3.Principal) (matcher, error) {
	switch r := p.Identifier.(type) {
	case *rbaccfgv3.Principal_Any:
		return anyM{}, nil
	case *rbaccfgv3.Principal_AndIds:
		ms, err := compileAll(r.AndIds.GetIds(), compilePrincipal)
		if err != nil {
			return nil, err
		}
		return andM(ms), nil
	case *rbaccfgv3.Principal_OrIds:
		ms, err := compileAll(r.OrIds.GetIds(), compilePrincipal)
		if err != nil {
			return nil, err
		}
		return orM(ms), nil
	case *rbaccfgv3.Principal_NotId:
		m, err := compilePrincipal(r.NotId)
		if err != nil {
			return nil, err
		}
		return notM{m}, nil
	case *rbaccfgv3.Principal_Authenticated_:
		if r.Authenticated.GetPrincipalName() == nil {
			return &authM{any: true}, nil
		}
		sm, err := compileStringMatcher(r.Authenticated.GetPrincipalName())
		if err != nil {
			return nil, fmt.Errorf("authenticated.principal_name: %w", err)
		}
		return &authM{sm: sm}, nil
	case *rbaccfgv3.Principal_DirectRemoteIp:
		return compileCIDR(r.DirectRemoteIp, false)
	case *rbaccfgv3.Principal_RemoteIp:
		return compileCIDR(r.RemoteIp, false)
	case *rbaccfgv3.Principal_SourceIp:
		return compileCIDR(r.SourceIp, false)
	case *rbaccfgv3.Principal_Header:
		hm, err := compileHeaderMatcher(r.Header)
		if err != nil {
			return nil, err
		}
		return &headerM{hm}, nil
	case *rbaccfgv3.Principal_UrlPath:
		return compilePathMatcher(r.UrlPath)
	case *rbaccfgv3.Principal_Metadata:
		return compileMetadataMatcher(r.Metadata)
	}
	return nil, fmt.Errorf("unsupported principal %T", p.Identifier)
}
