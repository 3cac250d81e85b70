package e2e

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// dnsHost is a ServiceEntry host without addresses: only the node agents'
// DNS proxy knows its (auto-allocated) VIP; the cluster's CoreDNS does not.
const dnsHost = "by-name.example.com"

// dnsServiceEntry: %s is the STATIC endpoint's address. No waypoint: the
// client's node agent sends the VIP to the endpoint.
const dnsServiceEntry = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: by-name
spec:
  hosts:
  - ` + dnsHost + `
  ports:
  - number: 80
    name: http
    protocol: HTTP
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints:
  - address: %s
`

// testDNSProxy turns DNS capture on in the node agents (chart value
// ambient.dnsCapture) and resolves from the ambient curl pod, with glibc
// (getent) through the pod's resolv.conf (CoreDNS, search paths, ndots 5):
// a Kubernetes Service, a ServiceEntry host without addresses (its VIP,
// auto-allocated into status.addresses, which CoreDNS cannot know), and a
// name only CoreDNS answers (forwarded). Then curl by name reaches the
// entry's STATIC endpoint through the node agent.
func testDNSProxy(t *testing.T, e *env, ext *externalServer) {
	if out, err := e.kubectl("exec", "deploy/curl", "--", "getent", "ahostsv4", "curl.default.svc.cluster.local"); err != nil {
		t.Fatalf("before DNS capture: getent ahostsv4 curl.default.svc.cluster.local: %q %v", out, err)
	}
	// Debug logs: every DNS request is logged, shown on failure.
	e.mustRun(t, "helm", "upgrade", "weft-node-agent", filepath.Join(repoRoot(), "charts/node-agent"), "-n", controlNS,
		"--reuse-values", "--set", "ambient.dnsCapture=true", "--set", "logLevel=debug")
	e.mustKubectl(t, "-n", controlNS, "rollout", "status", "daemonset/weft-node-agent", "--timeout=180s")
	e.applyYAML(t, fmt.Sprintf(dnsServiceEntry, ext.addr))
	vip := allocatedVIP(t, e, "by-name")
	node := e.podNode(t, "default", "app=curl")
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := e.kubectl("-n", controlNS, "logs", "-l", "app=weft-node-agent", "--tail=80")
			t.Logf("node agent logs:\n%s\nDNS metrics of %s:\n%s", logs, node, dnsMetrics(e, node))
		}
	})
	dnsMetric := func(result string) float64 {
		v, err := e.agentMetric(node, `weft_node_agent_dns_requests_total{result="`+result+`"}`)
		if err != nil {
			t.Fatalf("node agent DNS metric: %v", err)
		}
		return v
	}
	answered, forwarded := dnsMetric("answered"), dnsMetric("forwarded")
	clusterIP := strings.TrimSpace(e.mustKubectl(t, "get", "svc", "curl", "-o", "jsonpath={.spec.clusterIP}"))
	resolveInCurlPod(t, e, "curl.default.svc.cluster.local", clusterIP)
	resolveInCurlPod(t, e, dnsHost, vip.String())
	resolveInCurlPod(t, e, "10-1-2-3.default.pod.cluster.local", "10.1.2.3") // CoreDNS's pod records: forwarded
	if a, f := dnsMetric("answered")-answered, dnsMetric("forwarded")-forwarded; a < 2 || f < 1 {
		t.Errorf("the node agent answered %v and forwarded %v queries, want at least 2 and 1", a, f)
	} else {
		t.Logf("%s resolved to its auto-allocated VIP %s by the node agent on %s (%v answered, %v forwarded)", dnsHost, vip, node, a, f)
	}
	curlByName(t, e, ext, node)
}

// allocatedVIP waits for the ServiceEntry's first status.addresses entry,
// which must be in istiod's auto-allocation range.
func allocatedVIP(t *testing.T, e *env, name string) netip.Addr {
	t.Helper()
	var vip netip.Addr
	eventually(t, "the ServiceEntry's allocated VIP in status.addresses", 60*time.Second, func() error {
		out, err := e.kubectl("get", "serviceentry", name, "-o", "jsonpath={.status.addresses[0].value}")
		if err != nil {
			return err
		}
		if vip, err = netip.ParseAddr(strings.TrimSpace(out)); err != nil || !netip.MustParsePrefix("240.240.0.0/16").Contains(vip) {
			return fmt.Errorf("status.addresses[0] %q (%v), want an address in 240.240.0.0/16", out, err)
		}
		return nil
	})
	return vip
}

// resolveInCurlPod wants name's first IPv4 address, as glibc resolves it
// in the curl pod, to be want.
func resolveInCurlPod(t *testing.T, e *env, name, want string) {
	t.Helper()
	eventually(t, "resolve "+name+" in the curl pod", 60*time.Second, func() error {
		out, err := e.kubectl("exec", "deploy/curl", "--", "getent", "ahostsv4", name)
		if got, _, _ := strings.Cut(out, " "); err != nil || got != want {
			return fmt.Errorf("getent ahostsv4 %s: %q (%v), want %s", name, out, err, want)
		}
		return nil
	})
}

// dnsMetrics are the DNS proxy's lines of a node agent's /metrics.
func dnsMetrics(e *env, node string) string {
	m, err := e.agentMetrics(node)
	if err != nil {
		return err.Error()
	}
	var lines []string
	for _, l := range strings.Split(m, "\n") {
		if strings.HasPrefix(l, "weft_node_agent_dns") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// curlByName wants curl http://<dnsHost>/ from the curl pod to reach the
// external server's plain port through the node agent on node: the
// connection to the endpoint leaves from the node, not from the pod.
func curlByName(t *testing.T, e *env, ext *externalServer, node string) {
	t.Helper()
	nodeIP := strings.TrimSpace(e.mustKubectl(t, "get", "node", node,
		"-o", `jsonpath={.status.addresses[?(@.type=="InternalIP")].address}`))
	eventually(t, "curl http://"+dnsHost+"/ by name", 60*time.Second, func() error {
		out, err := e.kubectl("exec", "deploy/curl", "--", "curl", "-sS", "-m", "10", "-w", "|%{http_code}", "http://"+dnsHost+"/")
		body, code, _ := strings.Cut(out, "|")
		if err != nil || code != "200" || body != bodyPlain {
			return fmt.Errorf("status %s %q (%v), want 200 %q", code, body, err, bodyPlain)
		}
		if _, plain := ext.snapshot(); plain[len(plain)-1].client != nodeIP {
			return fmt.Errorf("from %s, want the curl pod's node %s", plain[len(plain)-1].client, nodeIP)
		}
		return nil
	})
}
