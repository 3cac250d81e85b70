package e2e

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestIngressGateway is the Istio tutorials' "expose Bookinfo through the
// ingress gateway": charts/gateway installed as `helm install weft-ingress
// charts/gateway -n weft-ingress --create-namespace`, the tutorial's
// bookinfo-gateway.yaml applied unchanged, INGRESS_HOST/INGRESS_PORT read
// the tutorial's way (the http2 port's nodePort on a node address: the
// local cluster has no cloud load balancer), and the destination sees the
// gateway's own SPIFFE identity over mTLS.
func TestIngressGateway(t *testing.T) {
	e := startCluster(t, "e2eing", 2, 10)
	root := repoRoot()
	e.installControlPlaneWith(t, "-f", extAuthzValues) // the authorizers of the CUSTOM subtest
	e.installNodeAgent(t)
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/bookinfo/platform/kube/bookinfo.yaml"))
	e.mustKubectl(t, "wait", "--for=condition=Available", "deployment", "--all", "--timeout=180s")
	e.mustKubectl(t, "label", "namespace", "default", "istio.io/dataplane-mode=ambient")

	start := time.Now()
	e.mustRun(t, "helm", "install", "weft-ingress", filepath.Join(root, "charts/gateway"), "-n", "weft-ingress", "--create-namespace")
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/bookinfo/networking/bookinfo-gateway.yaml"))
	e.mustKubectl(t, "-n", "weft-ingress", "wait", "--for=condition=Available", "deployment/weft-ingress", "--timeout=120s")
	t.Logf("gateway installed and available %s after helm install", time.Since(start).Round(100*time.Millisecond))

	// The tutorial's lookups.
	port := strings.TrimSpace(e.mustKubectl(t, "-n", "weft-ingress", "get", "service", "weft-ingress",
		"-o", `jsonpath={.spec.ports[?(@.name=="http2")].nodePort}`))
	if !regexp.MustCompile(`^[0-9]+$`).MatchString(port) {
		t.Fatalf("http2 nodePort %q", port)
	}
	if p := strings.TrimSpace(e.mustKubectl(t, "-n", "weft-ingress", "get", "service", "weft-ingress",
		"-o", `jsonpath={.spec.ports[?(@.name=="http2")].port}`)); p != "80" {
		t.Fatalf("http2 port %q, want 80", p)
	}
	hosts := strings.Fields(e.mustKubectl(t, "get", "nodes", "-o", `jsonpath={.items[*].status.addresses[?(@.type=="InternalIP")].address}`))
	if len(hosts) != 2 {
		t.Fatalf("node addresses %v", hosts)
	}
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: e.c.DialContext}}
	get := func(host, path string) (int, string, error) {
		resp, err := client.Get("http://" + host + ":" + port + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}

	t.Run("GET /productpage through the gateway on every node's NodePort", func(t *testing.T) {
		for _, host := range hosts {
			began := time.Now()
			eventually(t, "productpage via "+host+":"+port, 90*time.Second, func() error {
				code, body, err := get(host, "/productpage")
				if err != nil {
					return err
				}
				if code != http.StatusOK || !strings.Contains(body, "Book Details") || !strings.Contains(body, "Book Reviews") {
					return fmt.Errorf("status %d: %s", code, pageSummary(body))
				}
				return nil
			})
			t.Logf("INGRESS_HOST=%s INGRESS_PORT=%s: /productpage 200 with Bookinfo after %s of retries (%s after helm install)",
				host, port, time.Since(began).Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
		}
		// The other routes of the VirtualService.
		if code, body, err := get(hosts[0], "/api/v1/products"); err != nil || code != http.StatusOK || !strings.Contains(body, "The Comedy of Errors") {
			t.Fatalf("/api/v1/products: %d %v %.200s", code, err, body)
		}
	})

	t.Run("an unmatched path is 404", func(t *testing.T) {
		for _, path := range []string{"/", "/reviews/0", "/productpage/extra"} {
			code, _, err := get(hosts[0], path)
			if err != nil || code != http.StatusNotFound {
				t.Fatalf("GET %s: %d %v, want 404", path, code, err)
			}
		}
	})

	t.Run("productpage's node agent sees the gateway's identity over mTLS", func(t *testing.T) {
		node := e.podNode(t, "default", "app=productpage")
		want := regexp.MustCompile(`istio_tcp_connections_opened_total\{[^}]*connection_security_policy="mutual_tls"[^}]*destination_workload="productpage-v1"[^}]*reporter="destination"[^}]*source_principal="spiffe://cluster.local/ns/weft-ingress/sa/weft-ingress"[^}]*\} [1-9]`)
		eventually(t, "destination metric with the gateway principal", 30*time.Second, func() error {
			m, err := e.agentMetrics(node)
			if err != nil {
				return err
			}
			if !want.MatchString(m) {
				return fmt.Errorf("no %s in %s's metrics:\n%s", want, node, grepLines(m, "productpage-v1"))
			}
			return nil
		})
	})

	t.Run("the gateway reports reporter=source with itself as the source", func(t *testing.T) {
		want := regexp.MustCompile(`istio_requests_total\{[^}]*destination_workload="productpage-v1"[^}]*reporter="source"[^}]*response_code="200"[^}]*source_principal="spiffe://cluster.local/ns/weft-ingress/sa/weft-ingress"[^}]*source_workload="weft-ingress"[^}]*\} [1-9]`)
		ip := strings.TrimSpace(e.mustKubectl(t, "-n", "weft-ingress", "get", "pods", "-l", "istio=ingress", "-o", "jsonpath={.items[0].status.podIP}"))
		m, err := e.httpGet(ip + ":15020/metrics")
		if err != nil {
			t.Fatal(err)
		}
		if !want.MatchString(m) {
			t.Fatalf("no %s in the gateway's metrics:\n%s", want, grepLines(m, "istio_requests_total"))
		}
	})

	t.Run("local rate limit: Istio's EnvoyFilter selecting the gateway pods", func(t *testing.T) {
		testIngressRateLimit(t, e, client, "http://"+hosts[0]+":"+port+"/api/v1/products")
	})

	t.Run("AuthorizationPolicy and RequestAuthentication selecting the gateway pods", func(t *testing.T) {
		testIngressAuthz(t, e, client, "http://"+hosts[0]+":"+port+"/productpage")
	})

	testIngressTLS(t, e, hosts)
	testIngressGatewayAPI(t, e, hosts, port)
	testIngressGatewayAPITLS(t, e, hosts)
	testIngressUseWaypoint(t, e, func(path string) (int, string, error) { return get(hosts[0], path) })
	testIngressTCP(t, e, hosts[0])
}
