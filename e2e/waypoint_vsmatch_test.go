package e2e

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/weft-mesh/weft/pkg/testpki"
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

// tlsRouteYAML: Service secure (port 443, TLS, served by secure-b) with a
// VirtualService tls route sending SNI a.example.com and *.a.example.com
// to secure-a. Each backend terminates TLS itself with a certificate
// naming its host: the certificate a client sees tells which one it
// reached through the waypoint.
const tlsRouteYAML = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure, namespace: default}
spec:
  hosts: [secure]
  tls:
  - match:
    - port: 443
      sniHosts: [a.example.com, "*.a.example.com"]
    route:
    - destination: {host: secure-a, port: {number: 443}}
---
apiVersion: v1
kind: Service
metadata: {name: secure, namespace: default}
spec:
  selector: {app: secure-b}
  ports:
  - {name: https, port: 443, targetPort: 9443}
---
apiVersion: v1
kind: Service
metadata: {name: secure-a, namespace: default}
spec:
  selector: {app: secure-a}
  ports:
  - {name: https, port: 443, targetPort: 9443}
`

// tlsBackendYAML (also the ingress passthrough backend) is a details
// server terminating TLS on 9443 with the Secret %[1]s-cert (app %[1]s).
const tlsBackendYAML = `apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s, namespace: default}
spec:
  replicas: 1
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
    spec:
      containers:
      - name: details
        image: docker.io/istio/examples-bookinfo-details-v1
        args: ["--service=details", "--version=v1", "--port=9443", "--tls-cert=/etc/tls/tls.crt", "--tls-key=/etc/tls/tls.key"]
        ports:
        - containerPort: 9443
        volumeMounts:
        - {name: tls, mountPath: /etc/tls, readOnly: true}
      volumes:
      - name: tls
        secret: {secretName: %[1]s-cert}
`

// testWaypointTLSRoute: a VirtualService tls route at the waypoint sends
// a TLS connection by its SNI (exact and wildcard) without terminating it;
// another SNI goes to the service.
func testWaypointTLSRoute(t *testing.T, e *env) {
	ca := testpki.New(t)
	dir := t.TempDir()
	for app, host := range map[string]string{"secure-a": "a.example.com", "secure-b": "b.example.com"} {
		crt, key := ca.IssueFiles(t, dir, host)
		e.mustKubectl(t, "create", "secret", "tls", app+"-cert", "--cert="+crt, "--key="+key)
		e.applyYAML(t, fmt.Sprintf(tlsBackendYAML, app))
		t.Cleanup(func() { e.kubectl("delete", "deployment/"+app, "secret/"+app+"-cert", "--ignore-not-found") })
	}
	e.applyYAML(t, tlsRouteYAML)
	t.Cleanup(func() {
		e.kubectl("delete", "virtualservice/secure", "service/secure", "service/secure-a", "--ignore-not-found")
	})
	e.mustKubectl(t, "wait", "--for=condition=Available", "deployment/secure-a", "deployment/secure-b", "--timeout=120s")
	// served is the certificate name the server reached with SNI sni
	// presents (curl -k: the route, not the trust, is under test).
	served := func(sni string) string {
		out, _ := e.kubectl("exec", "deploy/curl", "--", "sh", "-c", fmt.Sprintf(
			`curl -sk -v -m 10 -o /dev/null --connect-to ::secure.default.svc.cluster.local:443 https://%s/details/0 2>&1 | grep -i 'subject:'`, sni))
		if m := regexp.MustCompile(`CN ?= ?([a-z0-9.-]+)`).FindStringSubmatch(out); m != nil {
			return m[1]
		}
		return "none (" + strings.TrimSpace(out) + ")"
	}
	want := map[string]string{"a.example.com": "a.example.com", "x.a.example.com": "a.example.com", "b.example.com": "b.example.com"}
	eventually(t, "SNI routes to secure-a, the rest to secure", 90*time.Second, func() error {
		for sni, cn := range want {
			if got := served(sni); got != cn {
				return fmt.Errorf("SNI %s: served %s, want %s", sni, got, cn)
			}
		}
		return nil
	})
	for range 3 { // each a new connection: no reuse hides a wrong choice
		for sni, cn := range want {
			if got := served(sni); got != cn {
				t.Fatalf("SNI %s: served %s, want %s", sni, got, cn)
			}
		}
	}
}
