package waypoint

import (
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/pkg/mesh"
)

const kindAP = "AuthorizationPolicy"

// authzPolicy is an AuthorizationPolicy translated into Envoy RBAC
// policies (one per rule that survives): for HTTP chains, and for TCP
// chains with Istio's treatment of HTTP-only attributes, which a TCP
// connection does not have (an ALLOW rule using one is dropped, a DENY rule
// is kept without it).
type authzPolicy struct {
	ns, name string
	key      string // "<ns>/<name>", for ordering
	deny     bool
	dryRun   bool // istio.io/dry-run: shadow rules, never enforced
	// custom is the external authorizer of a CUSTOM policy (deny is set
	// too: on TCP chains, and where the provider cannot be used, its rules
	// deny).
	custom *extAuthz
	// audit: an AUDIT policy; its matches are logged (RBAC action LOG),
	// never denied; ignored on TCP chains.
	audit    bool
	policies map[string]*rbacv3.Policy
	tcp      map[string]*rbacv3.Policy
	// tcpProblems are what only the TCP translation dropped; reported
	// once the policy applies to a TCP chain.
	tcpProblems []string
}

// indexAuthorizationPolicies translates the policies bound to a waypoint
// (targetRefs kind Gateway) or to a Service (kind Service). Policies
// without targetRefs are L4 policies of the node agents.
func (t *translator) indexAuthorizationPolicies(aps []*securityv1.AuthorizationPolicy) {
	t.authzPolicies = sortedPolicies(aps)
	for _, ap := range t.authzPolicies {
		spec := &ap.Spec
		refs := targetRefs(spec.TargetRefs, spec.TargetRef)
		if len(refs) == 0 {
			continue
		}
		p := func(format string, args ...any) { t.problem(kindAP, ap.Namespace, ap.Name, format, args...) }
		if spec.Selector != nil {
			p("spec.selector: cannot be combined with targetRefs; ignored")
			continue
		}
		gateways, services := t.policyTargets(ap.Namespace, refs, p)
		if len(gateways)+len(services) == 0 {
			continue // none, or only ingress Gateways (gatewayAuthz)
		}
		pol := t.waypointPolicy(ap, p, false)
		if pol == nil {
			continue
		}
		for _, g := range gateways {
			t.gatewayPolicies[g] = append(t.gatewayPolicies[g], pol)
		}
		for _, fqdn := range services {
			t.servicePolicies[fqdn] = append(t.servicePolicies[fqdn], pol)
		}
	}
}

// waypointPolicy translates ap for its action and istio.io/dry-run, for a
// waypoint or (gateway) an ingress gateway; nil when the action is not
// supported (reported with p).
func (t *translator) waypointPolicy(ap *securityv1.AuthorizationPolicy, p problemf, gateway bool) *authzPolicy {
	dryRun := false
	if v, ok := ap.Annotations[mesh.AnnotationDryRun]; ok {
		var err error
		if dryRun, err = strconv.ParseBool(v); err != nil {
			p("annotation %s: %q is not a boolean; the policy is enforced", mesh.AnnotationDryRun, v)
		}
	}
	action := ap.Spec.Action
	if dryRun && (action == securityapi.AuthorizationPolicy_CUSTOM || action == securityapi.AuthorizationPolicy_AUDIT) {
		p("annotation %s: not supported with %s (as in Istio); the policy is applied", mesh.AnnotationDryRun, action)
		dryRun = false
	}
	var custom *extAuthz
	switch action {
	case securityapi.AuthorizationPolicy_ALLOW, securityapi.AuthorizationPolicy_DENY, securityapi.AuthorizationPolicy_AUDIT:
	case securityapi.AuthorizationPolicy_CUSTOM:
		// Fail closed: without a usable authorizer, its rules deny.
		var err error
		if custom, err = t.extAuthzProvider(ap.Spec.GetProvider().GetName()); err != nil {
			p("%v; the policy's rules deny", err)
		}
		if custom != nil {
			for _, what := range custom.ignored {
				p("extension provider %q: %s is not supported; ignored", custom.provider, what)
			}
		}
	default:
		p("spec.action: %s is not supported; ignored", action)
		return nil
	}
	// CUSTOM and AUDIT rules are built as DENY rules are: an attribute
	// dropped makes the rule match more (more requests checked or logged).
	pol := t.authzPolicy(ap, action != securityapi.AuthorizationPolicy_ALLOW, gateway)
	pol.audit = action == securityapi.AuthorizationPolicy_AUDIT
	if pol.custom = custom; custom != nil {
		pol.tcpProblems = append(pol.tcpProblems, "spec.action: CUSTOM is not supported on TCP ports (no ext_authz network filter); the policy's rules deny")
	}
	if pol.audit {
		pol.tcpProblems = append(pol.tcpProblems, "spec.action: AUDIT is not supported on TCP ports; ignored there")
	}
	if pol.dryRun = dryRun; dryRun {
		pol.tcpProblems = append(pol.tcpProblems, fmt.Sprintf(
			"annotation %s: a TCP chain does not log the would-be decision of a dry-run policy (it is not enforced either)", mesh.AnnotationDryRun))
	}
	return pol
}

