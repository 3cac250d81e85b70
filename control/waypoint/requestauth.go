package waypoint

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	securityapi "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/weft-mesh/weft/pkg/mesh"
)

const kindRA = "RequestAuthentication"

// JWT settings of the rendered jwt_authn providers.
const (
	// jwksCacheDuration is how long a waypoint keeps a fetched JWKS:
	// Istio's default JWKS refresh interval.
	jwksCacheDuration = 20 * time.Minute
	// jwksTimeout bounds a JWKS fetch when the rule sets no timeout
	// (Istio's default).
	jwksTimeout = 5 * time.Second
	// emptyJWKS replaces a JWKS that cannot be used: every token of the
	// issuer fails (401), as Istio does with its fake JWKS.
	emptyJWKS = `{"keys":[]}`
)

// jwtPolicy is a RequestAuthentication's rules, translated for the
// waypoints it targets.
type jwtPolicy struct {
	key       string // "<ns>/<name>", for ordering
	providers []*jwtauthnv3.JwtProvider
}

// indexRequestAuthentications translates the RequestAuthentications bound
// to a waypoint (targetRefs kind Gateway) or a Service, as Istio applies
// them in ambient mode. Others (selector, namespace-wide, mesh-wide, or
// targetRefs to an ingress Gateway) configure gateways by workload
// (gatewayAuthz); reportUnusedRequestAuthentications reports those that
// configure none.
func (t *translator) indexRequestAuthentications(ras []*securityv1.RequestAuthentication) {
	t.requestAuthns = sortedPolicies(ras)
	for _, ra := range t.requestAuthns {
		spec := &ra.Spec
		refs := targetRefs(spec.TargetRefs, spec.TargetRef)
		p := func(format string, args ...any) { t.problem(kindRA, ra.Namespace, ra.Name, format, args...) }
		switch {
		case len(refs) == 0:
			continue
		case spec.Selector != nil:
			p("spec.selector: cannot be combined with targetRefs; ignored")
			continue
		}
		gateways, services := t.policyTargets(ra.Namespace, refs, p)
		if len(gateways)+len(services) == 0 {
			continue
		}
		pol := t.jwtPolicyOf(ra)
		for _, g := range gateways {
			t.gatewayJWT[g] = append(t.gatewayJWT[g], pol)
		}
		for _, fqdn := range services {
			t.serviceJWT[fqdn] = append(t.serviceJWT[fqdn], pol)
		}
	}
}

// jwtPolicyOf translates ra's rules, once.
func (t *translator) jwtPolicyOf(ra *securityv1.RequestAuthentication) *jwtPolicy {
	if pol, ok := t.jwtPolicies[ra]; ok {
		return pol
	}
	p := func(format string, args ...any) { t.problem(kindRA, ra.Namespace, ra.Name, format, args...) }
	pol := &jwtPolicy{key: ra.Namespace + "/" + ra.Name}
	for i, r := range ra.Spec.JwtRules {
		if prov := t.jwtProvider(fmt.Sprintf("spec.jwtRules[%d]", i), r, p); prov != nil {
			pol.providers = append(pol.providers, prov)
		}
	}
	t.jwtPolicies[ra] = pol
	return pol
}

