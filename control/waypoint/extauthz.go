package waypoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	meshapi "istio.io/api/mesh/v1alpha1"
)

// An AuthorizationPolicy with action CUSTOM delegates the requests its rules
// match to an external authorizer, one of the mesh config's
// extensionProviders (envoyExtAuthzHttp or envoyExtAuthzGrpc), as Istio
// translates it: the rules become the shadow rules of an RBAC filter whose
// matched policy id (dynamic metadata <extAuthzShadowPrefix>
// shadow_effective_policy_id, prefixed extAuthzPolicyPrefix) enables the
// ext_authz filter that follows it. CUSTOM runs before DENY and ALLOW.
const (
	extAuthzFilter       = "envoy.filters.http.ext_authz"
	extAuthzRBACFilter   = "rbac-ext-authz"
	extAuthzShadowPrefix = "istio_ext_authz_"
	extAuthzPolicyPrefix = "istio-ext-authz-"
	// Istio's provider defaults.
	extAuthzDefaultTimeout = 600 * time.Second
	extAuthzDefaultStatus  = 403
)

// ParseExtensionProviders reads meshConfig.extensionProviders, a JSON list
// in Istio's format (field names as in Istio's MeshConfig). Every provider
// needs a unique name and one provider type; unknown fields are errors.
func ParseExtensionProviders(data []byte) ([]*meshapi.MeshConfig_ExtensionProvider, error) {
	if len(strings.TrimSpace(string(data))) == 0 {
		return nil, nil
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("extensionProviders: %w", err)
	}
	seen := map[string]bool{}
	out := make([]*meshapi.MeshConfig_ExtensionProvider, 0, len(raw))
	for i, r := range raw {
		p := &meshapi.MeshConfig_ExtensionProvider{}
		if err := protojson.Unmarshal(r, p); err != nil {
			return nil, fmt.Errorf("extensionProviders[%d]: %w", i, err)
		}
		switch {
		case p.Name == "":
			return nil, fmt.Errorf("extensionProviders[%d]: no name", i)
		case seen[p.Name]:
			return nil, fmt.Errorf("extensionProviders[%d]: name %q used twice", i, p.Name)
		case p.Provider == nil:
			return nil, fmt.Errorf("extensionProviders[%d] (%s): no provider type", i, p.Name)
		}
		seen[p.Name] = true
		out = append(out, p)
	}
	return out, nil
}

// extAuthz is one provider, resolved for the waypoints: the cluster of its
// service port and the ext_authz filter that calls it.
type extAuthz struct {
	provider string
	ref      clusterRef
	filter   *extauthzv3.ExtAuthz
	// ignored names the provider's settings the waypoint does not act on,
	// reported on every policy that uses the provider.
	ignored []string
}

// extAuthzProvider resolves the provider a CUSTOM policy names.
func (t *translator) extAuthzProvider(name string) (*extAuthz, error) {
	if name == "" {
		return nil, errors.New("spec.provider.name: empty")
	}
	idx := slices.IndexFunc(t.cfg.ExtensionProviders, func(p *meshapi.MeshConfig_ExtensionProvider) bool { return p.Name == name })
	if idx < 0 {
		return nil, fmt.Errorf("spec.provider.name: %q is not in meshConfig.extensionProviders", name)
	}
	switch p := t.cfg.ExtensionProviders[idx].Provider.(type) {
	case *meshapi.MeshConfig_ExtensionProvider_EnvoyExtAuthzHttp:
		return t.extAuthzHTTP(name, p.EnvoyExtAuthzHttp)
	case *meshapi.MeshConfig_ExtensionProvider_EnvoyExtAuthzGrpc:
		return t.extAuthzGRPC(name, p.EnvoyExtAuthzGrpc)
	}
	return nil, fmt.Errorf("extension provider %q is not envoyExtAuthzHttp or envoyExtAuthzGrpc", name)
}

