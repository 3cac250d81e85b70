package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// extAuthzValues configures Istio's task's two providers (see the file).
var extAuthzValues = filepath.Join(repoRoot(), "e2e/testdata/extauthz-values.yaml")

// testWaypointExtAuthz is Istio's task "External Authorization" on the
// waypoint, with its manifests unchanged (samples/httpbin, Istio's ext-authz
// sample server, the task's CUSTOM policy bound to httpbin): /headers is
// checked, /ip is not; "x-ext-authz: allow" passes with the authorizer's
// header visible to httpbin, anything else gets the authorizer's 403; the
// same with the HTTP provider.
func testWaypointExtAuthz(t *testing.T, e *env) {
	root := repoRoot()
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/httpbin/httpbin.yaml"), "-f", filepath.Join(root, "samples/extauthz/ext-authz.yaml"))
	e.mustKubectl(t, "wait", "--for=condition=Available", "deployment/httpbin", "deployment/ext-authz", "--timeout=120s")
	t.Cleanup(func() {
		e.kubectl("delete", "authorizationpolicy", "ext-authz", "--ignore-not-found")
		e.kubectl("delete", "-f", filepath.Join(root, "samples/extauthz/ext-authz.yaml"), "-f", filepath.Join(root, "samples/httpbin/httpbin.yaml"), "--ignore-not-found")
	})
	for _, provider := range []string{"sample-ext-authz-grpc", "sample-ext-authz-http"} {
		t.Run(provider, func(t *testing.T) {
			e.applyYAML(t, fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: default}
spec:
  targetRefs:
  - {kind: Service, group: "", name: httpbin}
  action: CUSTOM
  provider: {name: %s}
  rules:
  - to:
    - operation: {paths: ["/headers"]}
`, provider))
			eventually(t, "the authorizer denies /headers without x-ext-authz: allow", 60*time.Second, func() error {
				code, body := e.curl(t, "http://httpbin:8000/headers", "x-ext-authz: deny")
				if code != "403" || !strings.Contains(body, "denied by ext_authz") {
					return fmt.Errorf("HTTP %s %q, want the authorizer's 403", code, body)
				}
				return nil
			})
			code, body := e.curl(t, "http://httpbin:8000/headers", "x-ext-authz: allow", "x-ext-authz-check-result: forged")
			var seen struct{ Headers map[string][]string }
			if err := json.Unmarshal([]byte(body), &seen); code != "200" || err != nil {
				t.Fatalf("allowed: HTTP %s %q (%v), want 200 and httpbin's JSON", code, body, err)
			}
			if got := seen.Headers["X-Ext-Authz-Check-Result"]; len(got) != 1 || got[0] != "allowed" {
				t.Errorf("httpbin saw x-ext-authz-check-result %q, want the authorizer's [allowed] in place of the client's", got)
			}
			if code, _ := e.curl(t, "http://httpbin:8000/ip", "x-ext-authz: deny"); code != "200" {
				t.Errorf("/ip (not selected by the policy's rules): HTTP %s, want 200", code)
			}
		})
	}
}

// curl fetches url from the curl pod with the given headers (curl -H
// values) and returns the status and the body.
func (e *env) curl(t *testing.T, url string, headers ...string) (code, body string) {
	t.Helper()
	args := []string{"exec", "deploy/curl", "--", "curl", "-sS", "-m", "10", "-w", "\n%{http_code}"}
	for _, h := range headers {
		args = append(args, "-H", h)
	}
	out, _ := e.kubectl(append(args, url)...)
	i := strings.LastIndexByte(out, '\n')
	if i < 0 {
		return out, ""
	}
	return out[i+1:], out[:i]
}
