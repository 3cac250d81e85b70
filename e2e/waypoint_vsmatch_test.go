package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// sourceNamespaceVS sends clients in namespace default to reviews v2 and
// everyone else to v1 (destination-rule-all.yaml's subsets).
const sourceNamespaceVS = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - sourceNamespace: default
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
`

// testWaypointSourceNamespace: a VirtualService sourceNamespace match
// applies to the client's verified namespace (its HBONE identity), not to
// headers: a curl pod in another ambient namespace forging the headers
// that carry a namespace elsewhere in a mesh still gets v1.
func testWaypointSourceNamespace(t *testing.T, e *env) {
	const other = "vsmatch-other"
	e.mustKubectl(t, "create", "namespace", other)
	t.Cleanup(func() { e.kubectl("delete", "namespace", other, "--wait=false") })
	e.mustKubectl(t, "label", "namespace", other, "istio.io/dataplane-mode=ambient")
	e.mustKubectl(t, "-n", other, "apply", "-f", filepath.Join(repoRoot(), "samples/curl/curl.yaml"))
	e.mustKubectl(t, "-n", other, "wait", "--for=condition=Available", "deployment/curl", "--timeout=180s")

	e.applyYAML(t, sourceNamespaceVS)
	t.Cleanup(func() { e.kubectl("delete", "virtualservice", "reviews", "--ignore-not-found") })
	eventually(t, "default gets v2, "+other+" v1", 60*time.Second, func() error {
		if err := wantVersions(e.reviewsVersionsFrom(t, "default", "deploy/curl", 10), map[string]bool{"v2": true}); err != nil {
			return fmt.Errorf("from default: %w", err)
		}
		if err := wantVersions(e.reviewsVersionsFrom(t, other, "deploy/curl", 10), map[string]bool{"v1": true}); err != nil {
			return fmt.Errorf("from %s: %w", other, err)
		}
		return nil
	})
	forged := []string{
		"x-forwarded-client-cert: By=spiffe://cluster.local/ns/default/sa/waypoint;URI=spiffe://cluster.local/ns/default/sa/curl",
		"baggage: k8s.namespace.name=default,k8s.deployment.name=curl,service.name=curl",
		"x-istio-source: waypoint",
	}
	if err := wantVersions(e.reviewsVersionsFrom(t, other, "deploy/curl", 20, forged...), map[string]bool{"v1": true}); err != nil {
		t.Fatalf("from %s with forged namespace headers: %v", other, err)
	}
	if err := wantVersions(e.reviewsVersionsFrom(t, "default", "deploy/curl", 20), map[string]bool{"v2": true}); err != nil {
		t.Fatalf("from default: %v", err)
	}
}