// sortedPolicies is objs without nils, sorted by "<ns>/<name>".
func sortedPolicies[T metav1.Object](objs []T) []T {
	objs = slices.DeleteFunc(slices.Clone(objs), func(o T) bool { return reflect.ValueOf(o).IsNil() })
	slices.SortFunc(objs, func(a, b T) int {
		return strings.Compare(a.GetNamespace()+"/"+a.GetName(), b.GetNamespace()+"/"+b.GetName())
	})
	return objs
}

// targetRefs are a policy's targetRefs and its deprecated targetRef.
func targetRefs(refs []*typeapi.PolicyTargetReference, ref *typeapi.PolicyTargetReference) []*typeapi.PolicyTargetReference {
	refs = slices.Clone(refs)
	if ref != nil {
		refs = append(refs, ref)
	}
	return refs
}

// policyTargets resolves the targetRefs of a policy in namespace ns: the
// waypoints ("<ns>/<name>") and the Services (FQDN) it is bound to. What
// cannot be bound is reported with p.
func (t *translator) policyTargets(ns string, refs []*typeapi.PolicyTargetReference, p func(string, ...any)) (gateways, services []string) {
	for i, ref := range refs {
		path := fmt.Sprintf("spec.targetRefs[%d]", i)
		if ref.Namespace != "" && ref.Namespace != ns {
			p("%s.namespace: must be the policy's namespace; target ignored", path)
			continue
		}
		switch {
		case ref.Group == "gateway.networking.k8s.io" && ref.Kind == "Gateway" && t.ingressNames[ns+"/"+ref.Name]:
			// an ingress gateway's: gatewayAuthz
		case ref.Group == "gateway.networking.k8s.io" && ref.Kind == "Gateway":
			gateways = append(gateways, ns+"/"+ref.Name)
		case (ref.Group == "" || ref.Group == "core") && ref.Kind == "Service":
			fqdn := t.fqdn(ref.Name, ns)
			if t.services[fqdn] == nil {
				p("%s: Service %s/%s is not in the mesh; target ignored", path, ns, ref.Name)
				continue
			}
			services = append(services, fqdn)
		default:
			p("%s: %s/%s targets are not supported by waypoints; target ignored", path, ref.Group, ref.Kind)
		}
	}
	return gateways, services
}

// authzPolicy translates ap's rules for HTTP and for TCP chains.
func (t *translator) authzPolicy(ap *securityv1.AuthorizationPolicy, deny, gateway bool) *authzPolicy {
	pol := &authzPolicy{ns: ap.Namespace, name: ap.Name, key: ap.Namespace + "/" + ap.Name, deny: deny,
		policies: map[string]*rbacv3.Policy{}, tcp: map[string]*rbacv3.Policy{}}
	for i, r := range ap.Spec.Rules {
		name := fmt.Sprintf("ns[%s]-policy[%s]-rule[%d]", ap.Namespace, ap.Name, i)
		path := fmt.Sprintf("spec.rules[%d]", i)
		custom := ap.Spec.Action == securityapi.AuthorizationPolicy_CUSTOM
		b := &ruleBuilder{t: t, ns: ap.Namespace, deny: deny, custom: custom, gateway: gateway}
		if rp := b.rule(path, r); rp != nil {
			pol.policies[name] = rp
		}
		for _, msg := range b.problems {
			t.problem(kindAP, ap.Namespace, ap.Name, "%s", msg)
		}
		tb := &ruleBuilder{t: t, ns: ap.Namespace, deny: deny, custom: custom, gateway: gateway, tcp: true}
		if rp := tb.rule(path, r); rp != nil {
			pol.tcp[name] = rp
		}
		for _, msg := range tb.problems {
			if !slices.Contains(b.problems, msg) {
				pol.tcpProblems = append(pol.tcpProblems, msg)
			}
		}
	}
	return pol
}