// jwtProvider translates one JWTRule as Istio's pilot does (a provider
// per rule, the payload in metadata under the issuer). A rule whose keys
// cannot be used keeps its issuer with no key: its tokens are refused.
func (t *translator) jwtProvider(path string, r *securityapi.JWTRule, p func(string, ...any)) *jwtauthnv3.JwtProvider {
	if r == nil {
		return nil
	}
	if r.Issuer == "" {
		p("%s.issuer: required; rule ignored", path)
		return nil
	}
	prov := &jwtauthnv3.JwtProvider{
		Issuer: r.Issuer, Audiences: r.Audiences, Forward: r.ForwardOriginalToken,
		ForwardPayloadHeader: r.OutputPayloadToHeader, PayloadInMetadata: r.Issuer,
		FromParams: r.FromParams, FromCookies: r.FromCookies,
	}
	for _, h := range r.FromHeaders {
		prov.FromHeaders = append(prov.FromHeaders, &jwtauthnv3.JwtHeader{Name: h.GetName(), ValuePrefix: h.GetPrefix()})
	}
	if len(r.OutputClaimToHeaders) > 0 {
		p("%s.outputClaimToHeaders: not supported by waypoints; ignored", path)
	}
	if len(r.SpaceDelimitedClaims) > 0 {
		p("%s.spaceDelimitedClaims: not supported by waypoints; those claims are matched as one string", path)
	}
	local := func(jwks string) {
		prov.JwksSourceSpecifier = &jwtauthnv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
			Specifier: &corev3.DataSource_InlineString{InlineString: jwks}}}
	}
	switch {
	case r.Jwks != "":
		var doc struct {
			Keys []json.RawMessage `json:"keys"`
		}
		if err := json.Unmarshal([]byte(r.Jwks), &doc); err != nil || len(doc.Keys) == 0 {
			p("%s.jwks: not a JWKS with keys; tokens of issuer %q are refused", path, r.Issuer)
			local(emptyJWKS)
			break
		}
		local(r.Jwks)
	case r.JwksUri != "":
		cluster, err := jwksCluster(r.JwksUri)
		if err != nil {
			p("%s.jwksUri: %v; tokens of issuer %q are refused", path, err, r.Issuer)
			local(emptyJWKS)
			break
		}
		timeout := jwksTimeout
		if r.Timeout != nil {
			timeout = r.Timeout.AsDuration()
		}
		prov.JwksSourceSpecifier = &jwtauthnv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtauthnv3.RemoteJwks{
			HttpUri: &corev3.HttpUri{Uri: r.JwksUri, HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: cluster},
				Timeout: durationpb.New(timeout)},
			CacheDuration: durationpb.New(jwksCacheDuration)}}
	default:
		p("%s: neither jwks nor jwksUri (OpenID discovery of the issuer is not supported); tokens of issuer %q are refused", path, r.Issuer)
		local(emptyJWKS)
	}
	return prov
}

// jwksCluster is the cluster name Istio gives a jwksUri's host (the
// waypoint fetches the URI itself).
func jwksCluster(uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return "", fmt.Errorf("%q is not an http or https URL", uri)
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", fmt.Errorf("%q: bad port", uri)
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); ip != nil {
		host = ip.String()
	}
	return mesh.OutboundCluster(host, uint32(n), ""), nil
}

// jwtAuthn is the jwt_authn filter config of a chain with the policies
// pols, nil when none: Istio's requirement, which lets a request without
// a token through and refuses one with an invalid token. One provider:
// any of {it, allow_missing}; several: any of {each, all of {each or
// allow_missing}}.
func jwtAuthn(pols []*jwtPolicy) *jwtauthnv3.JwtAuthentication {
	slices.SortFunc(pols, func(a, b *jwtPolicy) int { return strings.Compare(a.key, b.key) })
	pols = slices.CompactFunc(pols, func(a, b *jwtPolicy) bool { return a == b })
	c := &jwtauthnv3.JwtAuthentication{Providers: map[string]*jwtauthnv3.JwtProvider{}, BypassCorsPreflight: true}
	var inner, outer []*jwtauthnv3.JwtRequirement
	for _, pol := range pols {
		for _, prov := range pol.providers {
			name := "origins-" + strconv.Itoa(len(c.Providers))
			c.Providers[name] = prov
			req := &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_ProviderName{ProviderName: name}}
			outer = append(outer, req)
			inner = append(inner, &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_RequiresAny{
				RequiresAny: &jwtauthnv3.JwtRequirementOrList{Requirements: []*jwtauthnv3.JwtRequirement{req,
					{RequiresType: &jwtauthnv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}}}}}})
		}
	}
	var req *jwtauthnv3.JwtRequirement
	switch len(inner) {
	case 0:
		return nil
	case 1:
		req = inner[0]
	default:
		outer = append(outer, &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_RequiresAll{
			RequiresAll: &jwtauthnv3.JwtRequirementAndList{Requirements: inner}}})
		req = &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_RequiresAny{
			RequiresAny: &jwtauthnv3.JwtRequirementOrList{Requirements: outer}}}
	}
	c.Rules = []*jwtauthnv3.RequirementRule{{Match: prefixRouteMatch("/"),
		RequirementType: &jwtauthnv3.RequirementRule_Requires{Requires: req}}}
	return c
}

