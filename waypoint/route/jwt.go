package route

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	jose "github.com/go-jose/go-jose/v4"
)

// jwtFilter is envoy.filters.http.jwt_authn: it verifies the JWTs the
// requirement of the first matching rule asks for, and publishes the
// verified token as the request's authentication (x.authn), which RBAC
// reads as Istio's istio_authn metadata. A failed requirement is a 401
// with Envoy's status message as body ("Jwt verification fails", "Jwt is
// expired", "Jwt issuer is not configured", ...).
type jwtFilter struct {
	rules      []jwtRule
	providers  []*jwtProvider // all of them, for allow_missing
	bypassCORS bool
}

type jwtRule struct {
	prefix string // the rule's path prefix ("" with exact set)
	exact  string
	req    *jwtReq
}

type jwtReqKind uint8

const (
	reqProvider jwtReqKind = iota
	reqAny
	reqAll
	reqAllowMissing
	reqAllowMissingOrFailed
)

// jwtReq is a compiled JwtRequirement.
type jwtReq struct {
	kind     jwtReqKind
	provider *jwtProvider
	kids     []*jwtReq
}

// jwtProvider is one JwtProvider.
type jwtProvider struct {
	name          string
	issuer        string
	audiences     []string // empty: any
	headers       []jwtHeaderLoc
	params        []string
	cookies       []string
	forward       bool
	payloadHeader string
	skew          time.Duration
	local         *jose.JSONWebKeySet // inline jwks
	remote        *remoteJWKS         // jwks_uri
	jwks          *JWKSCache
}

type jwtHeaderLoc struct{ name, prefix string }

type remoteJWKS struct {
	uri     string
	timeout time.Duration
	ttl     time.Duration
}

// jwtStatus is Envoy's jwt_verify status of a failed requirement.
type jwtStatus string

const (
	jwtOK              jwtStatus = ""
	jwtMissed          jwtStatus = "Jwt is missing"
	jwtBadFormat       jwtStatus = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
	jwtUnknownIssuer   jwtStatus = "Jwt issuer is not configured"
	jwtExpired         jwtStatus = "Jwt is expired"
	jwtNotYetValid     jwtStatus = "Jwt not yet valid"
	jwtAudience        jwtStatus = "Audiences in Jwt are not allowed"
	jwtVerifyFail      jwtStatus = "Jwt verification fails"
	jwksFetchFail      jwtStatus = "Jwks remote fetch is failed"
	jwksNoValidKeys    jwtStatus = "Jwks doesn't have key to match kid or alg from Jwt"
	jwtDefaultSkew               = 60 * time.Second
	jwksDefaultTTL               = 5 * time.Minute // Envoy's default cache_duration
	jwksDefaultTimeout           = 5 * time.Second
)

// jwtAlgs are the signature algorithms accepted: asymmetric only, so
// neither "none" nor an HMAC keyed with a public key can pass.
var jwtAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

func compileJWT(c *jwtauthnv3.JwtAuthentication, cache *JWKSCache) (*jwtFilter, error) {
	if c.GetFilterStateRules() != nil || len(c.GetRequirementMap()) > 0 {
		return nil, fmt.Errorf("jwt_authn: filter_state_rules and requirement_map are not supported")
	}
	f := &jwtFilter{bypassCORS: c.GetBypassCorsPreflight()}
	byName := map[string]*jwtProvider{}
	names := slices.Sorted(maps.Keys(c.GetProviders()))
	for _, name := range names {
		p, err := compileJWTProvider(name, c.GetProviders()[name], cache)
		if err != nil {
			return nil, fmt.Errorf("jwt_authn provider %q: %w", name, err)
		}
		byName[name] = p
		f.providers = append(f.providers, p)
	}
	for i, r := range c.GetRules() {
		m := r.GetMatch()
		rule := jwtRule{}
		switch ps := m.GetPathSpecifier().(type) {
		case nil:
		default:
			if m.GetPrefix() == "" && m.GetPath() == "" || len(m.GetHeaders()) > 0 || len(m.GetQueryParameters()) > 0 || m.GetCaseSensitive() != nil {
				return nil, fmt.Errorf("jwt_authn rule %d: only prefix and path matches are supported (%T)", i, ps)
			}
			rule.prefix, rule.exact = m.GetPrefix(), m.GetPath()
		}
		if r.GetRequirementName() != "" {
			return nil, fmt.Errorf("jwt_authn rule %d: requirement_name is not supported", i)
		}
		if r.GetRequires() != nil {
			req, err := compileJWTReq(r.GetRequires(), byName)
			if err != nil {
				return nil, fmt.Errorf("jwt_authn rule %d: %w", i, err)
			}
			rule.req = req
		}
		f.rules = append(f.rules, rule)
	}
	return f, nil
}