// ruleBuilder translates one rule. Unsupported or malformed attributes are
// reported; in an ALLOW rule they drop the rule (it allows nothing more),
// in a DENY rule they drop the attribute (the rule denies more).
type ruleBuilder struct {
	t      *translator
	ns     string
	deny   bool
	custom bool // a CUSTOM policy's rule (built as a DENY rule)
	tcp    bool // for a TCP chain: HTTP-only attributes cannot match
	// gateway: for an ingress gateway, whose client address is the
	// downstream TCP peer: ipBlocks and remoteIpBlocks match it (remote
	// as Istio's default of no trusted proxies in front).
	gateway  bool
	dropped  bool
	problems []string
}

// httpOnly reports an HTTP-only attribute of a rule built for a TCP chain,
// with Istio's consequence (see ruleBuilder.bad). It returns true when
// the attribute must be left out.
func (b *ruleBuilder) httpOnly(path string) bool {
	if b.tcp {
		b.bad(path, "HTTP-only, a TCP connection has no such attribute")
	}
	return b.tcp
}

func (b *ruleBuilder) bad(path, format string, args ...any) {
	b.dropped = true
	what := "the attribute is ignored, so the DENY rule matches more"
	if b.custom {
		what = "the attribute is ignored, so the CUSTOM rule matches more (more requests go to the authorizer)"
	} else if !b.deny {
		what = "the ALLOW rule is dropped"
	}
	b.problems = append(b.problems, fmt.Sprintf("%s: %s; %s", path, fmt.Sprintf(format, args...), what))
}

func (b *ruleBuilder) rule(path string, r *securityapi.Rule) *rbacv3.Policy {
	if r == nil {
		return nil
	}
	var perms []*rbacv3.Permission
	var principals []*rbacv3.Principal
	if len(r.To) > 0 {
		var ops []*rbacv3.Permission
		for i, to := range r.To {
			if p := b.operation(fmt.Sprintf("%s.to[%d].operation", path, i), to.GetOperation()); p != nil {
				ops = append(ops, p)
			}
		}
		perms = append(perms, orPerms(ops))
	}
	if len(r.From) > 0 {
		var srcs []*rbacv3.Principal
		for i, from := range r.From {
			if p := b.source(fmt.Sprintf("%s.from[%d].source", path, i), from.GetSource()); p != nil {
				srcs = append(srcs, p)
			}
		}
		principals = append(principals, orIDs(srcs))
	}
	for i, c := range r.When {
		cp := fmt.Sprintf("%s.when[%d]", path, i)
		perm, princ := b.condition(cp, c)
		if perm != nil {
			perms = append(perms, perm)
		}
		if princ != nil {
			principals = append(principals, princ)
		}
	}
	if b.dropped && !b.deny {
		return nil
	}
	return &rbacv3.Policy{Permissions: []*rbacv3.Permission{andPerms(perms)}, Principals: []*rbacv3.Principal{andIDs(principals)}}
}

func anyPerm() *rbacv3.Permission { return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}} }
func anyID() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}

func andPerms(ps []*rbacv3.Permission) *rbacv3.Permission {
	switch len(ps) {
	case 0:
		return anyPerm()
	case 1:
		return ps[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: ps}}}
}

func orPerms(ps []*rbacv3.Permission) *rbacv3.Permission {
	switch len(ps) {
	case 0:
		return anyPerm()
	case 1:
		return ps[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: ps}}}
}

func notPerm(p *rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: p}}
}

func andIDs(ps []*rbacv3.Principal) *rbacv3.Principal {
	switch len(ps) {
	case 0:
		return anyID()
	case 1:
		return ps[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ps}}}
}