// requestPrincipal matches the request's JWT principal "<iss>/<sub>",
// with Istio's forms ("*": any principal, "prefix*", "*suffix").
func requestPrincipal(v string) *rbacv3.Principal {
	return metadataID([]string{mesh.AuthnPrincipal}, stringValue(jwtValueMatcher(v)))
}

// jwtValueMatcher is Istio's string matcher for request.auth values: "*"
// matches any non-empty value.
func jwtValueMatcher(v string) *matcherv3.StringMatcher {
	if v == "*" {
		return regexMatcher(".+")
	}
	return wildcardMatcher(v, "")
}

func stringValue(m *matcherv3.StringMatcher) *matcherv3.ValueMatcher {
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: m}}
}

// listValue matches a list with an element matching m (the waypoint
// keeps string claims as lists of one string, as Istio's authn filter).
func listValue(m *matcherv3.StringMatcher) *matcherv3.ValueMatcher {
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
		MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: stringValue(m)}}}}
}

// metadataID matches the istio_authn metadata at path.
func metadataID(path []string, v *matcherv3.ValueMatcher) *rbacv3.Principal {
	mm := &matcherv3.MetadataMatcher{Filter: mesh.AuthnFilter, Value: v}
	for _, k := range path {
		mm.Path = append(mm.Path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
	}
	// Istio renders principal.metadata (sourced_metadata is its newer
	// spelling, with the same dynamic-metadata source by default).
	//lint:ignore SA1019 as Istio renders it
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: mm}}
}

// authCondition translates a request.auth.* condition.
func (b *ruleBuilder) authCondition(path string, c *securityapi.Condition) *rbacv3.Principal {
	if b.httpOnly(path + ".key") {
		return nil
	}
	var one func(string) *rbacv3.Principal
	switch key := c.Key; key {
	case mesh.AuthnPrincipal, mesh.AuthnPresenter:
		one = func(v string) *rbacv3.Principal { return metadataID([]string{key}, stringValue(jwtValueMatcher(v))) }
	case mesh.AuthnAudiences:
		one = func(v string) *rbacv3.Principal { return metadataID([]string{key}, listValue(jwtValueMatcher(v))) }
	default:
		claims, ok := ParseClaimKey(key)
		if !ok {
			b.bad(path+".key", "%q is not supported by waypoints", key)
			return nil
		}
		p := append([]string{mesh.AuthnClaims}, claims...)
		one = func(v string) *rbacv3.Principal { return metadataID(p, listValue(jwtValueMatcher(v))) }
	}
	return idValues(c, one)
}

// ParseClaimKey parses Istio's request.auth.claims[<name>] condition key,
// with nested claims as request.auth.claims[<name>][<name>]...: the claim
// path, false when key is not of that form (a name is non-empty, without
// brackets).
func ParseClaimKey(key string) ([]string, bool) {
	rest, ok := strings.CutPrefix(key, mesh.AuthnClaims)
	if !ok || rest == "" {
		return nil, false
	}
	var path []string
	for rest != "" {
		if rest[0] != '[' {
			return nil, false
		}
		end := strings.IndexByte(rest, ']')
		if end <= 1 {
			return nil, false
		}
		name := rest[1:end]
		if strings.ContainsAny(name, "[") {
			return nil, false
		}
		path = append(path, name)
		rest = rest[end+1:]
	}
	return path, true
}
