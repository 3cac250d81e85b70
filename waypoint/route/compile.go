package route

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"sort"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	statsapi "istio.io/api/envoy/extensions/stats"
)

// Options tunes a Pipeline; the zero value gives the defaults.
type Options struct {
	// Rand is the random source for weighted clusters, fault and mirror
	// percentages, runtime_fraction matches and backoff jitter (default
	// math/rand/v2.Uint64). Must be safe for concurrent use.
	Rand func() uint64
	// BodyBufferLimit bounds the request body kept for retries and mirrors
	// (default 1 MiB). Bodies beyond it are streamed but not retried, and
	// mirrors of them fail.
	BodyBufferLimit int
	// Logger receives debug logs (default slog.Default()).
	Logger *slog.Logger
	// JWKS caches the documents of jwt_authn's remote_jwks providers
	// (default: one cache for the process).
	JWKS *JWKSCache
}

// Pipeline is one compiled filter chain: HTTP filters (fault, cors,
// rbac-deny, rbac-allow, router) + its RouteConfiguration. It is immutable
// and safe for concurrent use; build a new one on every config change.
type Pipeline struct {
	name      string
	domains   domainIndex
	stripPort bool
	paths     pathNormalization
	filters   []filter
	rcReq     *headerOps
	rcResp    *headerOps
	rcFilter  map[string]perFilter
	mostSpec  bool // most_specific_header_mutations_wins
	up        Upstream
	rnd       func() uint64
	bodyLimit int
	log       *slog.Logger
	jwks      *JWKSCache
	upgrades  upgrades // the HCM's upgrade_configs (upgrade.go)
	proxy100  bool     // the HCM's proxy_100_continue
}

type vhost struct {
	name    string
	routes  []*route
	reqOps  *headerOps
	respOps *headerOps
	retry   *retryPolicy
	perFilt map[string]perFilter
	// rateLimits are the virtual host's rate_limits (ratelimit filter).
	rateLimits []rateLimit
}

type actionKind uint8

const (
	actionForward actionKind = iota
	actionRedirect
	actionDirect
)

type weightedCluster struct {
	name        string
	weight      uint64
	reqOps      *headerOps
	respOps     *headerOps
	hostRewrite string
}

type route struct {
	name  string
	vh    *vhost
	match routeMatch
	kind  actionKind

	// forward
	cluster       string
	weighted      []weightedCluster
	totalWeight   uint64
	prefixRewrite string
	hasPrefixRw   bool
	regexRewrite  *regexp.Regexp
	regexSub      string
	hostRewrite   string
	appendXFH     bool
	timeout       time.Duration // 0: none
	retry         *retryPolicy
	mirrors       []mirrorPolicy
	hash          []hashPolicy

	redirect *redirectAction

	directStatus int
	directBody   string

	reqOps   *headerOps
	respOps  *headerOps
	perFilt  map[string]perFilter
	upgrades upgrades // the route action's upgrade_configs
	// rateLimits are the route action's rate_limits (ratelimit filter);
	// the virtual host's apply too when there are none or with
	// includeVHRateLimits.
	rateLimits          []rateLimit
	includeVHRateLimits bool
}

// Compile builds the Pipeline of one HTTP filter chain. hcm gives the HTTP
// filters (nil: router only); rc is the chain's RouteConfiguration (nil:
// hcm's inline route_config). Invalid or unsupported config is an error
// naming the object, as Envoy would NACK it.
func Compile(hcm *hcmv3.HttpConnectionManager, rc *routev3.RouteConfiguration, up Upstream) (*Pipeline, error) {
	return CompileWithOptions(hcm, rc, up, Options{})
}

// CompileWithOptions is Compile with tuning and test hooks.
func CompileWithOptions(hcm *hcmv3.HttpConnectionManager, rc *routev3.RouteConfiguration, up Upstream, opts Options) (*Pipeline, error) {
	if up == nil {
		return nil, fmt.Errorf("route: Compile needs an Upstream")
	}
	if rc == nil {
		rc = hcm.GetRouteConfig()
	}
	if rc == nil {
		return nil, fmt.Errorf("route: no RouteConfiguration (rds %q not resolved?)", hcm.GetRds().GetRouteConfigName())
	}
	p := newPipeline(hcm, rc, up, opts)
	var err error
	if p.paths, err = compilePathNormalization(hcm); err != nil {
		return nil, fmt.Errorf("http connection manager: %w", err)
	}
	if err := p.compileRouteConfig(rc); err != nil {
		return nil, fmt.Errorf("route config %q: %w", rc.GetName(), err)
	}
	if err := p.compileFilters(hcm); err != nil {
		return nil, err
	}
	return p, nil
}