func orIDs(ps []*rbacv3.Principal) *rbacv3.Principal {
	switch len(ps) {
	case 0:
		return anyID()
	case 1:
		return ps[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ps}}}
}

func notID(p *rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: p}}
}

// operation: every field set must match; each field matches any of its
// values.
func (b *ruleBuilder) operation(path string, op *securityapi.Operation) *rbacv3.Permission {
	if op == nil {
		return anyPerm()
	}
	var and []*rbacv3.Permission
	field := func(values []string, not bool, one func(string) *rbacv3.Permission) {
		if len(values) == 0 {
			return
		}
		var or []*rbacv3.Permission
		for _, v := range values {
			if p := one(v); p != nil {
				or = append(or, p)
			}
		}
		if len(or) == 0 {
			return
		}
		p := orPerms(or)
		if not {
			p = notPerm(p)
		}
		and = append(and, p)
	}
	host := func(v string) *rbacv3.Permission {
		m := wildcardMatcher(v, "")
		m.IgnoreCase = true
		return headerPerm(":authority", m)
	}
	method := func(v string) *rbacv3.Permission { return headerPerm(":method", exactMatcher(v)) }
	urlPath := func(v string) *rbacv3.Permission {
		if v == "*" {
			return anyPerm()
		}
		return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
			Rule: &matcherv3.PathMatcher_Path{Path: wildcardMatcher(v, "")}}}}
	}
	port := func(field string) func(string) *rbacv3.Permission {
		return func(v string) *rbacv3.Permission {
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil || n == 0 {
				b.bad(path+"."+field, "%q is not a port", v)
				return nil
			}
			return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: uint32(n)}}
		}
	}
	for _, f := range []struct {
		name    string
		values  []string
		not, l7 bool
		one     func(string) *rbacv3.Permission
	}{
		{"hosts", op.Hosts, false, true, host}, {"notHosts", op.NotHosts, true, true, host},
		{"ports", op.Ports, false, false, port("ports")}, {"notPorts", op.NotPorts, true, false, port("notPorts")},
		{"methods", op.Methods, false, true, method}, {"notMethods", op.NotMethods, true, true, method},
		{"paths", op.Paths, false, true, urlPath}, {"notPaths", op.NotPaths, true, true, urlPath},
	} {
		if f.l7 && len(f.values) > 0 && b.httpOnly(path+"."+f.name) {
			continue
		}
		field(f.values, f.not, f.one)
	}
	return andPerms(and)
}

func headerPerm(name string, m *matcherv3.StringMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: headerMatcher(name, m)}}
}

func headerMatcher(name string, m *matcherv3.StringMatcher) *routev3.HeaderMatcher {
	if m == nil {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}
	}
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: m}}
}

// wildcardMatcher implements Istio's value forms: "*" (any), "prefix*",
// "*suffix", exact; prefix is prepended to the value (e.g. "spiffe://").
func wildcardMatcher(v, prefix string) *matcherv3.StringMatcher {
	switch {
	case v == "*":
		return prefixMatcher(prefix)
	case strings.HasSuffix(v, "*"):
		return prefixMatcher(prefix + strings.TrimSuffix(v, "*"))
	case strings.HasPrefix(v, "*"):
		if prefix != "" {
			return regexMatcher("^" + regexp.QuoteMeta(prefix) + ".*" + regexp.QuoteMeta(strings.TrimPrefix(v, "*")) + "$")
		}
		return suffixMatcher(strings.TrimPrefix(v, "*"))
	}
	return exactMatcher(prefix + v)
}

func authenticated(m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{
		Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m}}}
}

// namespaceMatcher matches the SPIFFE IDs of a namespace (with Istio's
// wildcard forms).
func namespaceMatcher(ns string) *matcherv3.StringMatcher {
	if ns == "*" {
		return prefixMatcher("spiffe://")
	}
	q := strings.ReplaceAll(regexp.QuoteMeta(ns), `\*`, `[^/]*`)
	return regexMatcher("^spiffe://[^/]+/ns/" + q + "/sa/[^/]+$")
}

