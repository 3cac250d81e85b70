package e2e

// Reading a test cluster's state: addresses, nodes, tokens, and the metrics
// and admin endpoints of Weft's components.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/weft-mesh/weft/pkg/netns"
)

// caAudience is the token audience weft-control's CA accepts.
const caAudience = "weft-ca"

// serviceIP is the cluster IP of Service ns/name.
func (e *env) serviceIP(t *testing.T, ns, name string) string {
	t.Helper()
	return strings.TrimSpace(e.mustKubectl(t, "-n", ns, "get", "service", name, "-o", "jsonpath={.spec.clusterIP}"))
}

// token issues a service-account token for Weft's audience, bound to a pod
// when pod is set (what a projected token volume holds).
func (e *env) token(t *testing.T, ns, sa, pod string) string {
	t.Helper()
	return e.tokenFor(t, ns, sa, pod, caAudience)
}

// tokenFor is token for the given audiences (none: the API server's, what
// kube-api-access holds).
func (e *env) tokenFor(t *testing.T, ns, sa, pod string, audiences ...string) string {
	t.Helper()
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: audiences, ExpirationSeconds: ptr.To[int64](600),
	}}
	if pod != "" {
		p, err := e.c.Client.CoreV1().Pods(ns).Get(context.Background(), pod, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod, UID: p.UID}
	}
	tr, err := e.c.Client.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s/%s: %v", ns, sa, err)
	}
	return tr.Status.Token
}

// podNode is the node of the first pod matching selector in ns.
func (e *env) podNode(t *testing.T, ns, selector string) string {
	t.Helper()
	return strings.TrimSpace(e.mustKubectl(t, "-n", ns, "get", "pods", "-l", selector, "-o", "jsonpath={.items[0].spec.nodeName}"))
}

// nodeIndex is i of a node named node-<i>.
func nodeIndex(t *testing.T, node string) int {
	t.Helper()
	var i int
	if _, err := fmt.Sscanf(node, "node-%d", &i); err != nil {
		t.Fatalf("node name %q: %v", node, err)
	}
	return i
}

// agentMetrics fetches a node agent's /metrics (port 15020 on the node's
// address, reached from inside the cluster network).
func (e *env) agentMetrics(node string) (string, error) {
	ip, err := e.kubectl("get", "node", node, "-o", `jsonpath={.status.addresses[?(@.type=="InternalIP")].address}`)
	if err != nil {
		return "", err
	}
	return e.httpGet(strings.TrimSpace(ip) + ":15020/metrics")
}

// agentMetric reads one unlabelled metric of a node agent's /metrics.
func (e *env) agentMetric(node, name string) (float64, error) {
	m, err := e.agentMetrics(node)
	if err != nil {
		return 0, err
	}
	v, err := metricValue(m, name)
	if err != nil {
		return 0, fmt.Errorf("node agent of %s: %w", node, err)
	}
	return v, nil
}

// metricValue reads one unlabelled metric of a /metrics page.
func metricValue(m, name string) (float64, error) {
	for _, line := range strings.Split(m, "\n") {
		var v float64
		if strings.HasPrefix(line, name+" ") {
			_, err := fmt.Sscanf(line[len(name)+1:], "%g", &v)
			return v, err
		}
	}
	return 0, fmt.Errorf("no %s in the metrics", name)
}

// agentAdmin GETs a path of node i's agent admin endpoint, which listens
// on loopback inside the node's network namespace only.
func (e *env) agentAdmin(i int, path string) (string, error) {
	ns := "/run/netns/" + e.c.NodeNetns(i)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return netns.Dial(ctx, ns, addr) }}}
	return getOK(client, "http://127.0.0.1:15000"+path)
}

// httpGet GETs http://<hostPort><path> from inside the cluster network
// (node-0's namespace): node and pod addresses are reachable.
func (e *env) httpGet(hostPortPath string) (string, error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: e.c.DialContext}}
	return getOK(client, "http://"+hostPortPath)
}

// getOK GETs url with client and returns the body, or an error unless the
// status is 200.
func getOK(client *http.Client, url string) (string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), err
}

// podMetrics reads /metrics (15020) of the first pod matching selector in
// default.
func (e *env) podMetrics(t *testing.T, selector string) (string, error) {
	t.Helper()
	return e.podMetricsIn("default", selector)
}

// podMetricsIn reads /metrics (15020) of the first pod matching selector in
// namespace ns.
func (e *env) podMetricsIn(ns, selector string) (string, error) {
	ip, err := e.kubectl("-n", ns, "get", "pods", "-l", selector, "-o", "jsonpath={.items[0].status.podIP}")
	if err != nil || strings.TrimSpace(ip) == "" {
		return "", fmt.Errorf("pod %s: %q %v", selector, ip, err)
	}
	return e.httpGet(strings.TrimSpace(ip) + ":15020/metrics")
}
