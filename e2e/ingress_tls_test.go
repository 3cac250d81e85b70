package e2e

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/weft-mesh/weft/pkg/testpki"
)

// The Istio "secure gateways" and "ingress SNI passthrough" tasks on the
// gateway of TestIngressGateway: an HTTPS server whose certificate is the
// Secret credentialName names (read by the gateway from its own
// namespace), and a TLS PASSTHROUGH server routing by SNI to a mesh
// service that terminates TLS itself, both on port 443.
const ingressTLSYAML = `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-https
spec:
  selector:
    istio: ingress
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    tls:
      mode: SIMPLE
      credentialName: bookinfo-credential
    hosts:
    - bookinfo.example.com
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo-https
spec:
  hosts:
  - bookinfo.example.com
  gateways:
  - bookinfo-https
  http:
  - match:
    - uri:
        exact: /productpage
    - uri:
        prefix: /static
    route:
    - destination:
        host: productpage
        port:
          number: 9080
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: secure-passthrough
spec:
  selector:
    istio: ingress
  servers:
  - port:
      number: 443
      name: tls
      protocol: TLS
    tls:
      mode: PASSTHROUGH
    hosts:
    - secure.example.com
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: secure-passthrough
spec:
  hosts:
  - secure.example.com
  gateways:
  - secure-passthrough
  tls:
  - match:
    - port: 443
      sniHosts:
      - secure.example.com
    route:
    - destination:
        host: secure.default.svc.cluster.local
        port:
          number: 443
---
apiVersion: v1
kind: Service
metadata:
  name: secure
spec:
  selector:
    app: secure
  ports:
  - name: https
    port: 443
    targetPort: 9443
`

