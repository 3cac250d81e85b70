package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// egressMutualDR is Istio's mutual TLS origination DestinationRule for
// the external host's port 443, accepting a server certificate that names
// %s.
const egressMutualDR = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: originate-tls-for-external
spec:
  host: external.example.com
  trafficPolicy:
    portLevelSettings:
    - port:
        number: 443
      tls:
        mode: MUTUAL
        credentialName: client-credential
        sni: external.example.com
        subjectAltNames:
        - %s
`

// testEgressMutualTLS is Istio's "mutual TLS origination for egress
// traffic" on TestEgressGateway's setup: a generic Secret
// client-credential in the egress gateway's namespace (tls.crt, tls.key
// and ca.crt, the external server's CA) and the DestinationRule above.
// The external server sees the credential's client certificate on every
// request. Attacked: subjectAltNames naming another host; the gateway
// refuses the server (503) and sends it nothing. restore (the SIMPLE
// DestinationRule) is applied at the end.
func testEgressMutualTLS(t *testing.T, e *env, ext *externalServer, restore string) {
	const clientName = "egress-client.example.com"
	dir, err := os.MkdirTemp("", "weft-e2e-mtls-") // kubectl --from-file splits on commas
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	certFile, keyFile := ext.ca.ca.IssueFiles(t, dir, clientName)
	e.mustKubectl(t, "-n", "weft-egress", "create", "secret", "generic", "client-credential",
		"--from-file=tls.crt="+certFile, "--from-file=tls.key="+keyFile, "--from-file=ca.crt="+ext.caFile)
	defer e.kubectl("-n", "weft-egress", "delete", "secret", "client-credential")
	status := func() string {
		out, _ := e.kubectl("exec", "deploy/curl", "--", "curl", "-sS", "-o", "/dev/null", "-m", "10", "-w", "%{http_code}",
			"--resolve", egressHost+":80:"+egressVIP, "http://"+egressHost+"/")
		return strings.TrimSpace(out)
	}
	lastCert := func() (string, int) {
		seen, _ := ext.snapshot()
		if len(seen) == 0 {
			return "", 0
		}
		return seen[len(seen)-1].clientCert, len(seen)
	}

	e.applyYAML(t, fmt.Sprintf(egressMutualDR, egressHost))
	eventually(t, "the external server sees the credential's client certificate", 60*time.Second, func() error {
		if code := status(); code != "200" {
			return fmt.Errorf("status %s", code)
		}
		if name, _ := lastCert(); name != clientName {
			return fmt.Errorf("client certificate %q, want %s", name, clientName)
		}
		return nil
	})
	_, before := lastCert()
	for range 3 {
		if code := status(); code != "200" {
			t.Fatalf("status %s after convergence", code)
		}
	}
	seen, _ := ext.snapshot()
	for _, r := range seen[before:] {
		if r.clientCert != clientName || r.sni != egressHost {
			t.Fatalf("request with client certificate %q and SNI %q; want %s and %s", r.clientCert, r.sni, clientName, egressHost)
		}
	}

	e.applyYAML(t, fmt.Sprintf(egressMutualDR, "impostor.example.com"))
	eventually(t, "a server certificate without the SAN refused", 60*time.Second, func() error {
		if code := status(); code != "503" {
			return fmt.Errorf("status %s, want 503", code)
		}
		return nil
	})
	_, before = lastCert()
	for range 3 {
		if code := status(); code != "503" {
			t.Fatalf("status %s with subjectAltNames naming another host, want 503", code)
		}
	}
	if _, after := lastCert(); after != before {
		t.Errorf("%d requests reached a server whose certificate lacks the SAN", after-before)
	}

	e.applyYAML(t, restore)
	eventually(t, "SIMPLE again: no client certificate", 60*time.Second, func() error {
		if code := status(); code != "200" {
			return fmt.Errorf("status %s", code)
		}
		if name, _ := lastCert(); name != "" {
			return fmt.Errorf("client certificate %q still presented", name)
		}
		return nil
	})
}
