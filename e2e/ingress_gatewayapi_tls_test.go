package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/weft-mesh/weft/pkg/testpki"
)

// An HTTPS listener on a Gateway of class weft in namespace gwtls-apps,
// served by the chart's gateway pods (annotation weft.io/gateway-selector,
// so Weft deploys no gateway for it), whose certificate is a Secret of
// weft-ingress (the gateway pods'
// namespace, where the gateway reads Secrets): served only once a
// ReferenceGrant in weft-ingress allows Gateways of gwtls-apps to use it.
// Its HTTPRoute sends to productpage in default, which a ReferenceGrant
// there allows. A second listener names a ConfigMap (not a Secret) and a
// second route a listener that does not exist: both show in status.
const ingressGatewayAPITLSYAML = `
apiVersion: v1
kind: Namespace
metadata:
  name: gwtls-apps
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: apps-https
  namespace: gwtls-apps
  annotations:
    weft.io/gateway-selector: istio=ingress
spec:
  gatewayClassName: weft
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    hostname: apps.example.com
    tls:
      mode: Terminate
      certificateRefs:
      - name: apps-credential
        namespace: weft-ingress
  - name: bad
    port: 443
    protocol: HTTPS
    hostname: bad.example.com
    tls:
      certificateRefs:
      - kind: ConfigMap
        group: ""
        name: not-a-secret
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata:
  name: gwtls-apps-routes
  namespace: default
spec:
  from:
  - group: gateway.networking.k8s.io
    kind: HTTPRoute
    namespace: gwtls-apps
  to:
  - group: ""
    kind: Service
    name: productpage
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: apps
  namespace: gwtls-apps
spec:
  parentRefs:
  - name: apps-https
    sectionName: https
  hostnames:
  - apps.example.com
  rules:
  - matches:
    - path:
        type: Exact
        value: /productpage
    backendRefs:
    - name: productpage
      namespace: default
      port: 9080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: no-such-listener
  namespace: gwtls-apps
spec:
  parentRefs:
  - name: apps-https
    sectionName: nope
  rules:
  - backendRefs:
    - name: productpage
      namespace: default
      port: 9080
`

// ingressGatewayAPIGrantYAML lets Gateways of gwtls-apps use the Secrets
// of weft-ingress.
const ingressGatewayAPIGrantYAML = `
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata:
  name: gwtls-apps-certificates
  namespace: weft-ingress
spec:
  from:
  - group: gateway.networking.k8s.io
    kind: Gateway
    namespace: gwtls-apps
  to:
  - group: ""
    kind: Secret
`

func testIngressGatewayAPITLS(t *testing.T, e *env, hosts []string) {
	testIngressGatewayAPIGrant(t, e, hosts)
	testIngressGatewayAPICredentialNamespaces(t, e, hosts)
}

func testIngressGatewayAPIGrant(t *testing.T, e *env, hosts []string) {
	t.Run("Gateway API HTTPS listener with a Secret of another namespace and a ReferenceGrant", func(t *testing.T) {
		ca := testpki.New(t)
		crt, key := ca.IssueFiles(t, t.TempDir(), "apps.example.com")
		e.mustKubectl(t, "-n", "weft-ingress", "create", "secret", "tls", "apps-credential", "--cert="+crt, "--key="+key)
		e.applyYAML(t, ingressGatewayAPITLSYAML)
		get := httpsGetter(t, e, hosts[0], "apps.example.com", ca)
		awaitCond := gatewayCondWaiter(t, e, "gwtls-apps", "apps-https")

		// Without the grant: not permitted, not served.
		awaitCond("https", "ResolvedRefs", "False/RefNotPermitted")
		awaitCond("https", "Programmed", "False/Invalid")
		if code, body, err := get(); err == nil {
			t.Fatalf("https://apps.example.com/productpage without a ReferenceGrant: %d %.200s; want the handshake refused", code, body)
		} else {
			t.Logf("without a ReferenceGrant: %v", err)
		}

		start := time.Now()
		e.applyYAML(t, ingressGatewayAPIGrantYAML)
		eventually(t, "https://apps.example.com/productpage with the ReferenceGrant", 60*time.Second, func() error {
			code, body, err := get()
			if err != nil {
				return err
			}
			if code != http.StatusOK || !strings.Contains(body, "Book Details") {
				return fmt.Errorf("status %d: %s", code, pageSummary(body))
			}
			return nil
		})
		t.Logf("served with the Secret's certificate %s after the ReferenceGrant was applied", time.Since(start).Round(100*time.Millisecond))
		awaitCond("https", "ResolvedRefs", "True/ResolvedRefs")
		awaitCond("https", "Programmed", "True/Programmed")

		// The bad listener shows in the listener's and the Gateway's status.
		awaitCond("bad", "ResolvedRefs", "False/InvalidCertificateRef")
		awaitCond("bad", "Programmed", "False/Invalid")
		awaitCond("", "Accepted", "True/ListenersNotValid")
		awaitCond("", "Programmed", "False/Invalid")
		if msg := e.mustKubectl(t, "-n", "gwtls-apps", "get", "gateway", "apps-https", "-o",
			`jsonpath={.status.conditions[?(@.type=="Programmed")].message}`); !strings.Contains(msg, "listeners not served: bad") {
			t.Errorf("Gateway Programmed message %q, want it to name listener bad", msg)
		}

		// Route status: attached (its cross-namespace backend resolves), and
		// a parentRef to a listener that does not exist is not accepted.
		routeCond := func(route, typ string) string {
			out, _ := e.kubectl("-n", "gwtls-apps", "get", "httproute", route, "-o",
				fmt.Sprintf(`jsonpath={.status.parents[0].conditions[?(@.type==%q)].status}/{.status.parents[0].conditions[?(@.type==%q)].reason}`, typ, typ))
			return strings.TrimSpace(out)
		}
		for _, w := range []struct{ route, typ, want string }{
			{"apps", "Accepted", "True/Accepted"}, {"apps", "ResolvedRefs", "True/ResolvedRefs"},
			{"no-such-listener", "Accepted", "False/NoMatchingParent"},
		} {
			eventually(t, fmt.Sprintf("HTTPRoute %s %s %s", w.route, w.typ, w.want), 60*time.Second, func() error {
				if got := routeCond(w.route, w.typ); got != w.want {
					return fmt.Errorf("%s is %q", w.typ, got)
				}
				return nil
			})
		}
	})
}