func (b *ruleBuilder) source(path string, s *securityapi.Source) *rbacv3.Principal {
	if s == nil {
		return anyID()
	}
	var and []*rbacv3.Principal
	field := func(values []string, not bool, one func(string) *rbacv3.Principal) {
		if len(values) == 0 {
			return
		}
		var or []*rbacv3.Principal
		for _, v := range values {
			if p := one(v); p != nil {
				or = append(or, p)
			}
		}
		if len(or) == 0 {
			return
		}
		p := orIDs(or)
		if not {
			p = notID(p)
		}
		and = append(and, p)
	}
	principal := func(v string) *rbacv3.Principal { return authenticated(wildcardMatcher(v, "spiffe://")) }
	namespace := func(v string) *rbacv3.Principal { return authenticated(namespaceMatcher(v)) }
	trustDomain := func(v string) *rbacv3.Principal { return authenticated(prefixMatcher("spiffe://" + v + "/")) }
	serviceAccount := func(field string) func(string) *rbacv3.Principal {
		return func(v string) *rbacv3.Principal {
			ns, sa, ok := strings.Cut(v, "/")
			if !ok {
				ns, sa = b.ns, v
			}
			if ns == "" || sa == "" || strings.Contains(sa, "/") || strings.Contains(v, "*") {
				b.bad(path+"."+field, "%q is not <namespace>/<service account> or <service account>", v)
				return nil
			}
			return authenticated(regexMatcher("^spiffe://[^/]+/ns/" + regexp.QuoteMeta(ns) + "/sa/" + regexp.QuoteMeta(sa) + "$"))
		}
	}
	field(s.Principals, false, principal)
	field(s.NotPrincipals, true, principal)
	field(s.Namespaces, false, namespace)
	field(s.NotNamespaces, true, namespace)
	field(s.ServiceAccounts, false, serviceAccount("serviceAccounts"))
	field(s.NotServiceAccounts, true, serviceAccount("notServiceAccounts"))
	field(s.TrustDomains, false, trustDomain)
	field(s.NotTrustDomains, true, trustDomain)
	for _, rp := range []struct {
		name   string
		values []string
		not    bool
	}{{"requestPrincipals", s.RequestPrincipals, false}, {"notRequestPrincipals", s.NotRequestPrincipals, true}} {
		if len(rp.values) > 0 && !b.httpOnly(path+"."+rp.name) {
			field(rp.values, rp.not, requestPrincipal)
		}
	}
	for _, u := range []struct {
		name        string
		values      []string
		not, remote bool
	}{
		{"ipBlocks", s.IpBlocks, false, false}, {"notIpBlocks", s.NotIpBlocks, true, false},
		{"remoteIpBlocks", s.RemoteIpBlocks, false, true}, {"notRemoteIpBlocks", s.NotRemoteIpBlocks, true, true},
	} {
		switch {
		case len(u.values) == 0:
		case !b.gateway:
			b.bad(path+"."+u.name, "not supported by waypoints")
		default:
			field(u.values, u.not, func(v string) *rbacv3.Principal { return b.ipBlock(path+"."+u.name, v, u.remote) })
		}
	}
	return andIDs(and)
}

// ipBlock is an address or CIDR of ipBlocks (the direct peer) or
// remoteIpBlocks (the original client).
func (b *ruleBuilder) ipBlock(path, v string, remote bool) *rbacv3.Principal {
	pfx, err := netip.ParsePrefix(v)
	if err != nil {
		a, aerr := netip.ParseAddr(v)
		if aerr != nil {
			b.bad(path, "%q is not an IP address or CIDR", v)
			return nil
		}
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	cidr := &corev3.CidrRange{AddressPrefix: pfx.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(pfx.Bits()))}
	if remote {
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr}}
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr}}
}

