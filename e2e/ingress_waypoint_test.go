package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// productpage gets a waypoint of its own and an AuthorizationPolicy on it
// that denies /api/v1/products. Ingress traffic goes straight to the pods,
// past the waypoint and its policy, as in Istio, until the Service says
// istio.io/ingress-use-waypoint: then the gateway sends through the
// waypoint (HBONE to the waypoint's pods, CONNECT to the VIP) and the
// policy applies to it.
const ingressWaypointYAML = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: productpage-waypoint
  labels: {istio.io/waypoint-for: service}
spec:
  gatewayClassName: weft-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: productpage-no-api
spec:
  targetRefs:
  - {kind: Service, group: "", name: productpage}
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/api/v1/products"]
`

func testIngressUseWaypoint(t *testing.T, e *env, get func(path string) (int, string, error)) {
	t.Run("ingress-use-waypoint label: ingress passes the Service's waypoint and its policy", func(t *testing.T) {
		e.mustKubectl(t, "apply", "-f", filepath.Join(repoRoot(), "samples/curl/curl.yaml"))
		e.applyYAML(t, ingressWaypointYAML)
		e.mustKubectl(t, "wait", "--for=condition=Available", "deployment/curl", "--timeout=120s")
		e.mustKubectl(t, "wait", "--for=condition=Programmed", "gateway/productpage-waypoint", "--timeout=120s")
		e.mustKubectl(t, "label", "service", "productpage", "istio.io/use-waypoint=productpage-waypoint")
		t.Cleanup(func() {
			e.kubectl("label", "service", "productpage", "istio.io/use-waypoint-", "istio.io/ingress-use-waypoint-")
			e.kubectl("delete", "authorizationpolicy", "productpage-no-api", "--ignore-not-found")
		})
		status := func(path string, want int) func() error {
			return func() error {
				code, body, err := get(path)
				if err != nil {
					return err
				}
				if code != want {
					return fmt.Errorf("status %d, want %d: %.200s", code, want, body)
				}
				return nil
			}
		}
		// From the mesh, the waypoint denies it: the policy is in force.
		eventually(t, "/api/v1/products from the curl pod denied by the waypoint", 60*time.Second, func() error {
			if code := e.httpCode(t, "default", "deploy/curl", "http://productpage:9080/api/v1/products"); code != "403" {
				return fmt.Errorf("status %s, want 403", code)
			}
			return nil
		})
		// The ingress goes around it without the label (Istio's default)...
		if err := status("/api/v1/products", http.StatusOK)(); err != nil {
			t.Fatalf("/api/v1/products through the ingress before istio.io/ingress-use-waypoint: %v", err)
		}
		// ... and through it with the label.
		e.mustKubectl(t, "label", "service", "productpage", "istio.io/ingress-use-waypoint=true")
		eventually(t, "/api/v1/products through the ingress denied by the waypoint", 60*time.Second, status("/api/v1/products", http.StatusForbidden))
		eventually(t, "/productpage through the ingress and the waypoint", 30*time.Second, status("/productpage", http.StatusOK))
		m, err := e.podMetrics(t, "gateway.networking.k8s.io/gateway-name=productpage-waypoint")
		if err != nil {
			t.Fatal(err)
		}
		counted := false
		for _, l := range strings.Split(m, "\n") {
			counted = counted || strings.HasPrefix(l, "istio_requests_total{") &&
				strings.Contains(l, `destination_service="productpage.default.svc.cluster.local"`) && strings.Contains(l, `source_workload="weft-ingress"`)
		}
		if !counted {
			t.Errorf("productpage-waypoint counted no request from the ingress gateway (source_workload weft-ingress)")
		}
	})
}