// newPipeline holds the settings of hcm and rc that need no compiling, and
// opts with their defaults.
func newPipeline(hcm *hcmv3.HttpConnectionManager, rc *routev3.RouteConfiguration, up Upstream, opts Options) *Pipeline {
	p := &Pipeline{
		name:      rc.GetName(),
		up:        up,
		rnd:       opts.Rand,
		bodyLimit: opts.BodyBufferLimit,
		log:       opts.Logger,
		stripPort: hcm.GetStripAnyHostPort() || rc.GetIgnorePortInHostMatching(),
		mostSpec:  rc.GetMostSpecificHeaderMutationsWins(),
	}
	if p.rnd == nil {
		p.rnd = rand.Uint64
	}
	if p.bodyLimit <= 0 {
		p.bodyLimit = 1 << 20
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	if p.jwks = opts.JWKS; p.jwks == nil {
		p.jwks = defaultJWKS
	}
	return p
}

// compileRouteConfig compiles rc's own header mutations and per-filter
// configs, and its virtual hosts indexed by domain.
func (p *Pipeline) compileRouteConfig(rc *routev3.RouteConfiguration) error {
	var err error
	if p.rcReq, p.rcResp, err = compileHeaderMutations(rc); err != nil {
		return err
	}
	if p.rcFilter, err = compilePerFilter(rc.GetTypedPerFilterConfig()); err != nil {
		return err
	}
	if len(rc.GetRequestMirrorPolicies()) > 0 {
		return fmt.Errorf("route-configuration level request_mirror_policies are not supported")
	}
	p.domains, err = compileDomains(rc.GetVirtualHosts())
	return err
}

// compileDomains compiles the virtual hosts and indexes them by domain
// (Envoy requires every domain to be in one virtual host only).
func compileDomains(vhosts []*routev3.VirtualHost) (domainIndex, error) {
	idx := domainIndex{exact: map[string]*vhost{}}
	seen := map[string]string{}
	for _, v := range vhosts {
		vh, err := compileVhost(v)
		if err != nil {
			return idx, err
		}
		for _, d := range v.GetDomains() {
			d = strings.ToLower(d)
			if prev, dup := seen[d]; dup {
				return idx, fmt.Errorf("domain %q is in virtual hosts %q and %q (Envoy requires unique domains)", d, prev, v.GetName())
			}
			seen[d] = v.GetName()
			switch {
			case d == "*":
				idx.any = vh
			case strings.HasPrefix(d, "*"):
				idx.suffixes = append(idx.suffixes, domainEntry{d[1:], vh})
			case strings.HasSuffix(d, "*"):
				idx.prefixes = append(idx.prefixes, domainEntry{d[:len(d)-1], vh})
			case d == "":
				return idx, fmt.Errorf("virtual host %q has an empty domain", v.GetName())
			default:
				idx.exact[d] = vh
			}
		}
	}
	sort.SliceStable(idx.suffixes, func(i, j int) bool { return len(idx.suffixes[i].s) > len(idx.suffixes[j].s) })
	sort.SliceStable(idx.prefixes, func(i, j int) bool { return len(idx.prefixes[i].s) > len(idx.prefixes[j].s) })
	return idx, nil
}

func (p *Pipeline) compileFilters(hcm *hcmv3.HttpConnectionManager) error {
	if hcm == nil {
		p.filters = []filter{&routerFilter{}}
		return nil
	}
	hasRouter := false
	for i, f := range hcm.GetHttpFilters() {
		if hasRouter {
			return fmt.Errorf("http filter %q comes after the router (the router must be last)", f.GetName())
		}
		if f.GetDisabled() {
			continue // Envoy: disabled filters run only when enabled per route; not supported -> off
		}
		tc := f.GetTypedConfig()
		if tc == nil {
			return fmt.Errorf("http filter %q (#%d): typed_config missing", f.GetName(), i)
		}
		msg, err := tc.UnmarshalNew()
		if err != nil {
			if f.GetIsOptional() {
				continue
			}
			return fmt.Errorf("http filter %q: %w", f.GetName(), err)
		}
		hf, ok, err := p.compileFilter(f.GetName(), msg)
		switch {
		case err != nil:
			return fmt.Errorf("http filter %q: %w", f.GetName(), err)
		case !ok && f.GetIsOptional():
			continue
		case !ok:
			return fmt.Errorf("http filter %q: unsupported type %s", f.GetName(), tc.GetTypeUrl())
		}
		if hf == nil {
			continue // configures the proxy around the pipeline (istio.stats)
		}
		_, hasRouter = hf.(*routerFilter)
		p.filters = append(p.filters, hf)
	}
	if !hasRouter {
		return fmt.Errorf("http filters have no envoy.filters.http.router")
	}
	// What the HCM decides for the router: upgrades, 100-continue.
	p.proxy100 = hcm.GetProxy_100Continue()
	var err error
	p.upgrades, err = compileUpgrades(hcm.GetUpgradeConfigs(), nil)
	return err
}

// compileFilter compiles the HTTP filter name of config msg; false: a
// config type the pipeline does not run.
func (p *Pipeline) compileFilter(name string, msg proto.Message) (filter, bool, error) {
	var (
		f   filter
		err error
	)
	switch c := msg.(type) {
	case *faultv3.HTTPFault:
		var fc *faultConfig
		if fc, err = compileFault(c); err == nil {
			f = &faultFilter{name: name, def: fc}
		}
	case *corsv3.Cors:
		f = &corsFilter{name: name}
	case *rbacv3.RBAC:
		f, err = compileRBAC(name, c)
	case *extauthzv3.ExtAuthz:
		f, err = compileExtAuthz(name, c, p.up)
	case *jwtauthnv3.JwtAuthentication:
		f, err = compileJWT(c, p.jwks)
	case *localratelimitv3.LocalRateLimit:
		var l *localRateLimit
		if l, err = compileLocalRateLimit(c, false); err == nil {
			f = &localRateLimitFilter{name: name, def: l}
		}
	case *ratelimitv3.RateLimit:
		f, err = compileGlobalRateLimit(name, c, p.up)
	case *routerv3.Router:
		f = &routerFilter{suppressEnvoyHeaders: c.GetSuppressEnvoyHeaders()}
	case *statsapi.PluginConfig:
		// Istio's stats filter: the proxy's telemetry reads it (its
		// metrics), nothing runs in the pipeline.
		return nil, true, nil
	default:
		return nil, false, nil
	}
	return f, true, err
}

func compileVhost(v *routev3.VirtualHost) (*vhost, error) {
	vh := &vhost{name: v.GetName()}
	var err error
	errf := func(format string, a ...any) error {
		return fmt.Errorf("virtual host %q: "+format, append([]any{v.GetName()}, a...)...)
	}
	if vh.reqOps, vh.respOps, err = compileHeaderMutations(v); err != nil {
		return nil, errf("%w", err)
	}
	if vh.perFilt, err = compilePerFilter(v.GetTypedPerFilterConfig()); err != nil {
		return nil, errf("%w", err)
	}
	if vh.rateLimits, err = compileRateLimits(v.GetRateLimits()); err != nil {
		return nil, errf("%w", err)
	}
	if rp := v.GetRetryPolicy(); rp != nil {
		if vh.retry, err = compileRetry(rp); err != nil {
			return nil, errf("retry_policy: %w", err)
		}
	}
	for i, r := range v.GetRoutes() {
		rt, err := compileRoute(r, vh)
		if err != nil {
			name := r.GetName()
			if name == "" {
				name = fmt.Sprintf("#%d", i)
			}
			return nil, errf("route %q: %w", name, err)
		}
		vh.routes = append(vh.routes, rt)
	}
	return vh, nil
}

func compileRoute(r *routev3.Route, vh *vhost) (*route, error) {
	rt := &route{name: r.GetName(), vh: vh}
	var err error
	if rt.match, err = compileRouteMatch(r.GetMatch()); err != nil {
		return nil, err
	}
	if rt.reqOps, rt.respOps, err = compileHeaderMutations(r); err != nil {
		return nil, err
	}
	if rt.perFilt, err = compilePerFilter(r.GetTypedPerFilterConfig()); err != nil {
		return nil, err
	}
	switch a := r.Action.(type) {
	case *routev3.Route_Route:
		rt.kind = actionForward
		if err = compileRouteAction(rt, a.Route, vh); err == nil {
			rt.upgrades, err = compileUpgrades(nil, a.Route.GetUpgradeConfigs())
		}
	case *routev3.Route_Redirect:
		rt.kind = actionRedirect
		rt.redirect, err = compileRedirect(a.Redirect, &rt.match)
	case *routev3.Route_DirectResponse:
		rt.kind = actionDirect
		rt.directStatus = int(a.DirectResponse.GetStatus())
		if rt.directStatus < 200 || rt.directStatus > 599 {
			return nil, fmt.Errorf("direct_response status %d out of range", rt.directStatus)
		}
		if b := a.DirectResponse.GetBody(); b != nil {
			switch {
			case b.GetInlineString() != "":
				rt.directBody = b.GetInlineString()
			case len(b.GetInlineBytes()) > 0:
				rt.directBody = string(b.GetInlineBytes())
			case b.GetFilename() != "" || b.GetEnvironmentVariable() != "":
				return nil, fmt.Errorf("direct_response body: only inline bodies are supported")
			}
		}
	default:
		err = fmt.Errorf("unsupported route action %T", r.Action)
	}
	if err != nil {
		return nil, err
	}
	return rt, nil
}

func compileRouteAction(rt *route, a *routev3.RouteAction, vh *vhost) error {
	if err := compileClusterSpecifier(rt, a); err != nil {
		return err
	}
	if err := compileRewrites(rt, a); err != nil {
		return err
	}
	// Envoy: unset timeout = 15 s; 0 disables it.
	rt.timeout = 15 * time.Second
	if t := a.GetTimeout(); t != nil {
		rt.timeout = t.AsDuration()
	}
	var err error
	if rp := a.GetRetryPolicy(); rp != nil {
		if rt.retry, err = compileRetry(rp); err != nil {
			return fmt.Errorf("retry_policy: %w", err)
		}
	} else {
		rt.retry = vh.retry
	}
	if rt.mirrors, err = compileMirrors(a.GetRequestMirrorPolicies()); err != nil {
		return err
	}
	for _, h := range a.GetHashPolicy() {
		hp, err := compileHashPolicy(h)
		if err != nil {
			return fmt.Errorf("hash_policy: %w", err)
		}
		rt.hash = append(rt.hash, hp)
	}
	if rt.rateLimits, err = compileRateLimits(a.GetRateLimits()); err != nil {
		return err
	}
	//lint:ignore SA1019 Envoy still honours the deprecated field; so does the waypoint
	rt.includeVHRateLimits = a.GetIncludeVhRateLimits().GetValue()
	return nil
}

// compileClusterSpecifier sets where the route forwards: one cluster, or
// weighted clusters with their own header mutations and host rewrite.
func compileClusterSpecifier(rt *route, a *routev3.RouteAction) error {
	switch c := a.ClusterSpecifier.(type) {
	case *routev3.RouteAction_Cluster:
		if c.Cluster == "" {
			return fmt.Errorf("route action has an empty cluster")
		}
		rt.cluster = c.Cluster
	case *routev3.RouteAction_WeightedClusters:
		for _, wc := range c.WeightedClusters.GetClusters() {
			if wc.GetName() == "" {
				return fmt.Errorf("weighted cluster without name (cluster_header is not supported)")
			}
			w := weightedCluster{name: wc.GetName(), weight: uint64(wc.GetWeight().GetValue()), hostRewrite: wc.GetHostRewriteLiteral()}
			var err error
			if w.reqOps, w.respOps, err = compileHeaderMutations(wc); err != nil {
				return fmt.Errorf("weighted cluster %q %w", wc.GetName(), err)
			}
			rt.totalWeight += w.weight
			rt.weighted = append(rt.weighted, w)
		}
		if rt.totalWeight == 0 {
			return fmt.Errorf("weighted_clusters: total weight is 0")
		}
	default:
		return fmt.Errorf("unsupported cluster specifier %T", a.ClusterSpecifier)
	}
	return nil
}

// compileRewrites sets how the route rewrites the request: its path
// (prefix_rewrite or regex_rewrite), host and x-forwarded-host.
func compileRewrites(rt *route, a *routev3.RouteAction) error {
	rt.prefixRewrite = a.GetPrefixRewrite()
	rt.hasPrefixRw = a.GetPrefixRewrite() != ""
	if rr := a.GetRegexRewrite(); rr != nil {
		if rt.hasPrefixRw {
			return fmt.Errorf("only one of prefix_rewrite and regex_rewrite may be set")
		}
		re, err := regexp.Compile(rr.GetPattern().GetRegex())
		if err != nil {
			return fmt.Errorf("regex_rewrite: invalid RE2 regex %q: %w", rr.GetPattern().GetRegex(), err)
		}
		rt.regexRewrite, rt.regexSub = re, re2Substitution(rr.GetSubstitution())
	}
	switch h := a.HostRewriteSpecifier.(type) {
	case nil:
	case *routev3.RouteAction_HostRewriteLiteral:
		rt.hostRewrite = h.HostRewriteLiteral
	default:
		return fmt.Errorf("unsupported host rewrite %T", h)
	}
	rt.appendXFH = a.GetAppendXForwardedHost()
	return nil
}

// compileMirrors compiles request_mirror_policies (cluster names only).
func compileMirrors(policies []*routev3.RouteAction_RequestMirrorPolicy) ([]mirrorPolicy, error) {
	var mirrors []mirrorPolicy
	for _, m := range policies {
		if m.GetCluster() == "" {
			return nil, fmt.Errorf("request_mirror_policies: cluster missing (cluster_header is not supported)")
		}
		mirrors = append(mirrors, mirrorPolicy{
			cluster:     m.GetCluster(),
			frac:        compileFraction(m.GetRuntimeFraction().GetDefaultValue(), 100),
			noSuffix:    m.GetDisableShadowHostSuffixAppend(),
			hostRewrite: m.GetHostRewriteLiteral(),
		})
	}
	return mirrors, nil
}

// re2Substitution converts an RE2 substitution (\1 references, as Envoy's
// regex_rewrite uses) into Go's Expand syntax (${1}).
func re2Substitution(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
			b.WriteString("${")
			b.WriteByte(s[i+1])
			b.WriteByte('}')
			i++
		case c == '\\' && i+1 < len(s) && s[i+1] == '\\':
			b.WriteByte('\\')
			i++
		case c == '$':
			b.WriteString("$$")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// perFilter is a compiled typed_per_filter_config entry.
type perFilter struct {
	disabled       bool
	fault          *faultConfig
	cors           *corsPolicy
	localRateLimit *localRateLimit
}

func compilePerFilter(m map[string]*anypb.Any) (map[string]perFilter, error) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make(map[string]perFilter, len(m))
	for name, a := range m {
		pf, ok, err := compileOnePerFilter(a)
		if err != nil {
			return nil, fmt.Errorf("typed_per_filter_config[%q]: %w", name, err)
		}
		if ok {
			out[name] = pf
		}
	}
	return out, nil
}

func compileOnePerFilter(a *anypb.Any) (perFilter, bool, error) {
	msg, err := a.UnmarshalNew()
	if err != nil {
		// Unknown config types belong to filters this pipeline does not
		// run; they have no effect.
		return perFilter{}, false, nil
	}
	return compilePerFilterMsg(msg)
}

func compilePerFilterMsg(msg proto.Message) (perFilter, bool, error) {
	switch c := msg.(type) {
	case *routev3.FilterConfig:
		if c.GetDisabled() {
			return perFilter{disabled: true}, true, nil
		}
		if c.GetConfig() == nil {
			return perFilter{}, false, nil
		}
		return compileOnePerFilter(c.GetConfig())
	case *faultv3.HTTPFault:
		fc, err := compileFault(c)
		if err != nil {
			return perFilter{}, false, err
		}
		return perFilter{fault: fc}, true, nil
	case *corsv3.CorsPolicy:
		cp, err := compileCors(c)
		if err != nil {
			return perFilter{}, false, err
		}
		return perFilter{cors: cp}, true, nil
	case *localratelimitv3.LocalRateLimit:
		l, err := compileLocalRateLimit(c, true)
		if err != nil {
			return perFilter{}, false, err
		}
		return perFilter{localRateLimit: l}, true, nil
	case *ratelimitv3.RateLimitPerRoute:
		// Not silently dropped: its vh_rate_limits and rate_limits would
		// change which descriptors are sent.
		return perFilter{}, false, errors.New("envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute is not supported")
	}
	return perFilter{}, false, nil
}