func compileJWTReq(r *jwtauthnv3.JwtRequirement, byName map[string]*jwtProvider) (*jwtReq, error) {
	kids := func(rs []*jwtauthnv3.JwtRequirement, kind jwtReqKind) (*jwtReq, error) {
		out := &jwtReq{kind: kind}
		for _, k := range rs {
			c, err := compileJWTReq(k, byName)
			if err != nil {
				return nil, err
			}
			out.kids = append(out.kids, c)
		}
		return out, nil
	}
	switch t := r.GetRequiresType().(type) {
	case *jwtauthnv3.JwtRequirement_ProviderName:
		p := byName[t.ProviderName]
		if p == nil {
			return nil, fmt.Errorf("requirement names unknown provider %q", t.ProviderName)
		}
		return &jwtReq{kind: reqProvider, provider: p}, nil
	case *jwtauthnv3.JwtRequirement_RequiresAny:
		return kids(t.RequiresAny.GetRequirements(), reqAny)
	case *jwtauthnv3.JwtRequirement_RequiresAll:
		return kids(t.RequiresAll.GetRequirements(), reqAll)
	case *jwtauthnv3.JwtRequirement_AllowMissing:
		return &jwtReq{kind: reqAllowMissing}, nil
	case *jwtauthnv3.JwtRequirement_AllowMissingOrFailed:
		return &jwtReq{kind: reqAllowMissingOrFailed}, nil
	}
	return nil, fmt.Errorf("requirement %T is not supported", r.GetRequiresType())
}

func compileJWTProvider(name string, c *jwtauthnv3.JwtProvider, cache *JWKSCache) (*jwtProvider, error) {
	if c.GetSubjects() != nil || c.GetRequireExpiration() || c.GetMaxLifetime() != nil || len(c.GetClaimToHeaders()) > 0 {
		return nil, fmt.Errorf("subjects, require_expiration, max_lifetime and claim_to_headers are not supported")
	}
	p := &jwtProvider{name: name, issuer: c.GetIssuer(), audiences: c.GetAudiences(), params: c.GetFromParams(),
		cookies: c.GetFromCookies(), forward: c.GetForward(), payloadHeader: c.GetForwardPayloadHeader(),
		skew: time.Duration(c.GetClockSkewSeconds()) * time.Second, jwks: cache}
	if p.skew == 0 {
		p.skew = jwtDefaultSkew
	}
	for _, h := range c.GetFromHeaders() {
		p.headers = append(p.headers, jwtHeaderLoc{name: http.CanonicalHeaderKey(h.GetName()), prefix: h.GetValuePrefix()})
	}
	if len(p.headers) == 0 && len(p.params) == 0 && len(p.cookies) == 0 {
		// Envoy's defaults.
		p.headers = []jwtHeaderLoc{{name: "Authorization", prefix: "Bearer "}}
		p.params = []string{"access_token"}
	}
	switch {
	case c.GetLocalJwks() != nil:
		ks, err := parseJWKS([]byte(c.GetLocalJwks().GetInlineString()))
		if err != nil {
			return nil, fmt.Errorf("local_jwks: %w", err)
		}
		p.local = ks
	case c.GetRemoteJwks() != nil:
		rj := c.GetRemoteJwks()
		if rj.GetHttpUri().GetUri() == "" {
			return nil, fmt.Errorf("remote_jwks: http_uri.uri missing")
		}
		p.remote = &remoteJWKS{uri: rj.GetHttpUri().GetUri(), timeout: rj.GetHttpUri().GetTimeout().AsDuration(), ttl: rj.GetCacheDuration().AsDuration()}
		if p.remote.timeout <= 0 {
			p.remote.timeout = jwksDefaultTimeout
		}
		if p.remote.ttl <= 0 {
			p.remote.ttl = jwksDefaultTTL
		}
	default:
		return nil, fmt.Errorf("neither local_jwks nor remote_jwks")
	}
	return p, nil
}

// parseJWKS parses a JWKS document, dropping keys that cannot verify
// (symmetric keys, private keys keep only their public half).
func parseJWKS(b []byte) (*jose.JSONWebKeySet, error) {
	var ks jose.JSONWebKeySet
	if err := json.Unmarshal(b, &ks); err != nil {
		return nil, err
	}
	keys := ks.Keys[:0]
	for _, k := range ks.Keys {
		if k.IsPublic() {
			keys = append(keys, k)
		} else if pub := k.Public(); pub.Valid() {
			keys = append(keys, pub)
		}
	}
	ks.Keys = keys
	return &ks, nil
}

func (f *jwtFilter) encode(*exchange, http.Header) {}

