package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weft-mesh/weft/pkg/netns"
)

// testAgentRollout restarts every node agent with `kubectl rollout restart`
// (the chart's surge update: the new agent starts next to the old one, which
// hands over when stopped) while a client pod keeps two kinds of traffic
// going to productpage on the other node: requests on ONE kept-alive
// connection that lives across the first handover, and requests that each
// open a new connection. None may fail, and the kept connection must be
// the same TCP connection throughout.
func testAgentRollout(t *testing.T, e *env, clientSelector, url string) {
	from := e.podNetns(t, "default", clientSelector)
	var keptDials atomic.Int32
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return netns.Dial(ctx, from, addr)
	}
	kept := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			keptDials.Add(1)
			return dial(ctx, network, addr)
		},
		MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute,
	}}
	fresh := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
	get := func(c *http.Client) (time.Duration, error) {
		start := time.Now()
		resp, err := c.Get(url)
		if err != nil {
			return time.Since(start), err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return time.Since(start), err
		}
		if resp.StatusCode != http.StatusOK {
			return time.Since(start), fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return time.Since(start), nil
	}
	if _, err := get(kept); err != nil {
		t.Fatalf("before the rollout: %v", err)
	}

	agents := func() map[types.UID]bool {
		pods, err := e.c.Client.CoreV1().Pods(controlNS).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=weft-node-agent"})
		if err != nil {
			t.Fatal(err)
		}
		out := map[types.UID]bool{}
		for _, p := range pods.Items {
			out[p.UID] = p.DeletionTimestamp == nil
		}
		return out
	}
	before := agents()
	portsBefore := agentPorts(t, e)
	e.mustKubectl(t, "-n", controlNS, "rollout", "restart", "daemonset/weft-node-agent")
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := e.kubectl("-n", controlNS, "rollout", "status", "daemonset/weft-node-agent", "--timeout=240s")
		done <- err
	}()

	// The kept connection lives until 5 s after the first old agent began
	// handing over (well inside its 15 s drain), then the client closes it.
	var handoverAt time.Time
	var keptN, freshN int
	var maxFresh time.Duration
	var failures []string
	rolled := false
	for !rolled || !handoverAt.IsZero() && kept != nil {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("rollout: %v", err)
			}
			rolled = true
		default:
		}
		if handoverAt.IsZero() {
			for uid, live := range agents() {
				if before[uid] && !live {
					handoverAt = time.Now()
					t.Logf("first old agent handing over %s after the restart", handoverAt.Sub(start).Round(100*time.Millisecond))
				}
			}
		}
		if kept != nil {
			if _, err := get(kept); err != nil {
				failures = append(failures, fmt.Sprintf("kept connection, %s into the rollout: %v", time.Since(start).Round(time.Millisecond), err))
			}
			keptN++
			if !handoverAt.IsZero() && time.Since(handoverAt) > 5*time.Second {
				kept.CloseIdleConnections()
				kept = nil
			}
		}
		d, err := get(fresh)
		if err != nil {
			failures = append(failures, fmt.Sprintf("new connection, %s into the rollout: %v", time.Since(start).Round(time.Millisecond), err))
		}
		freshN++
		maxFresh = max(maxFresh, d)
		if time.Since(start) > 4*time.Minute {
			t.Fatal("rollout did not finish in 4 minutes")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if handoverAt.IsZero() {
		t.Fatal("no old agent was seen handing over: the test proved nothing")
	}
	for uid := range agents() {
		if before[uid] {
			t.Errorf("agent pod %s was not replaced", uid)
		}
	}
	// Each successor started next to its live predecessor, whose proxy
	// ports cannot be shared: it listened on other ports and steered the
	// capture there (the handover without SO_REUSEPORT, issue #13 M4).
	for node, after := range agentPorts(t, e) {
		if after == portsBefore[node] {
			t.Errorf("node %s: the successor agent listens on its predecessor's ports %s", node, after)
		}
	}
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed during the rollout:\n%s", len(failures), keptN+freshN, strings.Join(failures, "\n"))
	}
	if n := keptDials.Load(); n != 1 {
		t.Errorf("the kept-alive client dialed %d connections, want 1: its connection did not survive the handover", n)
	}
	t.Logf("rollout of %d agents took %s: %d requests on one kept connection across the handover, %d on new connections (slowest %s), %d failed",
		len(before), time.Since(start).Round(100*time.Millisecond), keptN, freshN, maxFresh.Round(time.Millisecond), len(failures))
}

// agentPorts is, by node, the proxy ports the node agent there listens on
// (its "node agent started" log line).
func agentPorts(t *testing.T, e *env) map[string]string {
	t.Helper()
	pods, err := e.c.Client.CoreV1().Pods(controlNS).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=weft-node-agent"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		ports := agentPortsLog.FindString(e.mustKubectl(t, "-n", controlNS, "logs", p.Name))
		if ports == "" {
			t.Fatalf("agent %s: no ports in its \"node agent started\" line", p.Name)
		}
		out[p.Spec.NodeName] = ports
	}
	return out
}

var agentPortsLog = regexp.MustCompile(`"msg":"node agent started".*"ports":\{[^}]*\}`)

// podNetns finds the network namespace of the first pod matching selector
// (by its IP) among the kubelet's sandboxes on the pod's node.
func (e *env) podNetns(t *testing.T, ns, selector string) string {
	t.Helper()
	out := strings.Fields(e.mustKubectl(t, "-n", ns, "get", "pods", "-l", selector, "-o", "jsonpath={.items[0].spec.nodeName} {.items[0].status.podIP}"))
	if len(out) != 2 {
		t.Fatalf("pod %s: node and IP not known yet: %v", selector, out)
	}
	prefix := e.c.NodeNetns(nodeIndex(t, out[0])) + "-"
	list, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(list), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		addrs, _ := exec.Command("ip", "-n", name, "-o", "-4", "addr", "show").Output()
		if strings.Contains(string(addrs), " "+out[1]+"/") {
			return "/run/netns/" + name
		}
	}
	t.Fatalf("no network namespace with %s (pod %s on %s)", out[1], selector, out[0])
	return ""
}