// providerService resolves a provider's "[<namespace>/]<hostname>" and
// port to a mesh service port.
func (t *translator) providerService(service string, port uint32) (clusterRef, error) {
	host := service
	if i := strings.IndexByte(service, '/'); i >= 0 {
		host = service[i+1:]
	}
	svc := t.services[strings.TrimSuffix(host, ".")]
	if svc == nil {
		return clusterRef{}, fmt.Errorf("service %q is not a mesh service (want a fully qualified host name)", service)
	}
	if svc.port(port) == nil {
		return clusterRef{}, fmt.Errorf("service %q has no port %d", service, port)
	}
	return clusterRef{svc: svc, port: port}, nil
}

func (t *translator) extAuthzGRPC(name string, p *meshapi.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationGrpcProvider) (*extAuthz, error) {
	ref, err := t.providerService(p.Service, p.Port)
	if err != nil {
		return nil, fmt.Errorf("extension provider %q: %w", name, err)
	}
	f, err := extAuthzCommon(name, p.Timeout, p.FailOpen, p.StatusOnError, p.IncludeRequestBodyInCheck)
	if err != nil {
		return nil, err
	}
	f.TransportApiVersion = corev3.ApiVersion_V3
	var ignored []string
	if p.ClearRouteCache {
		ignored = append(ignored, "clearRouteCache (the route is chosen before the check)")
	}
	f.Services = &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
		TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
			ClusterName: ref.name(), Authority: ref.svc.fqdn}},
		Timeout: timeoutOr(p.Timeout),
	}}
	return &extAuthz{provider: name, ref: ref, filter: f, ignored: ignored}, nil
}

func (t *translator) extAuthzHTTP(name string, p *meshapi.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationHttpProvider) (*extAuthz, error) {
	ref, err := t.providerService(p.Service, p.Port)
	if err != nil {
		return nil, fmt.Errorf("extension provider %q: %w", name, err)
	}
	if p.PathPrefix != "" && !strings.HasPrefix(p.PathPrefix, "/") {
		return nil, fmt.Errorf("extension provider %q: pathPrefix %q must start with /", name, p.PathPrefix)
	}
	f, err := extAuthzCommon(name, p.Timeout, p.FailOpen, p.StatusOnError, p.IncludeRequestBodyInCheck)
	if err != nil {
		return nil, err
	}
	//lint:ignore SA1019 users still write the deprecated field; it is honoured as Istio does
	requestHeaders := append(slices.Clone(p.IncludeRequestHeadersInCheck), p.IncludeHeadersInCheck...)
	f.AllowedHeaders = headerMatchers(requestHeaders)
	req := &extauthzv3.AuthorizationRequest{}
	for _, k := range slices.Sorted(maps.Keys(p.IncludeAdditionalHeadersInCheck)) {
		req.HeadersToAdd = append(req.HeadersToAdd, &corev3.HeaderValue{Key: k, Value: p.IncludeAdditionalHeadersInCheck[k]})
	}
	f.Services = &extauthzv3.ExtAuthz_HttpService{HttpService: &extauthzv3.HttpService{
		ServerUri: &corev3.HttpUri{
			Uri:              "http://" + ref.svc.fqdn + ":" + strconv.Itoa(int(p.Port)),
			HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: ref.name()},
			Timeout:          timeoutOr(p.Timeout),
		},
		PathPrefix:           p.PathPrefix,
		AuthorizationRequest: req,
		AuthorizationResponse: &extauthzv3.AuthorizationResponse{
			AllowedUpstreamHeaders:        headerMatchers(p.HeadersToUpstreamOnAllow),
			AllowedClientHeaders:          headerMatchers(p.HeadersToDownstreamOnDeny),
			AllowedClientHeadersOnSuccess: headerMatchers(p.HeadersToDownstreamOnAllow),
		},
	}}
	var ignored []string
	if p.ClearRouteCache {
		ignored = append(ignored, "clearRouteCache (the route is chosen before the check)")
	}
	return &extAuthz{provider: name, ref: ref, filter: f, ignored: ignored}, nil
}