func testIngressTLS(t *testing.T, e *env, hosts []string) {
	ca := testpki.New(t)
	dir := t.TempDir()
	crt, key := ca.IssueFiles(t, dir, "bookinfo.example.com")
	e.mustKubectl(t, "-n", "weft-ingress", "create", "secret", "tls", "bookinfo-credential", "--cert="+crt, "--key="+key)
	bcrt, bkey := ca.IssueFiles(t, dir, "secure.example.com")
	e.mustKubectl(t, "-n", "default", "create", "secret", "tls", "secure-cert", "--cert="+bcrt, "--key="+bkey)
	start := time.Now()
	e.applyYAML(t, ingressTLSYAML)
	e.applyYAML(t, fmt.Sprintf(tlsBackendYAML, "secure"))
	e.mustKubectl(t, "wait", "--for=condition=Available", "deployment/secure", "--timeout=120s")

	port := strings.TrimSpace(e.mustKubectl(t, "-n", "weft-ingress", "get", "service", "weft-ingress",
		"-o", `jsonpath={.spec.ports[?(@.name=="https")].nodePort}`))
	if !regexp.MustCompile(`^[0-9]+$`).MatchString(port) {
		t.Fatalf("https nodePort %q", port)
	}
	// A client resolving every name to the https NodePort of a node, as
	// curl --resolve does in the Istio tasks; it trusts the test CA only.
	client := func(host, sni string) *http.Client {
		return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
			ForceAttemptHTTP2: true,
			TLSClientConfig:   &tls.Config{ServerName: sni, RootCAs: ca.Pool},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return e.c.DialContext(ctx, network, net.JoinHostPort(host, port))
			}}}
	}
	get := func(host, sni, url string) (*http.Response, string, error) {
		resp, err := client(host, sni).Get(url)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, string(b), err
	}

	t.Run("HTTPS with the credentialName Secret's certificate", func(t *testing.T) {
		for _, host := range hosts {
			began := time.Now()
			eventually(t, "https://bookinfo.example.com/productpage via "+host+":"+port, 90*time.Second, func() error {
				resp, body, err := get(host, "bookinfo.example.com", "https://bookinfo.example.com/productpage")
				if err != nil {
					return err
				}
				if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Book Details") {
					return fmt.Errorf("status %d: %s", resp.StatusCode, pageSummary(body))
				}
				if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != "bookinfo.example.com" {
					return fmt.Errorf("served certificate %q", cn)
				}
				return nil
			})
			t.Logf("https://bookinfo.example.com/productpage via %s:%s: 200 after %s of retries (%s after the Gateway was applied)",
				host, port, time.Since(began).Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
		}
	})

	t.Run("an SNI no server names fails the handshake", func(t *testing.T) {
		_, _, err := get(hosts[0], "unknown.example.com", "https://unknown.example.com/productpage")
		if err == nil {
			t.Fatal("handshake with SNI unknown.example.com succeeded; want it refused")
		}
		t.Logf("unknown SNI: %v", err)
	})

	t.Run("PASSTHROUGH reaches the mesh service's own TLS by SNI", func(t *testing.T) {
		began := time.Now()
		eventually(t, "https://secure.example.com/details/0 via the gateway", 90*time.Second, func() error {
			resp, body, err := get(hosts[0], "secure.example.com", "https://secure.example.com/details/0")
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK || !strings.Contains(body, "William Shakespeare") {
				return fmt.Errorf("status %d: %.200s", resp.StatusCode, body)
			}
			// The certificate is the backend's: the gateway has no key
			// for this name and forwarded the TLS bytes untouched.
			if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != "secure.example.com" {
				return fmt.Errorf("served certificate %q, want the backend's secure.example.com", cn)
			}
			return nil
		})
		t.Logf("passthrough: 200 from the backend's TLS after %s", time.Since(began).Round(100*time.Millisecond))
	})

	t.Run("the gateway reads the renewed credential", func(t *testing.T) {
		crt2, key2 := ca.IssueFiles(t, t.TempDir(), "bookinfo.example.com")
		secret := e.mustKubectl(t, "-n", "weft-ingress", "create", "secret", "tls", "bookinfo-credential",
			"--cert="+crt2, "--key="+key2, "--dry-run=client", "-o", "yaml")
		e.applyYAML(t, secret)
		want, err := os.ReadFile(crt2)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(want)
		began := time.Now()
		eventually(t, "the renewed certificate served", 60*time.Second, func() error {
			resp, _, err := get(hosts[0], "bookinfo.example.com", "https://bookinfo.example.com/productpage")
			if err != nil {
				return err
			}
			if got := resp.TLS.PeerCertificates[0].Raw; string(got) != string(block.Bytes) {
				return fmt.Errorf("still the old certificate (serial %s)", resp.TLS.PeerCertificates[0].SerialNumber)
			}
			return nil
		})
		t.Logf("renewed certificate served %s after the Secret update", time.Since(began).Round(100*time.Millisecond))
	})

	testIngressMutualTLS(t, e, ca, hosts[0], port)

	t.Run("a missing credential refuses its server only", func(t *testing.T) {
		e.applyYAML(t, `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: missing-credential
spec:
  selector:
    istio: ingress
  servers:
  - port: {number: 443, name: https-missing, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: missing-credential}
    hosts: [missing.example.com]
`)
		ip := strings.TrimSpace(e.mustKubectl(t, "-n", "weft-ingress", "get", "pods", "-l", "istio=ingress", "-o", "jsonpath={.items[0].status.podIP}"))
		gauge := regexp.MustCompile(`weft_gateway_credential_ready\{credential_name="missing-credential"\} 0`)
		eventually(t, "the missing credential reported", 60*time.Second, func() error {
			_, _, err := get(hosts[0], "missing.example.com", "https://missing.example.com/productpage")
			if err == nil {
				return fmt.Errorf("handshake for missing.example.com succeeded")
			}
			m, merr := e.httpGet(ip + ":15020/metrics")
			if merr != nil {
				return merr
			}
			if !gauge.MatchString(m) {
				return fmt.Errorf("handshake: %v; no %s in the gateway's metrics:\n%s", err, gauge, grepLines(m, "weft_gateway"))
			}
			return nil
		})
		if resp, _, err := get(hosts[0], "bookinfo.example.com", "https://bookinfo.example.com/productpage"); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("bookinfo.example.com next to the broken server: %v %v", resp, err)
		}
	})
}