// condition translates a when condition into a permission or a principal.
func (b *ruleBuilder) condition(path string, c *securityapi.Condition) (*rbacv3.Permission, *rbacv3.Principal) {
	if c == nil {
		return nil, nil
	}
	key := c.Key
	switch {
	case strings.HasPrefix(key, "request.headers[") && strings.HasSuffix(key, "]"):
		if b.httpOnly(path + ".key") {
			return nil, nil
		}
		name := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(key, "request.headers["), "]"))
		if name == "" {
			b.bad(path+".key", "empty header name")
			return nil, nil
		}
		one := func(v string) *rbacv3.Permission {
			if v == "*" {
				return headerPerm(name, nil)
			}
			return headerPerm(name, wildcardMatcher(v, ""))
		}
		return permValues(c, one), nil
	case key == "destination.port":
		var bad bool
		one := func(v string) *rbacv3.Permission {
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil || n == 0 {
				bad = true
				return nil
			}
			return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: uint32(n)}}
		}
		p := permValues(c, one)
		if bad {
			b.bad(path, "a value is not a port")
			return nil, nil
		}
		return p, nil
	case key == "source.principal":
		return nil, idValues(c, func(v string) *rbacv3.Principal { return authenticated(wildcardMatcher(v, "spiffe://")) })
	case key == "source.namespace":
		return nil, idValues(c, func(v string) *rbacv3.Principal { return authenticated(namespaceMatcher(v)) })
	case strings.HasPrefix(key, "request.auth."):
		return nil, b.authCondition(path, c)
	}
	b.bad(path+".key", "%q is not supported by waypoints", key)
	return nil, nil
}

func permValues(c *securityapi.Condition, one func(string) *rbacv3.Permission) *rbacv3.Permission {
	var and []*rbacv3.Permission
	collect := func(vs []string) *rbacv3.Permission {
		var or []*rbacv3.Permission
		for _, v := range vs {
			if p := one(v); p != nil {
				or = append(or, p)
			}
		}
		return orPerms(or)
	}
	if len(c.Values) > 0 {
		and = append(and, collect(c.Values))
	}
	if len(c.NotValues) > 0 {
		and = append(and, notPerm(collect(c.NotValues)))
	}
	return andPerms(and)
}

func idValues(c *securityapi.Condition, one func(string) *rbacv3.Principal) *rbacv3.Principal {
	var and []*rbacv3.Principal
	collect := func(vs []string) *rbacv3.Principal {
		var or []*rbacv3.Principal
		for _, v := range vs {
			or = append(or, one(v))
		}
		return orIDs(or)
	}
	if len(c.Values) > 0 {
		and = append(and, collect(c.Values))
	}
	if len(c.NotValues) > 0 {
		and = append(and, notID(collect(c.NotValues)))
	}
	return andIDs(and)
}

// rbacRules are the enforced and the shadow (dry-run) rules of one RBAC
// filter; nil rules: none.
type rbacRules struct {
	rules, shadow *rbacv3.RBAC
}

func (r rbacRules) empty() bool { return r.rules == nil && r.shadow == nil }

// rbacConfigs merges the policies that apply to one chain into the
// rbac-deny and rbac-allow filter configs. An ALLOW policy without
// surviving rules still makes the allow rules present, so that they deny
// what nothing else allows; a DENY policy without rules denies nothing.
// istio.io/dry-run policies go to the shadow rules, as Istio renders them:
// evaluated, never enforced.
func rbacConfigs(pols []*authzPolicy, tcp bool) (deny, allow rbacRules) {
	for _, p := range sortedByKey(pols) {
		if p.custom != nil && !tcp || p.audit {
			continue // customAuthz, auditRules
		}
		target, action := &allow, rbacv3.RBAC_ALLOW
		if p.deny {
			target, action = &deny, rbacv3.RBAC_DENY
		}
		rules := &target.rules
		if p.dryRun {
			rules = &target.shadow
		}
		if *rules == nil {
			*rules = &rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{}}
		}
		src := p.policies
		if tcp {
			src = p.tcp
		}
		for name, pol := range src {
			(*rules).Policies[name] = pol
		}
	}
	if deny.rules != nil && len(deny.rules.Policies) == 0 {
		deny.rules = nil
	}
	if deny.shadow != nil && len(deny.shadow.Policies) == 0 {
		deny.shadow = nil
	}
	return deny, allow
}

// auditRules are the RBAC rules (action LOG) of the AUDIT policies in
// pols; nil when there are none.
func auditRules(pols []*authzPolicy) *rbacv3.RBAC {
	var r *rbacv3.RBAC
	for _, p := range sortedByKey(pols) {
		if !p.audit {
			continue
		}
		if r == nil {
			r = &rbacv3.RBAC{Action: rbacv3.RBAC_LOG, Policies: map[string]*rbacv3.Policy{}}
		}
		for name, rp := range p.policies {
			r.Policies[name] = rp
		}
	}
	return r
}