// extAuthzCommon is the filter settings both provider types share: failure
// handling and the metadata that enables the filter for requests the
// CUSTOM rules match.
func extAuthzCommon(name string, timeout *durationpb.Duration, failOpen bool, statusOnError string,
	body *meshapi.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationRequestBody) (*extauthzv3.ExtAuthz, error) {
	if timeout != nil && timeout.AsDuration() <= 0 {
		return nil, fmt.Errorf("extension provider %q: timeout %v must be positive", name, timeout.AsDuration())
	}
	status := extAuthzDefaultStatus
	if statusOnError != "" {
		n, err := strconv.Atoi(statusOnError)
		if err != nil || n < 200 || n > 599 {
			return nil, fmt.Errorf("extension provider %q: statusOnError %q is not an HTTP status", name, statusOnError)
		}
		status = n
	}
	f := &extauthzv3.ExtAuthz{
		FailureModeAllow: failOpen,
		StatusOnError:    &typev3.HttpStatus{Code: typev3.StatusCode(status)},
		FilterEnabledMetadata: &matcherv3.MetadataMatcher{
			Filter: "envoy.filters.http.rbac",
			Path:   []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: extAuthzShadowPrefix + "shadow_effective_policy_id"}}},
			Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: extAuthzPolicyPrefix}}}},
		},
	}
	if body != nil {
		f.WithRequestBody = &extauthzv3.BufferSettings{MaxRequestBytes: body.MaxRequestBytes, AllowPartialMessage: body.AllowPartialMessage, PackAsBytes: body.PackAsBytes}
	}
	return f, nil
}

func timeoutOr(d *durationpb.Duration) *durationpb.Duration {
	if d == nil {
		return durationpb.New(extAuthzDefaultTimeout)
	}
	return d
}

// headerMatchers translates Istio's header lists ("abc", "abc*", "*abc")
// into Envoy's case-insensitive string matchers; nil for none.
func headerMatchers(names []string) *matcherv3.ListStringMatcher {
	if len(names) == 0 {
		return nil
	}
	l := &matcherv3.ListStringMatcher{}
	for _, n := range names {
		m := &matcherv3.StringMatcher{IgnoreCase: true}
		switch {
		case n == "*":
			m.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: ""}
		case strings.HasSuffix(n, "*"):
			m.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: strings.TrimSuffix(n, "*")}
		case strings.HasPrefix(n, "*"):
			m.MatchPattern = &matcherv3.StringMatcher_Suffix{Suffix: strings.TrimPrefix(n, "*")}
		default:
			m.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: n}
		}
		l.Patterns = append(l.Patterns, m)
	}
	return l
}

// customChain is the CUSTOM part of an HTTP chain: the provider and the
// shadow rules that select the requests it checks.
type customChain struct {
	authz *extAuthz
	rules *rbacv3.RBAC
}

// customAuthz collects the CUSTOM policies of a chain. A chain has one
// provider, as Istio allows one per workload: policies naming another are
// returned in failClosed (the caller turns their rules into DENY rules) and
// reported.
func (t *translator) customAuthz(chain string, pols []*authzPolicy) (c *customChain, failClosed []*authzPolicy) {
	for _, p := range sortedByKey(pols) {
		if p.custom == nil {
			continue
		}
		if c == nil {
			c = &customChain{authz: p.custom, rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{}}}
		}
		if p.custom.provider != c.authz.provider {
			t.problem(kindAP, p.ns, p.name, "spec.provider.name: %q, but chain %s already uses provider %q (one per waypoint chain, as Istio allows one per workload); the policy's rules deny",
				p.custom.provider, chain, c.authz.provider)
			failClosed = append(failClosed, p)
			continue
		}
		for name, rp := range p.policies {
			c.rules.Policies[extAuthzPolicyPrefix+name] = rp
		}
	}
	if c != nil && len(c.rules.Policies) == 0 {
		c = nil // no rule survived: nothing is sent to the authorizer
	}
	return c, failClosed
}

// sortedByKey is pols sorted by "<ns>/<name>" without duplicates.
func sortedByKey(pols []*authzPolicy) []*authzPolicy {
	pols = slices.Clone(pols)
	slices.SortFunc(pols, func(a, b *authzPolicy) int { return strings.Compare(a.key, b.key) })
	return slices.CompactFunc(pols, func(a, b *authzPolicy) bool { return a == b })
}