// Istio's "mutual TLS ingress gateway" task: httpbin behind an HTTPS
// server of tls.mode MUTUAL whose credential is a generic Secret holding
// the server's certificate and key and the CA of client certificates
// (ca.crt). Attacked: no client certificate, one of another CA, one with
// a SAN the server does not accept, and a forged X-Forwarded-Client-Cert.
const ingressMutualYAML = `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: httpbin-mutual
spec:
  selector:
    istio: ingress
  servers:
  - port:
      number: 443
      name: https-mutual
      protocol: HTTPS
    tls:
      mode: MUTUAL
      credentialName: httpbin-credential
      subjectAltNames: [client.example.com]
    hosts:
    - httpbin.example.com
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin-mutual
spec:
  hosts: [httpbin.example.com]
  gateways: [httpbin-mutual]
  http:
  - route:
    - destination:
        host: httpbin
        port:
          number: 8000
`

func testIngressMutualTLS(t *testing.T, e *env, ca *testpki.CA, host, port string) {
	t.Run("MUTUAL: only a client certificate of the credential's CA and SANs is served", func(t *testing.T) {
		clientCA, otherCA := testpki.New(t), testpki.New(t)
		dir := t.TempDir()
		crt, key := ca.IssueFiles(t, dir, "httpbin.example.com")
		cafile := dir + "/client-ca.crt"
		if err := os.WriteFile(cafile, clientCA.CertPEM(), 0o600); err != nil {
			t.Fatal(err)
		}
		e.mustKubectl(t, "-n", "weft-ingress", "create", "secret", "generic", "httpbin-credential",
			"--from-file=tls.crt="+crt, "--from-file=tls.key="+key, "--from-file=ca.crt="+cafile)
		e.mustKubectl(t, "apply", "-f", filepath.Join(repoRoot(), "samples/httpbin/httpbin.yaml"))
		e.applyYAML(t, ingressMutualYAML)
		e.mustKubectl(t, "wait", "--for=condition=Available", "deployment/httpbin", "--timeout=120s")
		pair := func(c *testpki.CA, name string) *tls.Certificate {
			certPEM, keyPEM := c.Issue(t, name)
			p, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			return &p
		}
		get := func(cert *tls.Certificate) (int, string, error) {
			cfg := &tls.Config{ServerName: "httpbin.example.com", RootCAs: ca.Pool}
			if cert != nil {
				cfg.Certificates = []tls.Certificate{*cert}
			}
			c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg,
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return e.c.DialContext(ctx, network, net.JoinHostPort(host, port))
				}}}
			req, _ := http.NewRequest(http.MethodGet, "https://httpbin.example.com/headers", nil)
			req.Header.Set("X-Forwarded-Client-Cert", `Hash=forged;Subject="CN=admin"`)
			resp, err := c.Do(req)
			if err != nil {
				return 0, "", err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b), err
		}
		good := pair(clientCA, "client.example.com")
		eventually(t, "httpbin with the client certificate", 90*time.Second, func() error {
			code, body, err := get(good)
			if err != nil {
				return err
			}
			if code != http.StatusOK {
				return fmt.Errorf("status %d: %.200s", code, body)
			}
			// httpbin echoes the header: the gateway's, for the verified certificate.
			if !strings.Contains(body, `DNS=client.example.com`) || strings.Contains(body, "forged") {
				return fmt.Errorf("X-Forwarded-Client-Cert as httpbin saw it: %.400s", body)
			}
			return nil
		})
		for name, cert := range map[string]*tls.Certificate{
			"no client certificate":            nil,
			"a certificate of another CA":      pair(otherCA, "client.example.com"),
			"a SAN the server does not accept": pair(clientCA, "intruder.example.com"),
		} {
			if code, _, err := get(cert); err == nil {
				t.Errorf("%s: status %d, want the handshake refused", name, code)
			}
		}
	})
}
