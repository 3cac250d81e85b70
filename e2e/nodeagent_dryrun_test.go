package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// testNodeAgentDryRun: an L4 DENY policy with istio.io/dry-run on ratings,
// matching every connection, is enforced by nobody: ratings keeps
// answering the curl pod, and ratings' node agent logs (when the
// connection completes) and counts the would-be denials. The request goes
// to the pod's IP so that it is a connection of its own, not one the
// waypoint keeps open.
func testNodeAgentDryRun(t *testing.T, e *env) {
	e.applyYAML(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-deny-ratings
  namespace: default
  annotations: {istio.io/dry-run: "true"}
spec:
  selector:
    matchLabels: {app: ratings}
  action: DENY
  rules:
  - {}
`)
	t.Cleanup(func() { e.kubectl("delete", "authorizationpolicy", "dry-deny-ratings", "--ignore-not-found") })
	node := e.podNode(t, "default", "app=ratings")
	ip := strings.TrimSpace(e.mustKubectl(t, "get", "pods", "-l", "app=ratings", "-o", "jsonpath={.items[0].status.podIP}"))
	const metric = `weft_node_agent_rbac_dry_run_total{decision="denied"}`
	const logged = `"policy.dry_run":"denied[default/dry-deny-ratings]"`
	eventually(t, "ratings answers; its node agent logs and counts the would-be denial", 60*time.Second, func() error {
		if code := e.httpCode(t, "default", "deploy/curl", "http://"+ip+":9080/ratings/0"); code != "200" {
			return fmt.Errorf("ratings answered HTTP %s under a dry-run DENY, want 200", code)
		}
		if n, err := e.agentMetric(node, metric); err != nil || n == 0 {
			return fmt.Errorf("%s on %s: %v %v", metric, node, n, err)
		}
		logs, err := e.kubectl("-n", controlNS, "logs", "-l", "app.kubernetes.io/name=weft-node-agent", "--tail=-1")
		if err != nil || !strings.Contains(logs, logged) {
			return fmt.Errorf("no node agent logged %s (%v)", logged, err)
		}
		return nil
	})
}
