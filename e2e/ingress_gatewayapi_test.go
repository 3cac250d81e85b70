package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Gateway API ingress on the gateway of TestIngressGateway: a Gateway of
// class weft (served by the chart's istio=ingress pods) with an HTTP
// listener for one hostname and an HTTPRoute sending /details to the
// details service. The Istio VirtualService on the same port does not
// route /details, so a 200 can only come from the HTTPRoute.
const ingressGatewayAPIYAML = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: bookinfo-api
spec:
  gatewayClassName: weft
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    hostname: bookinfo-api.example.com
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: details-api
spec:
  parentRefs:
  - name: bookinfo-api
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /details
    backendRefs:
    - name: details
      port: 9080
`

func testIngressGatewayAPI(t *testing.T, e *env, hosts []string, port string) {
	t.Run("Gateway API Gateway of class weft with an HTTPRoute", func(t *testing.T) {
		start := time.Now()
		e.applyYAML(t, ingressGatewayAPIYAML)
		client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: e.c.DialContext}}
		get := func(host string) (int, string, error) {
			req, err := http.NewRequest(http.MethodGet, "http://"+hosts[0]+":"+port+"/details/0", nil)
			if err != nil {
				return 0, "", err
			}
			req.Host = host
			resp, err := client.Do(req)
			if err != nil {
				return 0, "", err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b), err
		}
		eventually(t, "/details/0 with Host bookinfo-api.example.com", 60*time.Second, func() error {
			code, body, err := get("bookinfo-api.example.com")
			if err != nil {
				return err
			}
			if code != http.StatusOK || !strings.Contains(body, "William Shakespeare") {
				return fmt.Errorf("status %d: %.200s", code, body)
			}
			return nil
		})
		t.Logf("HTTPRoute served %s after the Gateway was applied", time.Since(start).Round(100*time.Millisecond))
		// weft-control's status: accepted and programmed (a ready pod of
		// the chart's gateway serves it).
		e.mustKubectl(t, "wait", "--for=condition=Accepted", "gateway/bookinfo-api", "--timeout=60s")
		e.mustKubectl(t, "wait", "--for=condition=Programmed", "gateway/bookinfo-api", "--timeout=60s")
		t.Logf("Gateway Accepted and Programmed %s after it was applied", time.Since(start).Round(100*time.Millisecond))
		// Another host on the same port gets the Istio VirtualService,
		// which has no /details route.
		if code, body, err := get("other.example.com"); err != nil || code != http.StatusNotFound {
			t.Fatalf("/details/0 with Host other.example.com: %d %v %.200s, want 404", code, err, body)
		}
	})
}