func (f *jwtFilter) decode(x *exchange) bool {
	if f.bypassCORS && x.r.Method == http.MethodOptions && x.r.Header.Get("Origin") != "" &&
		x.r.Header.Get("Access-Control-Request-Method") != "" {
		return true
	}
	req := f.requirement(x.v.pathOnly)
	if req == nil {
		return true
	}
	v := &jwtVerification{f: f, x: x}
	if st := v.eval(req); st != jwtOK {
		x.jwtReject(st)
		return false
	}
	v.publish()
	return true
}

func (f *jwtFilter) requirement(path string) *jwtReq {
	for i := range f.rules {
		r := &f.rules[i]
		if (r.exact != "" && path == r.exact) || (r.exact == "" && strings.HasPrefix(path, r.prefix)) {
			return r.req
		}
	}
	return nil
}

// jwtReject is Envoy's 401 for a failed requirement.
func (x *exchange) jwtReject(st jwtStatus) {
	x.replyHeader = http.Header{"Www-Authenticate": {
		`Bearer realm="http://` + x.v.host + x.v.pathOnly + `", error="invalid_token"`}}
	x.localReply(http.StatusUnauthorized, string(st), "jwt_authn_access_denied{"+strings.ReplaceAll(string(st), " ", "_")+"}", -1, false, nil)
}

// jwtToken is a token found in a request.
type jwtToken struct {
	raw    string
	header string // the header it came from ("" for a param or a cookie)
}

// jwtVerification evaluates one request's requirement; tokens are
// verified once each.
type jwtVerification struct {
	f        *jwtFilter
	x        *exchange
	results  map[string]*jwtVerified
	verified []*jwtVerified // in verification order
}

type jwtVerified struct {
	status   jwtStatus
	provider *jwtProvider
	token    jwtToken
	payload  string // base64url, as in the token
	claims   map[string]any
}

func (v *jwtVerification) eval(r *jwtReq) jwtStatus {
	switch r.kind {
	case reqProvider:
		tok, ok := r.provider.extract(v.x)
		if !ok {
			return jwtMissed
		}
		return v.verify(tok, r.provider)
	case reqAny:
		st := jwtMissed
		for _, k := range r.kids {
			s := v.eval(k)
			if s == jwtOK {
				return jwtOK
			}
			if st == jwtMissed {
				st = s
			}
		}
		return st
	case reqAll:
		for _, k := range r.kids {
			if s := v.eval(k); s != jwtOK {
				return s
			}
		}
		return jwtOK
	}
	// allow_missing(_or_failed): every token found is verified by the
	// provider of its issuer.
	st := jwtOK
	for _, p := range v.f.providers {
		tok, ok := p.extract(v.x)
		if !ok {
			continue
		}
		if s := v.verify(tok, v.f.byIssuer(v.x, tok, p)); s != jwtOK && st == jwtOK {
			st = s
		}
	}
	if r.kind == reqAllowMissingOrFailed {
		return jwtOK
	}
	return st
}

// byIssuer is the provider for tok's issuer among those reading its
// location (p is one of them); nil when none has that issuer.
func (f *jwtFilter) byIssuer(x *exchange, tok jwtToken, p *jwtProvider) *jwtProvider {
	iss := unverifiedIssuer(tok.raw)
	if iss == p.issuer {
		return p
	}
	for _, q := range f.providers {
		if q.issuer == iss {
			if t, ok := q.extract(x); ok && t.raw == tok.raw {
				return q
			}
		}
	}
	return nil
}

// verify verifies tok for provider p (nil: no provider has its issuer).
func (v *jwtVerification) verify(tok jwtToken, p *jwtProvider) jwtStatus {
	key := tok.raw
	if p != nil {
		key = p.name + "\x00" + tok.raw
	}
	if r, ok := v.results[key]; ok {
		return r.status
	}
	if v.results == nil {
		v.results = map[string]*jwtVerified{}
	}
	r := &jwtVerified{provider: p, token: tok}
	v.results[key] = r
	r.status = r.check(v.x)
	if r.status == jwtOK {
		v.verified = append(v.verified, r)
	}
	return r.status
}

// check verifies the token: format, issuer, time, audience, then the
// signature with the provider's keys. Nothing is accepted unverified.
func (r *jwtVerified) check(x *exchange) jwtStatus {
	jws, err := jose.ParseSigned(r.token.raw, jwtAlgs)
	if err != nil || len(jws.Signatures) != 1 {
		if errors.Is(err, jose.ErrUnsupportedAlgorithm) || strings.Contains(fmt.Sprint(err), "unexpected signature algorithm") {
			return jwtVerifyFail
		}
		return jwtBadFormat
	}
	parts := strings.Split(r.token.raw, ".")
	claims, ok := decodeClaims(jws.UnsafePayloadWithoutVerification())
	if !ok || len(parts) != 3 {
		return jwtBadFormat
	}
	p := r.provider
	if iss, _ := claims["iss"].(string); p == nil || iss != p.issuer {
		return jwtUnknownIssuer
	}
	if st := checkTime(claims, time.Now(), p.skew); st != jwtOK {
		return st
	}
	if !p.audienceOK(claims["aud"]) {
		return jwtAudience
	}
	keys, st := p.keys(x)
	if st != jwtOK {
		return st
	}
	if st := verifySignature(jws, keys); st != jwtOK {
		return st
	}
	r.claims, r.payload = claims, parts[1]
	return jwtOK
}

