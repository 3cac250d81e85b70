package e2e

import (
	"testing"
	"time"
)

// VirtualService delegation across namespaces: the reviews root in
// default hands jason's requests to a delegate owned by another team's
// namespace, which sends them to v3; everyone else gets the root's own v1.
const delegateYAML = `
apiVersion: v1
kind: Namespace
metadata:
  name: reviews-team
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    delegate:
      name: reviews-jason
      namespace: reviews-team
  - route:
    - destination: {host: reviews, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews-jason
  namespace: reviews-team
spec:
  http:
  - route:
    - destination: {host: reviews.default.svc.cluster.local, subset: v3}
`

func testWaypointDelegate(t *testing.T, e *env) {
	t.Run("VirtualService delegate: a team's delegate routes jason to v3", func(t *testing.T) {
		e.applyYAML(t, delegateYAML)
		t.Cleanup(func() { e.kubectl("delete", "namespace", "reviews-team", "--wait=false") })
		eventually(t, "jason on v3 through the delegate", 60*time.Second, func() error {
			return wantVersions(e.reviewsVersions(t, "jason", 20), map[string]bool{"v3": true})
		})
		if err := wantVersions(e.reviewsVersions(t, "", 20), map[string]bool{"v1": true}); err != nil {
			t.Fatalf("without end-user jason: %v", err)
		}
	})
}
