package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Istio's ingress authorization tasks on the chart's gateway pods
// (istio=ingress in weft-ingress): JWT at the ingress (a
// RequestAuthentication and a DENY without a request principal, by
// selector) and an IP allow-list on the client address (remoteIpBlocks).
const (
	ingressJWTYAML = `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt-example, namespace: weft-ingress}
spec:
  selector: {matchLabels: {istio: ingress}}
  jwtRules:
  - issuer: %q
    jwks: %q
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: frontend-ingress, namespace: weft-ingress}
spec:
  selector: {matchLabels: {istio: ingress}}
  action: DENY
  rules:
  - from:
    - source: {notRequestPrincipals: ["*"]}
    to:
    - operation: {paths: [/productpage]}
`
	ingressAllowListYAML = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ingress-policy, namespace: weft-ingress}
spec:
  selector: {matchLabels: {istio: ingress}}
  action: ALLOW
  rules:
  - from:
    - source: {remoteIpBlocks: [%q]}
`
)

// testIngressAuthz: the gateway, not a node agent, applies the policies
// selecting its pods (they are not in the mesh), and WeftAccepted says they
// are applied as written.
func testIngressAuthz(t *testing.T, e *env, client *http.Client, url string) {
	get := func(token, id string, hdr ...string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if id != "" {
			req.Header.Set("X-Request-Id", id)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	want := func(t *testing.T, what string, token string, code int) {
		t.Helper()
		eventually(t, what, 60*time.Second, func() error {
			if got, body := get(token, ""); got != code {
				return fmt.Errorf("HTTP %d (%.80s), want %d", got, body, code)
			}
			return nil
		})
	}
	accepted := func(t *testing.T, kind, name string) {
		t.Helper()
		eventually(t, kind+" "+name+" accepted as written", 30*time.Second, func() error {
			if got := e.mustKubectl(t, "-n", "weft-ingress", "get", kind, name, "-o",
				`jsonpath={.status.conditions[?(@.type=="WeftAccepted")].status}`); got != "True" {
				return fmt.Errorf("WeftAccepted %q", got)
			}
			return nil
		})
	}

	t.Run("JWT at the ingress: a RequestAuthentication and a DENY without a request principal", func(t *testing.T) {
		iss := newJWTIssuer(t)
		e.applyYAML(t, fmt.Sprintf(ingressJWTYAML, e2eIssuer, iss.jwks))
		want(t, "no token: 403", "", http.StatusForbidden)
		if code, body := get("", ""); body != "RBAC: access denied" {
			t.Errorf("no token: %d %q, want the gateway's RBAC denial", code, body)
		}
		want(t, "a valid token: 200", iss.token(t, "jason", nil), http.StatusOK)
		want(t, "another issuer's token: 401", newJWTIssuer(t).token(t, "mallory", nil), http.StatusUnauthorized)
		accepted(t, "requestauthentication", "jwt-example")
		accepted(t, "authorizationpolicy", "frontend-ingress")
		e.mustKubectl(t, "-n", "weft-ingress", "delete", "requestauthentication/jwt-example", "authorizationpolicy/frontend-ingress")
		want(t, "policies deleted: 200 without a token", "", http.StatusOK)
	})

	t.Run("IP allow-list at the ingress: remoteIpBlocks is the client's address", func(t *testing.T) {
		id := "ingress-authz-" + randomHex(t, 6)
		if code, _ := get("", id); code != http.StatusOK {
			t.Fatalf("before the policy: HTTP %d", code)
		}
		var clientIP string
		eventually(t, "the gateway's access log names the client", 30*time.Second, func() error {
			for _, l := range strings.Split(e.mustKubectl(t, "-n", "weft-ingress", "logs", "deploy/weft-ingress"), "\n") {
				var line struct {
					RequestID string `json:"request_id"`
					Client    string `json:"downstream_remote_address"`
				}
				if json.Unmarshal([]byte(l), &line) == nil && line.RequestID == id {
					clientIP = line.Client
					return nil
				}
			}
			return fmt.Errorf("no access log line with request_id %s", id)
		})
		t.Logf("the gateway sees the client as %s", clientIP)
		e.applyYAML(t, fmt.Sprintf(ingressAllowListYAML, "192.0.2.0/24"))
		want(t, "a client outside the allow-list: 403", "", http.StatusForbidden)
		e.applyYAML(t, fmt.Sprintf(ingressAllowListYAML, clientIP))
		want(t, "the client "+clientIP+" allow-listed: 200", "", http.StatusOK)
		accepted(t, "authorizationpolicy", "ingress-policy")
		e.mustKubectl(t, "-n", "weft-ingress", "delete", "authorizationpolicy/ingress-policy")
	})

	t.Run("CUSTOM at the ingress: Istio's ext-authz sample server decides by header", func(t *testing.T) {
		root := repoRoot()
		e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/extauthz/ext-authz.yaml"))
		e.mustKubectl(t, "wait", "--for=condition=Available", "deployment/ext-authz", "--timeout=120s")
		e.applyYAML(t, ingressExtAuthzYAML)
		t.Cleanup(func() {
			e.kubectl("-n", "weft-ingress", "delete", "authorizationpolicy", "ingress-ext-authz", "--ignore-not-found")
			e.kubectl("delete", "-f", filepath.Join(root, "samples/extauthz/ext-authz.yaml"), "--ignore-not-found")
		})
		eventually(t, "the authorizer's answers decide at the gateway", 60*time.Second, func() error {
			deny, _ := get("", "", "x-ext-authz", "deny")
			allow, body := get("", "", "x-ext-authz", "allow")
			if deny != http.StatusForbidden || allow != http.StatusOK || !strings.Contains(body, "Book Details") {
				return fmt.Errorf("x-ext-authz deny: HTTP %d, allow: HTTP %d; want 403 and productpage", deny, allow)
			}
			return nil
		})
		accepted(t, "authorizationpolicy", "ingress-ext-authz")
	})
}

// ingressExtAuthzYAML: Istio's ext-authz task's CUSTOM policy, selecting the
// gateway pods (provider sample-ext-authz-grpc: extauthz-values.yaml).
const ingressExtAuthzYAML = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ingress-ext-authz, namespace: weft-ingress}
spec:
  selector: {matchLabels: {istio: ingress}}
  action: CUSTOM
  provider: {name: sample-ext-authz-grpc}
  rules:
  - to:
    - operation: {paths: [/productpage]}
`