func verifySignature(jws *jose.JSONWebSignature, keys *jose.JSONWebKeySet) jwtStatus {
	h := jws.Signatures[0].Header
	tried := false
	for _, k := range keys.Keys {
		if (h.KeyID != "" && k.KeyID != h.KeyID) || (k.Algorithm != "" && k.Algorithm != h.Algorithm) {
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		tried = true
		if _, err := jws.Verify(k); err == nil {
			return jwtOK
		}
	}
	if !tried {
		return jwksNoValidKeys
	}
	return jwtVerifyFail
}

func decodeClaims(b []byte) (map[string]any, bool) {
	var claims map[string]any
	if err := json.Unmarshal(b, &claims); err != nil || claims == nil {
		return nil, false
	}
	return claims, true
}

// checkTime checks exp and nbf with the clock skew, as Envoy (iat is not
// checked by Envoy either).
func checkTime(claims map[string]any, now time.Time, skew time.Duration) jwtStatus {
	// A time claim that is not a number is malformed, not absent.
	bad := false
	num := func(k string) (time.Time, bool) {
		v, present := claims[k]
		f, ok := v.(float64)
		if present && !ok {
			bad = true
		}
		return time.Unix(int64(f), 0), ok
	}
	nbf, hasNbf := num("nbf")
	exp, hasExp := num("exp")
	switch {
	case bad:
		return jwtBadFormat
	case hasNbf && now.Add(skew).Before(nbf):
		return jwtNotYetValid
	case hasExp && !now.Add(-skew).Before(exp):
		return jwtExpired
	}
	return jwtOK
}

func (p *jwtProvider) audienceOK(aud any) bool {
	if len(p.audiences) == 0 {
		return true
	}
	for _, a := range claimStrings(aud) {
		if slices.Contains(p.audiences, a) {
			return true
		}
	}
	return false
}

// claimStrings is a string claim or the strings of a list claim.
func claimStrings(v any) []string {
	switch t := v.(type) {
	case string:
		return []string{t}
	case []any:
		var out []string
		for _, e := range t {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// keys are the provider's JWKS: inline, or fetched (and cached) from its
// jwks_uri. A JWKS that cannot be fetched fails the token.
func (p *jwtProvider) keys(x *exchange) (*jose.JSONWebKeySet, jwtStatus) {
	if p.local != nil {
		return p.local, jwtOK
	}
	ks, err := p.jwks.get(x.r.Context(), p.remote.uri, p.remote.timeout, p.remote.ttl)
	if err != nil {
		x.p.log.Debug("jwks fetch failed", "provider", p.name, "uri", p.remote.uri, "error", err)
		return nil, jwksFetchFail
	}
	return ks, jwtOK
}

// extract is the first token in the provider's locations.
func (p *jwtProvider) extract(x *exchange) (jwtToken, bool) {
	for _, h := range p.headers {
		for _, v := range x.r.Header[h.name] {
			if t, ok := strings.CutPrefix(v, h.prefix); ok && strings.TrimSpace(t) != "" {
				return jwtToken{raw: strings.TrimSpace(t), header: h.name}, true
			}
		}
	}
	if len(p.params) > 0 && x.v.query != "" {
		q, _ := url.ParseQuery(x.v.query)
		for _, name := range p.params {
			if v := q.Get(name); v != "" {
				return jwtToken{raw: v}, true
			}
		}
	}
	for _, name := range p.cookies {
		if c, err := x.r.Cookie(name); err == nil && c.Value != "" {
			return jwtToken{raw: c.Value}, true
		}
	}
	return jwtToken{}, false
}

// unverifiedIssuer is the iss claim of a token, read to pick the
// provider that will verify it.
func unverifiedIssuer(raw string) string {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		Iss string `json:"iss"`
	}
	_ = json.Unmarshal(b, &c)
	return c.Iss
}

// publish applies what verified tokens ask for (token removal, payload
// header) and makes the first one the request's authentication.
func (v *jwtVerification) publish() {
	for _, r := range v.verified {
		p := r.provider
		if !p.forward && r.token.header != "" {
			v.x.r.Header.Del(r.token.header)
		}
		if p.payloadHeader != "" {
			v.x.r.Header.Set(p.payloadHeader, r.payload)
		}
		if v.x.authn == nil {
			v.x.authn = newAuthn(r.claims)
		}
	}
}
