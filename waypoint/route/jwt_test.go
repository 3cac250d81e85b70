package route

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbaccfgv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/types/known/emptypb"
)

const testIssuer = "testing@secure.istio.io"

// jwtKey is a signing key and its public JWK.
type jwtKey struct {
	alg  jose.SignatureAlgorithm
	priv any
	pub  jose.JSONWebKey
}

func newJWTKey(t testing.TB, alg jose.SignatureAlgorithm, kid string) jwtKey {
	t.Helper()
	var priv, pub any
	switch alg {
	case jose.RS256, jose.PS256:
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		priv, pub = k, &k.PublicKey
	case jose.ES256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		priv, pub = k, &k.PublicKey
	case jose.EdDSA:
		p, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		priv, pub = k, p
	}
	return jwtKey{alg: alg, priv: priv, pub: jose.JSONWebKey{Key: pub, KeyID: kid, Algorithm: string(alg), Use: "sig"}}
}

func jwksOf(t testing.TB, keys ...jwtKey) string {
	t.Helper()
	var ks jose.JSONWebKeySet
	for _, k := range keys {
		ks.Keys = append(ks.Keys, k.pub)
	}
	b, err := json.Marshal(ks)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sign makes a token of claims (iss, and exp an hour from now, unless
// given).
func (k jwtKey) sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	c := map[string]any{"iss": testIssuer, "sub": "testing@secure.istio.io", "exp": time.Now().Add(time.Hour).Unix()}
	for n, v := range claims {
		if v == nil {
			delete(c, n)
		} else {
			c[n] = v
		}
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.priv}, (&jose.SignerOptions{}).WithHeader("kid", k.pub.KeyID).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(c)
	jws, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// istioJWT is the jwt_authn config Istio generates for one issuer:
// requires_any [provider, allow_missing] on every path.
func istioJWT(providers ...*jwtauthnv3.JwtProvider) *jwtauthnv3.JwtAuthentication {
	c := &jwtauthnv3.JwtAuthentication{Providers: map[string]*jwtauthnv3.JwtProvider{}, BypassCorsPreflight: true}
	var reqs []*jwtauthnv3.JwtRequirement
	for i, p := range providers {
		name := "origins-" + string(rune('0'+i))
		c.Providers[name] = p
		reqs = append(reqs, &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_ProviderName{ProviderName: name}})
	}
	reqs = append(reqs, &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}})
	c.Rules = []*jwtauthnv3.RequirementRule{{Match: prefixMatch("/"), RequirementType: &jwtauthnv3.RequirementRule_Requires{
		Requires: &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_RequiresAny{
			RequiresAny: &jwtauthnv3.JwtRequirementOrList{Requirements: reqs}}}}}}
	return c
}

func localProvider(jwks string) *jwtauthnv3.JwtProvider {
	return &jwtauthnv3.JwtProvider{Issuer: testIssuer, PayloadInMetadata: testIssuer,
		JwksSourceSpecifier: &jwtauthnv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
			Specifier: &corev3.DataSource_InlineString{InlineString: jwks}}}}
}

func jwtPipeline(t testing.TB, c *jwtauthnv3.JwtAuthentication, opts Options, more ...*hcmv3.HttpFilter) (*Pipeline, *fakeUp) {
	up := newFake(nil)
	fs := append([]*hcmv3.HttpFilter{httpFilter(t, "envoy.filters.http.jwt_authn", c)}, more...)
	return compile(t, hcmWith(t, fs...), rcOf(vhOf("v", []string{"*"}, toCluster("r", prefixMatch("/"), "c"))), up, opts), up
}

func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

