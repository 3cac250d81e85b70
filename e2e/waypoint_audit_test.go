package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// testWaypointAudit: an AUDIT AuthorizationPolicy on productpage marks the
// matching requests in the waypoint's access log and denies nothing.
func testWaypointAudit(t *testing.T, e *env) {
	e.applyYAML(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-productpage, namespace: default}
spec:
  targetRefs:
  - {kind: Service, group: "", name: productpage}
  action: AUDIT
  rules:
  - to:
    - operation: {paths: ["/health"]}
`)
	t.Cleanup(func() { e.kubectl("delete", "authorizationpolicy", "audit-productpage", "--ignore-not-found") })
	const audited = `"rbac_audit":"ns[default]-policy[audit-productpage]-rule[0]"`
	eventually(t, "the waypoint logs the audited request", 60*time.Second, func() error {
		if code := e.httpCode(t, "default", "deploy/curl", "http://productpage:9080/health"); code != "200" {
			return fmt.Errorf("audited request: HTTP %s, want 200 (AUDIT never denies)", code)
		}
		logs, err := e.kubectl("logs", "-l", "gateway.networking.k8s.io/gateway-name=waypoint", "--tail=200")
		if err != nil || !strings.Contains(logs, audited) {
			return fmt.Errorf("waypoint access log has no %s (%v)", audited, err)
		}
		return nil
	})
}
