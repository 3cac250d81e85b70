package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// jwtIssuer signs tokens for the e2e JWT case; its JWKS goes inline into
// the RequestAuthentication.
type jwtIssuer struct {
	key  *rsa.PrivateKey
	jwks string
}

const e2eIssuer = "testing@secure.istio.io"

func newJWTIssuer(t *testing.T) *jwtIssuer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: "e2e", Algorithm: "RS256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	return &jwtIssuer{key: k, jwks: string(b)}
}

// token is a token of the issuer for subject sub with extra claims.
func (j *jwtIssuer) token(t *testing.T, sub string, claims map[string]any) string {
	t.Helper()
	c := map[string]any{"iss": e2eIssuer, "sub": sub, "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: j.key}, (&jose.SignerOptions{}).WithHeader("kid", "e2e"))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(c)
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// testWaypointJWT: a RequestAuthentication (inline JWKS) and Istio's
// require-jwt policy on productpage through the waypoint: no token 200 on
// a public path and 403 where a principal is required, invalid token 401,
// valid token 200, a claims DENY 403, a dry-run DENY lets the request
// through and is counted.
func testWaypointJWT(t *testing.T, e *env) {
	iss := newJWTIssuer(t)
	e.applyYAML(t, fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt-productpage, namespace: default}
spec:
  targetRefs:
  - {kind: Service, group: "", name: productpage}
  jwtRules:
  - issuer: %q
    jwks: %q
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: default}
spec:
  targetRefs:
  - {kind: Service, group: "", name: productpage}
  action: ALLOW
  rules:
  - from:
    - source: {requestPrincipals: ["%s/*"]}
  - to:
    - operation: {paths: ["/health"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-blocked, namespace: default}
spec:
  targetRefs:
  - {kind: Service, group: "", name: productpage}
  action: DENY
  rules:
  - when:
    - {key: "request.auth.claims[groups]", values: ["blocked"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-deny
  namespace: default
  annotations: {istio.io/dry-run: "true"}
spec:
  targetRefs:
  - {kind: Service, group: "", name: productpage}
  action: DENY
  rules:
  - when:
    - {key: "request.auth.claims[groups]", values: ["dry"]}
`, e2eIssuer, iss.jwks, e2eIssuer))
	t.Cleanup(func() {
		e.kubectl("delete", "requestauthentication", "jwt-productpage", "--ignore-not-found")
		e.kubectl("delete", "authorizationpolicy", "require-jwt", "deny-blocked", "dry-deny", "--ignore-not-found")
	})
	const page, health = "http://productpage:9080/productpage", "http://productpage:9080/health"
	other := newJWTIssuer(t) // same issuer name, another key: an invalid signature
	cases := []struct{ what, url, token, want string }{
		{"no token, public path", health, "", "200"},
		{"no token, principal required", page, "", "403"},
		{"invalid signature", page, other.token(t, "alice", nil), "401"},
		{"valid token", page, iss.token(t, "alice", nil), "200"},
		{"claims DENY", page, iss.token(t, "alice", map[string]any{"groups": []string{"dev", "blocked"}}), "403"},
		{"dry-run DENY", page, iss.token(t, "alice", map[string]any{"groups": []string{"dry"}}), "200"},
	}
	eventually(t, "the JWT policies decide", 60*time.Second, func() error {
		var bad []string
		for _, c := range cases {
			var auth []string
			if c.token != "" {
				auth = []string{"Authorization: Bearer " + c.token}
			}
			if got := e.httpCode(t, "default", "deploy/curl", c.url, auth...); got != c.want {
				bad = append(bad, fmt.Sprintf("%s: HTTP %s, want %s", c.what, got, c.want))
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("%s", strings.Join(bad, "; "))
		}
		return nil
	})
	eventually(t, "the dry-run denial counted by the waypoint", 30*time.Second, func() error {
		m, err := e.podMetrics(t, "gateway.networking.k8s.io/gateway-name=waypoint")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, "weft_waypoint_rbac_dry_run_total{") && strings.Contains(l, `decision="denied"`) {
				return nil
			}
		}
		return fmt.Errorf("no weft_waypoint_rbac_dry_run_total with decision=denied:\n%s", grepLines(m, "dry_run"))
	})
	st := e.mustKubectl(t, "get", "requestauthentication", "jwt-productpage", "-o", istioStatusPath)
	if !strings.Contains(st, "True Accepted") {
		t.Errorf("RequestAuthentication status %q, want WeftAccepted True", st)
	}
}

// jwksURIIssuer is the issuer whose JWKS the waypoint fetches from the
// cluster (jwksUri), not inline.
const jwksURIIssuer = "jwks-uri@weft.test"

// testWaypointJWKSURI: a RequestAuthentication whose jwksUri is served in
// the cluster (httpbin's /base64 endpoint answers the JWKS as JSON): the
// waypoint fetches it; no token passes on a public path and gets 403 where
// a principal is required, a token signed with its key passes, one of the
// same issuer signed with another key gets 401, a claims DENY 403.
func testWaypointJWKSURI(t *testing.T, e *env) {
	root := repoRoot()
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/httpbin/httpbin.yaml"))
	e.mustKubectl(t, "wait", "--for=condition=Available", "deployment/httpbin", "--timeout=120s")
	iss := newJWTIssuer(t)
	uri := "http://httpbin.default.svc.cluster.local:8000/base64/" + base64.URLEncoding.EncodeToString([]byte(iss.jwks)) + "?content-type=application/json"
	e.applyYAML(t, fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwks-uri, namespace: default}
spec:
  targetRefs:
  - {kind: Service, group: "", name: productpage}
  jwtRules:
  - issuer: %q
    jwksUri: %q
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwks-uri-token, namespace: default}
spec:
  targetRefs:
  - {kind: Service, group: "", name: productpage}
  action: DENY
  rules:
  - from:
    - source: {notRequestPrincipals: ["*"]}
    to:
    - operation: {paths: [/productpage]}
  - when:
    - {key: "request.auth.claims[groups]", values: ["blocked"]}
`, jwksURIIssuer, uri))
	t.Cleanup(func() {
		e.kubectl("delete", "requestauthentication", "jwks-uri", "--ignore-not-found")
		e.kubectl("delete", "authorizationpolicy", "require-jwks-uri-token", "--ignore-not-found")
		// httpbin stays for the ext-authz task, which removes it.
	})
	token := func(j *jwtIssuer, groups ...string) string {
		return "Authorization: Bearer " + j.token(t, "alice", map[string]any{"iss": jwksURIIssuer, "groups": groups})
	}
	const page, health = "http://productpage:9080/productpage", "http://productpage:9080/health"
	cases := []struct{ what, url, header, want string }{
		{"no token, public path", health, "", "200"},
		{"no token, principal required", page, "", "403"},
		{"a token of the JWKS's key", page, token(iss), "200"},
		{"the issuer's name with another key", page, token(newJWTIssuer(t)), "401"},
		{"claims DENY", page, token(iss, "dev", "blocked"), "403"},
	}
	eventually(t, "the waypoint fetched the JWKS from the cluster and decides by it", 60*time.Second, func() error {
		var bad []string
		for _, c := range cases {
			var hdrs []string
			if c.header != "" {
				hdrs = append(hdrs, c.header)
			}
			if code, _ := e.curl(t, c.url, hdrs...); code != c.want {
				bad = append(bad, fmt.Sprintf("%s: HTTP %s, want %s", c.what, code, c.want))
			}
		}
		if len(bad) > 0 {
			return errors.New(strings.Join(bad, "; "))
		}
		return nil
	})
	if got := e.mustKubectl(t, "get", "requestauthentication", "jwks-uri", "-o",
		`jsonpath={.status.conditions[?(@.type=="WeftAccepted")].status}`); got != "True" {
		t.Errorf("RequestAuthentication jwks-uri: WeftAccepted %q, want True", got)
	}
}
