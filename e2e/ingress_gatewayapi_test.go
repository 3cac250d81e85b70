package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Gateway API ingress next to the gateway of TestIngressGateway: a
// Gateway of class weft, for which weft-control deploys a gateway of its
// own ("bookinfo-api-weft": Deployment and LoadBalancer Service in the
// Gateway's namespace, with its infrastructure labels and annotations),
// with an HTTP listener for one hostname and an HTTPRoute sending /details
// to the details service. The chart's shared gateway (istio=ingress) does
// not serve it: there /details with that host gets 404.
const ingressGatewayAPIYAML = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: bookinfo-api
spec:
  gatewayClassName: weft
  infrastructure:
    labels:
      team: bookinfo
    annotations:
      example.com/owner: bookinfo-team
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
	t.Run("Gateway API Gateway of class weft gets a gateway of its own", func(t *testing.T) {
		start := time.Now()
		e.applyYAML(t, ingressGatewayAPIYAML)
		e.mustKubectl(t, "wait", "--for=condition=Programmed", "gateway/bookinfo-api", "--timeout=120s")
		t.Logf("Gateway Programmed %s after it was applied", time.Since(start).Round(100*time.Millisecond))
		// Its objects, named as Istio names them, with the infrastructure
		// labels and annotations; the Service's ports are the listeners'.
		for _, kind := range []string{"serviceaccount", "deployment", "service"} {
			got := e.mustKubectl(t, "get", kind, "bookinfo-api-weft", "-o", `jsonpath={.metadata.labels.team} {.metadata.annotations.example\.com/owner} {.metadata.ownerReferences[0].name}`)
			if strings.TrimSpace(got) != "bookinfo bookinfo-team bookinfo-api" {
				t.Errorf("%s bookinfo-api-weft: team label, owner annotation, owner %q", kind, got)
			}
		}
		if p := strings.TrimSpace(e.mustKubectl(t, "get", "service", "bookinfo-api-weft", "-o", "jsonpath={.spec.ports[*].port}")); p != "80" {
			t.Errorf("Service ports %q, want the listener's 80", p)
		}
		addr := strings.TrimSpace(e.mustKubectl(t, "get", "gateway", "bookinfo-api", "-o", "jsonpath={.status.addresses[0].value}"))
		lb := strings.TrimSpace(e.mustKubectl(t, "get", "service", "bookinfo-api-weft", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"))
		if addr == "" || addr != lb {
			t.Fatalf("Gateway address %q, want its Service's load balancer address %q", addr, lb)
		}
		get := func(client *http.Client, hostPort, host string) (int, string, error) {
			req, err := http.NewRequest(http.MethodGet, "http://"+hostPort+"/details/0", nil)
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
		own := &http.Client{Timeout: 20 * time.Second}
		eventually(t, "/details/0 with Host bookinfo-api.example.com at "+addr, 60*time.Second, func() error {
			code, body, err := get(own, net.JoinHostPort(addr, "80"), "bookinfo-api.example.com")
			if err != nil {
				return err
			}
			if code != http.StatusOK || !strings.Contains(body, "William Shakespeare") {
				return fmt.Errorf("status %d: %.200s", code, body)
			}
			return nil
		})
		t.Logf("HTTPRoute served at the Gateway's address %s after it was applied", time.Since(start).Round(100*time.Millisecond))
		// Another host has no route there.
		if code, body, err := get(own, net.JoinHostPort(addr, "80"), "other.example.com"); err != nil || code != http.StatusNotFound {
			t.Fatalf("/details/0 with Host other.example.com: %d %v %.200s, want 404", code, err, body)
		}
		// The chart's shared gateway does not serve this Gateway.
		shared := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: e.c.DialContext}}
		if code, body, err := get(shared, hosts[0]+":"+port, "bookinfo-api.example.com"); err != nil || code != http.StatusNotFound {
			t.Fatalf("/details/0 with Host bookinfo-api.example.com on the chart's gateway: %d %v %.200s, want 404", code, err, body)
		}
		testServiceTypes(t, e, addr)
	})
}

// Services whose endpoints the selector does not give (the shapes of the
// Gateway API conformance test HTTPRouteServiceTypes): one without a
// selector, whose EndpointSlice someone else writes (here: the details
// pod, by targetRef), and a headless one. kube-proxy routes to both; so
// must the node agent (from an enrolled pod to the ClusterIP) and the
// gateway (an HTTPRoute rule per Service, chosen by header).
const serviceTypesYAML = `
apiVersion: v1
kind: Service
metadata:
  name: details-manual
spec:
  ports:
  - name: http
    port: 9080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: details-manual-1
  labels:
    kubernetes.io/service-name: details-manual
addressType: IPv4
ports:
- name: http
  port: 9080
  protocol: TCP
endpoints:
- addresses: [%s]
  conditions: {ready: true}
  targetRef: {kind: Pod, namespace: default, name: %s}
---
apiVersion: v1
kind: Service
metadata:
  name: details-headless
spec:
  clusterIP: None
  selector:
    app: details
  ports:
  - name: http
    port: 9080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: details-service-types
spec:
  parentRefs:
  - name: bookinfo-api
  rules:
  - matches:
    - path: {type: PathPrefix, value: /details}
      headers: [{name: x-backend, value: manual}]
    backendRefs: [{name: details-manual, port: 9080}]
  - matches:
    - path: {type: PathPrefix, value: /details}
      headers: [{name: x-backend, value: headless}]
    backendRefs: [{name: details-headless, port: 9080}]
`

func testServiceTypes(t *testing.T, e *env, gatewayAddr string) {
	t.Run("Services without a selector and headless Services, from the mesh and the gateway", func(t *testing.T) {
		e.mustKubectl(t, "apply", "-f", filepath.Join(repoRoot(), "samples/curl/curl.yaml"))
		pod := strings.Fields(e.mustKubectl(t, "get", "pods", "-l", "app=details", "-o", `jsonpath={.items[0].metadata.name} {.items[0].status.podIP}`))
		if len(pod) != 2 {
			t.Fatalf("details pod name and IP: %q", pod)
		}
		e.applyYAML(t, fmt.Sprintf(serviceTypesYAML, pod[1], pod[0]))
		e.mustKubectl(t, "wait", "--for=condition=Available", "deployment/curl", "--timeout=120s")
		eventually(t, "details-manual's ClusterIP from the enrolled curl pod", 60*time.Second, func() error {
			if code := e.httpCode(t, "default", "deploy/curl", "http://details-manual:9080/details/0"); code != "200" {
				return fmt.Errorf("status %s", code)
			}
			return nil
		})
		client := &http.Client{Timeout: 20 * time.Second}
		for _, backend := range []string{"manual", "headless"} {
			eventually(t, "/details/0 with x-backend: "+backend+" through the gateway", 60*time.Second, func() error {
				req, err := http.NewRequest(http.MethodGet, "http://"+net.JoinHostPort(gatewayAddr, "80")+"/details/0", nil)
				if err != nil {
					return err
				}
				req.Host = "bookinfo-api.example.com"
				req.Header.Set("x-backend", backend)
				resp, err := client.Do(req)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "William Shakespeare") {
					return fmt.Errorf("status %d: %.200s", resp.StatusCode, b)
				}
				return nil
			})
		}
	})
}