// httpsGetter GETs https://<host>/productpage through the https NodePort
// of node, as curl --resolve <host>:<port>:<node> --cacert ca.crt does.
func httpsGetter(t *testing.T, e *env, node, host string, ca *testpki.CA) func() (int, string, error) {
	t.Helper()
	port := strings.TrimSpace(e.mustKubectl(t, "-n", "weft-ingress", "get", "service", "weft-ingress",
		"-o", `jsonpath={.spec.ports[?(@.name=="https")].nodePort}`))
	if !regexp.MustCompile(`^[0-9]+$`).MatchString(port) {
		t.Fatalf("https nodePort %q", port)
	}
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: host, RootCAs: ca.Pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return e.c.DialContext(ctx, network, net.JoinHostPort(node, port))
		}}}
	return func() (int, string, error) {
		resp, err := client.Get("https://" + host + "/productpage")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
}

// gatewayCondWaiter waits until a listener's (or, with listener "", the
// Gateway's) condition typ is want ("<status>/<reason>").
func gatewayCondWaiter(t *testing.T, e *env, ns, gateway string) func(listener, typ, want string) {
	return func(listener, typ, want string) {
		t.Helper()
		path := fmt.Sprintf(`{.status.conditions[?(@.type==%q)].status}/{.status.conditions[?(@.type==%q)].reason}`, typ, typ)
		if listener != "" {
			path = fmt.Sprintf(`{.status.listeners[?(@.name==%q)].conditions[?(@.type==%q)].status}/{.status.listeners[?(@.name==%q)].conditions[?(@.type==%q)].reason}`,
				listener, typ, listener, typ)
		}
		eventually(t, fmt.Sprintf("Gateway %s/%s listener %q %s %s", ns, gateway, listener, typ, want), 60*time.Second, func() error {
			out, err := e.kubectl("-n", ns, "get", "gateway", gateway, "-o", "jsonpath="+path)
			if got := strings.TrimSpace(out); err != nil || got != want {
				return fmt.Errorf("%s is %q (%v)", typ, got, err)
			}
			return nil
		})
	}
}

// ingressGatewayAPILocalYAML: a Gateway whose Secret is in its own
// namespace, gwtls-apps (no ReferenceGrant needed), served by the chart's
// gateway (annotation), which reads it only once charts/gateway has it in
// credentialNamespaces.
const ingressGatewayAPILocalYAML = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: local-https
  namespace: gwtls-apps
  annotations:
    weft.io/gateway-selector: istio=ingress
spec:
  gatewayClassName: weft
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    hostname: local.example.com
    tls:
      certificateRefs:
      - name: local-credential
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: local
  namespace: gwtls-apps
spec:
  parentRefs:
  - name: local-https
  hostnames:
  - local.example.com
  rules:
  - backendRefs:
    - name: productpage
      namespace: default
      port: 9080
`

// testIngressGatewayAPICredentialNamespaces: a Secret of the Gateway's own
// namespace is InvalidCertificateRef (the gateway does not read that
// namespace) and refused until `helm upgrade --set
// credentialNamespaces={gwtls-apps}` lets the gateway (and weft-control's
// check) read it. It upgrades the gateway chart, so it runs last.
func testIngressGatewayAPICredentialNamespaces(t *testing.T, e *env, hosts []string) {
	t.Run("Gateway API HTTPS listener with a Secret of the Gateway's namespace, read with credentialNamespaces", func(t *testing.T) {
		ca := testpki.New(t)
		crt, key := ca.IssueFiles(t, t.TempDir(), "local.example.com")
		e.mustKubectl(t, "-n", "gwtls-apps", "create", "secret", "tls", "local-credential", "--cert="+crt, "--key="+key)
		e.applyYAML(t, ingressGatewayAPILocalYAML)
		get := httpsGetter(t, e, hosts[0], "local.example.com", ca)
		awaitCond := gatewayCondWaiter(t, e, "gwtls-apps", "local-https")
		awaitCond("https", "ResolvedRefs", "False/InvalidCertificateRef")
		if code, body, err := get(); err == nil {
			t.Fatalf("https://local.example.com/productpage before credentialNamespaces: %d %.200s; want the handshake refused", code, body)
		} else {
			t.Logf("before credentialNamespaces: %v", err)
		}

		start := time.Now()
		e.mustRun(t, "helm", "upgrade", "weft-ingress", filepath.Join(repoRoot(), "charts/gateway"), "-n", "weft-ingress",
			"--reuse-values", "--set", "credentialNamespaces={gwtls-apps}")
		eventually(t, "https://local.example.com/productpage after the upgrade", 120*time.Second, func() error {
			code, body, err := get()
			if err != nil {
				return err
			}
			if code != http.StatusOK || !strings.Contains(body, "Book Details") {
				return fmt.Errorf("status %d: %s", code, pageSummary(body))
			}
			return nil
		})
		t.Logf("served %s after helm upgrade", time.Since(start).Round(100*time.Millisecond))
		awaitCond("https", "ResolvedRefs", "True/ResolvedRefs")
		awaitCond("", "Programmed", "True/Programmed")
	})
}