func TestJWTAuthn(t *testing.T) {
	rs := newJWTKey(t, jose.RS256, "rs")
	es := newJWTKey(t, jose.ES256, "es")
	ps := newJWTKey(t, jose.PS256, "ps")
	ed := newJWTKey(t, jose.EdDSA, "ed")
	other := newJWTKey(t, jose.RS256, "rs") // same kid, not in the JWKS
	jwks := jwksOf(t, rs, es, ps, ed)

	plain := localProvider(jwks)
	plain.Audiences = []string{"app", "other"}
	p, up := jwtPipeline(t, istioJWT(plain), Options{})

	tampered := rs.sign(t, map[string]any{"aud": "app"})
	parts := strings.Split(tampered, ".")
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"` + testIssuer + `","sub":"admin","aud":"app"}`))
	tampered = strings.Join(parts, ".")

	for _, tc := range []struct {
		name, body string
		kv         []string
		want       int
	}{
		{"no token passes", "", nil, 200},
		{"valid RS256", "", bearer(rs.sign(t, map[string]any{"aud": "app"})), 200},
		{"valid ES256", "", bearer(es.sign(t, map[string]any{"aud": []string{"x", "other"}})), 200},
		{"valid PS256", "", bearer(ps.sign(t, map[string]any{"aud": "app"})), 200},
		{"valid EdDSA", "", bearer(ed.sign(t, map[string]any{"aud": "app"})), 200},
		{"invalid signature", "Jwt verification fails", bearer(other.sign(t, map[string]any{"aud": "app"})), 401},
		{"tampered payload", "Jwt verification fails", bearer(tampered), 401},
		{"expired", "Jwt is expired", bearer(rs.sign(t, map[string]any{"aud": "app", "exp": time.Now().Add(-61 * time.Second).Unix()})), 401},
		{"expired within skew", "", bearer(rs.sign(t, map[string]any{"aud": "app", "exp": time.Now().Add(-30 * time.Second).Unix()})), 200},
		{"not yet valid", "Jwt not yet valid", bearer(rs.sign(t, map[string]any{"aud": "app", "nbf": time.Now().Add(2 * time.Minute).Unix()})), 401},
		{"wrong issuer", "Jwt issuer is not configured", bearer(rs.sign(t, map[string]any{"aud": "app", "iss": "evil"})), 401},
		{"wrong audience", "Audiences in Jwt are not allowed", bearer(rs.sign(t, map[string]any{"aud": "nope"})), 401},
		{"no audience", "Audiences in Jwt are not allowed", bearer(rs.sign(t, nil)), 401},
		{"exp not a number", "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections", bearer(rs.sign(t, map[string]any{"aud": "app", "exp": "2000000000"})), 401},
		{"garbage", "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections", bearer("abc.def"), 401},
		{"alg none", "", bearer(unsignedToken(`{"alg":"none","typ":"JWT"}`, `{"iss":"`+testIssuer+`","aud":"app"}`, "")), 401},
		{"HS256 keyed with the public key", "", bearer(hs256WithPublicKey(t, rs)), 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := len(up.Calls())
			w, info := serve(p, req("GET", "/x", tc.kv...), nil)
			if w.Code != tc.want {
				t.Fatalf("status %d (%s, %q), want %d", w.Code, info.Details, w.Body.String(), tc.want)
			}
			if tc.want != 401 {
				calls := up.Calls()
				if len(calls) != n+1 || calls[n].Header.Get("Authorization") != "" {
					t.Fatalf("upstream calls %d, Authorization %q: the token must be stripped", len(calls)-n, calls[len(calls)-1].Header.Get("Authorization"))
				}
				return
			}
			if len(up.Calls()) != n {
				t.Fatal("a refused request reached the upstream")
			}
			if tc.body != "" && w.Body.String() != tc.body {
				t.Errorf("body %q, want %q", w.Body.String(), tc.body)
			}
			if !strings.HasPrefix(info.Details, "jwt_authn_access_denied{") || !strings.Contains(w.Header().Get("Www-Authenticate"), `error="invalid_token"`) {
				t.Errorf("details %q, www-authenticate %q", info.Details, w.Header().Get("Www-Authenticate"))
			}
		})
	}
}

func unsignedToken(header, payload, sig string) string {
	e := base64.RawURLEncoding.EncodeToString
	return e([]byte(header)) + "." + e([]byte(payload)) + "." + sig
}

// hs256WithPublicKey is the key-confusion attack: an HMAC keyed with the
// verifier's public key, which a library that trusts the header's alg
// would accept.
func hs256WithPublicKey(t testing.TB, k jwtKey) string {
	der, err := x509.MarshalPKIXPublicKey(k.pub.Key)
	if err != nil {
		t.Fatal(err)
	}
	secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: secret}, (&jose.SignerOptions{}).WithHeader("kid", k.pub.KeyID))
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign([]byte(`{"iss":"` + testIssuer + `","aud":"app","sub":"admin"}`))
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := jws.CompactSerialize()
	return tok
}

func TestJWTForwardAndPayloadHeader(t *testing.T) {
	k := newJWTKey(t, jose.RS256, "k")
	prov := localProvider(jwksOf(t, k))
	prov.Forward = true
	prov.ForwardPayloadHeader = "x-jwt-payload"
	p, up := jwtPipeline(t, istioJWT(prov), Options{})
	tok := k.sign(t, map[string]any{"groups": []string{"a"}})
	if w, _ := serve(p, req("GET", "/", bearer(tok)...), nil); w.Code != 200 {
		t.Fatalf("status %d", w.Code)
	}
	c := up.Calls()[0]
	if c.Header.Get("Authorization") != "Bearer "+tok {
		t.Errorf("forward: Authorization %q, want the original", c.Header.Get("Authorization"))
	}
	if want := strings.Split(tok, ".")[1]; c.Header.Get("X-Jwt-Payload") != want {
		t.Errorf("x-jwt-payload %q, want %q", c.Header.Get("X-Jwt-Payload"), want)
	}
}

func TestJWTFromParamsAndHeaders(t *testing.T) {
	k := newJWTKey(t, jose.RS256, "k")
	prov := localProvider(jwksOf(t, k))
	prov.FromParams = []string{"my_token"}
	prov.FromHeaders = []*jwtauthnv3.JwtHeader{{Name: "x-jwt-assertion", ValuePrefix: "Token "}}
	p, up := jwtPipeline(t, istioJWT(prov), Options{})
	good, bad := k.sign(t, nil), k.sign(t, map[string]any{"iss": "other"})
	for _, tc := range []struct {
		name   string
		r      *http.Request
		want   int
		header string // the header the upstream must not see
	}{
		{"param", req("GET", "/p?my_token="+good), 200, ""},
		{"bad param", req("GET", "/p?my_token="+bad), 401, ""},
		{"header with prefix", req("GET", "/p", "x-jwt-assertion", "Token "+good), 200, "X-Jwt-Assertion"},
		{"bad header", req("GET", "/p", "x-jwt-assertion", "Token "+bad), 401, ""},
		// Only the configured locations are read: Authorization is not one.
		{"authorization ignored", req("GET", "/p", bearer(bad)...), 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, info := serve(p, tc.r, nil)
			if w.Code != tc.want {
				t.Fatalf("status %d (%s), want %d", w.Code, info.Details, tc.want)
			}
			if tc.header != "" && up.Calls()[len(up.Calls())-1].Header.Get(tc.header) != "" {
				t.Errorf("%s forwarded", tc.header)
			}
		})
	}
}

// jwksServer is a JWKS endpoint as an http.RoundTripper: it counts
// fetches and fails while down.
type jwksServer struct {
	body    string
	fetches atomic.Int32
	down    atomic.Bool
}

func (s *jwksServer) RoundTrip(r *http.Request) (*http.Response, error) {
	s.fetches.Add(1)
	if s.down.Load() {
		return nil, errors.New("connection refused")
	}
	return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(s.body)), Header: http.Header{}, Request: r}, nil
}

func remoteProvider(uri string, ttl time.Duration) *jwtauthnv3.JwtProvider {
	return &jwtauthnv3.JwtProvider{Issuer: testIssuer, JwksSourceSpecifier: &jwtauthnv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtauthnv3.RemoteJwks{
		HttpUri: &corev3.HttpUri{Uri: uri, HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "jwks"}, Timeout: dur(5 * time.Second)}, CacheDuration: dur(ttl)}}}
}

func TestJWTRemoteJWKS(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := newJWTKey(t, jose.ES256, "k")
		srv := &jwksServer{body: jwksOf(t, k)}
		cache := &JWKSCache{Client: &http.Client{Transport: srv}}
		p, _ := jwtPipeline(t, istioJWT(remoteProvider("https://issuer.example/jwks", 20*time.Minute)), Options{JWKS: cache})
		get := func() int {
			w, _ := serve(p, req("GET", "/", bearer(k.sign(t, nil))...), nil)
			return w.Code
		}
		if c := get(); c != 200 || srv.fetches.Load() != 1 {
			t.Fatalf("first request: status %d, fetches %d", c, srv.fetches.Load())
		}
		time.Sleep(19 * time.Minute)
		if c := get(); c != 200 || srv.fetches.Load() != 1 {
			t.Fatalf("within cache_duration: status %d, fetches %d (want the cached JWKS)", c, srv.fetches.Load())
		}
		time.Sleep(2 * time.Minute)
		if c := get(); c != 200 || srv.fetches.Load() != 2 {
			t.Fatalf("after cache_duration: status %d, fetches %d (want a refresh)", c, srv.fetches.Load())
		}
		// Attack: the JWKS server is made unreachable; the expired cache
		// must not let tokens through.
		srv.down.Store(true)
		time.Sleep(21 * time.Minute)
		if c := get(); c != 401 {
			t.Fatalf("JWKS down: status %d, want 401", c)
		}
		n := srv.fetches.Load()
		if c := get(); c != 401 || srv.fetches.Load() != n {
			t.Fatalf("JWKS down, within retry interval: status %d, fetches %d -> %d", c, n, srv.fetches.Load())
		}
		// A request without a token still passes (allow_missing).
		if w, _ := serve(p, req("GET", "/"), nil); w.Code != 200 {
			t.Fatalf("no token while JWKS down: %d", w.Code)
		}
		srv.down.Store(false)
		time.Sleep(JWKSRetry)
		if c := get(); c != 200 {
			t.Fatalf("JWKS back: status %d", c)
		}
	})
}

func TestJWTRemoteJWKSBadDocuments(t *testing.T) {
	k := newJWTKey(t, jose.RS256, "k")
	for name, body := range map[string]string{
		"not json":     "<html>",
		"no keys":      `{"keys":[]}`,
		"symmetric":    `{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"k"}]}`,
		"too large":    `{"keys":[],"pad":"` + strings.Repeat("a", JWKSMaxSize) + `"}`,
		"another key":  jwksOf(t, newJWTKey(t, jose.RS256, "k")),
		"no kid match": jwksOf(t, newJWTKey(t, jose.RS256, "other")),
	} {
		t.Run(name, func(t *testing.T) {
			cache := &JWKSCache{Client: &http.Client{Transport: &jwksServer{body: body}}}
			p, _ := jwtPipeline(t, istioJWT(remoteProvider("https://issuer.example/jwks", time.Minute)), Options{JWKS: cache})
			if w, info := serve(p, req("GET", "/", bearer(k.sign(t, nil))...), nil); w.Code != 401 {
				t.Fatalf("status %d (%s), want 401", w.Code, info.Details)
			}
		})
	}
}

func TestJWTExpiryOverTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := newJWTKey(t, jose.RS256, "k")
		p, _ := jwtPipeline(t, istioJWT(localProvider(jwksOf(t, k))), Options{})
		tok := k.sign(t, map[string]any{"exp": time.Now().Add(time.Minute).Unix()})
		if w, _ := serve(p, req("GET", "/", bearer(tok)...), nil); w.Code != 200 {
			t.Fatalf("fresh token: %d", w.Code)
		}
		time.Sleep(time.Minute + jwtDefaultSkew - time.Second)
		if w, _ := serve(p, req("GET", "/", bearer(tok)...), nil); w.Code != 200 {
			t.Fatalf("expired within the clock skew: %d", w.Code)
		}
		time.Sleep(time.Second)
		if w, _ := serve(p, req("GET", "/", bearer(tok)...), nil); w.Code != 401 || w.Body.String() != string(jwtExpired) {
			t.Fatalf("expired beyond the clock skew: %d %q", w.Code, w.Body.String())
		}
	})
}

// authnPrincipal builds Istio's requestPrincipals principal.
func metaPrincipal(path []string, v *matcherv3.ValueMatcher) *rbaccfgv3.Principal {
	mm := &matcherv3.MetadataMatcher{Filter: "istio_authn", Value: v}
	for _, k := range path {
		mm.Path = append(mm.Path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
	}
	return &rbaccfgv3.Principal{Identifier: &rbaccfgv3.Principal_Metadata{Metadata: mm}}
}

func strValue(sm *matcherv3.StringMatcher) *matcherv3.ValueMatcher {
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: sm}}
}

func listValue(sm *matcherv3.StringMatcher) *matcherv3.ValueMatcher {
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
		MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: strValue(sm)}}}}
}

func rbacWith(action rbaccfgv3.RBAC_Action, ids ...*rbaccfgv3.Principal) *rbacv3.RBAC {
	return &rbacv3.RBAC{Rules: &rbaccfgv3.RBAC{Action: action, Policies: map[string]*rbaccfgv3.Policy{
		"ns[default]-policy[p]-rule[0]": {Permissions: []*rbaccfgv3.Permission{{Rule: &rbaccfgv3.Permission_Any{Any: true}}}, Principals: ids},
	}}}
}

func TestJWTRequestPrincipalsAllow(t *testing.T) {
	k := newJWTKey(t, jose.RS256, "k")
	allow := rbacWith(rbaccfgv3.RBAC_ALLOW, metaPrincipal([]string{"request.auth.principal"}, strValue(exact(testIssuer+"/alice"))))
	p, _ := jwtPipeline(t, istioJWT(localProvider(jwksOf(t, k))), Options{}, rbacF(t, "rbac-allow", allow))
	for _, tc := range []struct {
		name string
		kv   []string
		want int
	}{
		{"no token", nil, 403},
		{"principal", bearer(k.sign(t, map[string]any{"sub": "alice"})), 200},
		{"other subject", bearer(k.sign(t, map[string]any{"sub": "bob"})), 403},
		{"invalid token", bearer(newJWTKey(t, jose.RS256, "k").sign(t, map[string]any{"sub": "alice"})), 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if w, info := serve(p, req("GET", "/", tc.kv...), nil); w.Code != tc.want {
				t.Fatalf("status %d (%s), want %d", w.Code, info.Details, tc.want)
			}
		})
	}
}

func TestJWTClaimsDeny(t *testing.T) {
	k := newJWTKey(t, jose.RS256, "k")
	deny := rbacWith(rbaccfgv3.RBAC_DENY,
		metaPrincipal([]string{"request.auth.claims", "groups"}, listValue(exact("blocked"))),
		metaPrincipal([]string{"request.auth.claims", "realm", "role"}, listValue(prefixSM("guest"))),
		metaPrincipal([]string{"request.auth.audiences"}, listValue(exact("evil-aud"))),
		metaPrincipal([]string{"request.auth.presenter"}, strValue(exact("bad-client"))))
	p, _ := jwtPipeline(t, istioJWT(localProvider(jwksOf(t, k))), Options{}, rbacF(t, "rbac-deny", deny))
	for _, tc := range []struct {
		name   string
		claims map[string]any
		want   int
	}{
		{"plain", nil, 200},
		{"list claim element", map[string]any{"groups": []string{"dev", "blocked"}}, 403},
		{"list claim other", map[string]any{"groups": []string{"dev"}}, 200},
		{"string claim", map[string]any{"groups": "blocked"}, 403},
		{"nested", map[string]any{"realm": map[string]any{"role": "guest-1"}}, 403},
		{"nested list", map[string]any{"realm": map[string]any{"role": []string{"admin", "guest"}}}, 403},
		{"nested other", map[string]any{"realm": map[string]any{"role": "admin"}}, 200},
		{"nested not an object", map[string]any{"realm": "guest"}, 200},
		{"audience", map[string]any{"aud": []string{"x", "evil-aud"}}, 403},
		{"presenter", map[string]any{"azp": "bad-client"}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if w, info := serve(p, req("GET", "/", bearer(k.sign(t, tc.claims))...), nil); w.Code != tc.want {
				t.Fatalf("status %d (%s), want %d", w.Code, info.Details, tc.want)
			}
		})
	}
	// Without a token no claim matches: the DENY rule does not apply.
	if w, _ := serve(p, req("GET", "/"), nil); w.Code != 200 {
		t.Fatalf("no token: %d", w.Code)
	}
}

// A dry-run DENY (shadow rules) lets the request through; its would-be
// denial is in Info.DryRun. Enforced rules of the same filter still apply.
func TestRBACDryRun(t *testing.T) {
	k := newJWTKey(t, jose.RS256, "k")
	deny := rbacWith(rbaccfgv3.RBAC_DENY, metaPrincipal([]string{"request.auth.claims", "groups"}, listValue(exact("blocked"))))
	deny.ShadowRules, deny.ShadowRulesStatPrefix = deny.Rules, "istio_dry_run_deny_"
	deny.Rules = &rbaccfgv3.RBAC{Action: rbaccfgv3.RBAC_DENY, Policies: map[string]*rbaccfgv3.Policy{
		"enforced": {Permissions: []*rbaccfgv3.Permission{{Rule: &rbaccfgv3.Permission_Header{Header: hdr(":method", exact("DELETE"))}}},
			Principals: []*rbaccfgv3.Principal{{Identifier: &rbaccfgv3.Principal_Any{Any: true}}}}}}
	p, up := jwtPipeline(t, istioJWT(localProvider(jwksOf(t, k))), Options{}, rbacF(t, "rbac-deny", deny))
	for _, tc := range []struct {
		name, method string
		groups       []string
		want         int
		dryRun       string
	}{
		{"would deny", "GET", []string{"blocked"}, 200, "denied[ns[default]-policy[p]-rule[0]]"},
		{"would allow", "GET", []string{"dev"}, 200, "allowed"},
		{"enforced rule denies", "DELETE", []string{"dev"}, 403, "allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := len(up.Calls())
			w, info := serve(p, req(tc.method, "/", bearer(k.sign(t, map[string]any{"groups": tc.groups}))...), nil)
			if w.Code != tc.want || info.DryRun != tc.dryRun {
				t.Fatalf("status %d, dry run %q; want %d, %q", w.Code, info.DryRun, tc.want, tc.dryRun)
			}
			if reached := len(up.Calls()) > n; reached != (tc.want == 200) {
				t.Fatalf("upstream reached: %v", reached)
			}
		})
	}
	// Without shadow rules nothing is recorded.
	p2, _ := jwtPipeline(t, istioJWT(localProvider(jwksOf(t, k))), Options{})
	if _, info := serve(p2, req("GET", "/"), nil); info.DryRun != "" {
		t.Fatalf("dry run %q without shadow rules", info.DryRun)
	}
}
