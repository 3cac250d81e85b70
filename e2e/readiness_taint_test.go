package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/weft-mesh/weft/node-agent/kubeapi"
)

// readinessTaint is the chart's default cni.readinessTaint.
const readinessTaint = "weft.io/agent-not-ready"

// testReadinessTaint: a node that carries the readiness taint (as a new
// node registered with it does) gets no pod before weft-cni is installed
// there; the install-cni container removes the taint once it is, and the
// pod that waited starts enrolled. The service account's right to patch
// nodes is attacked with its own pod-bound token: the admission policy
// lets it remove that taint from its own node and nothing else.
func testReadinessTaint(t *testing.T, e *env, node string) {
	enrolled, err := e.agentMetric(node, "weft_node_agent_enrolled_pods")
	if err != nil {
		t.Fatal(err)
	}
	e.mustKubectl(t, "taint", "node", node, readinessTaint+"=true:NoSchedule")
	t.Cleanup(func() { e.kubectl("taint", "node", node, readinessTaint+"-") })
	e.applyYAML(t, fmt.Sprintf(waitingPod, node))
	t.Cleanup(func() { e.kubectl("delete", "pod", "waiting", "--wait=false") })
	eventually(t, "the pod kept off the tainted node", 60*time.Second, func() error {
		reason, err := e.kubectl("get", "pod", "waiting", "-o", `jsonpath={.status.conditions[?(@.type=="PodScheduled")].reason}`)
		if err != nil || strings.TrimSpace(reason) != "Unschedulable" {
			return fmt.Errorf("PodScheduled reason %q, %v", reason, err)
		}
		return nil
	})
	// The running agent's installer removed the taint when it started,
	// before the taint was there: only a new installer removes it.
	e.restartAgentUnsynced(t, node, false)
	eventually(t, "the taint removed once weft-cni is installed", 60*time.Second, func() error {
		if taints := e.taintKeys(t, node); slices.Contains(taints, readinessTaint) {
			agent, _ := e.kubectl("-n", controlNS, "get", "pods", "-l", "app.kubernetes.io/name=weft-node-agent",
				"--field-selector", "spec.nodeName="+node, "-o", "jsonpath={.items[0].metadata.name}")
			logs, _ := e.kubectl("-n", controlNS, "logs", strings.TrimSpace(agent), "-c", "install-cni", "--tail=10")
			return fmt.Errorf("taints %v; install-cni says:\n%s", taints, logs)
		}
		return nil
	})
	e.mustKubectl(t, "wait", "--for=condition=Ready", "pod/waiting", "--timeout=120s")
	eventually(t, "the pod enrolled by the agent of "+node, 60*time.Second, func() error {
		if v, err := e.agentMetric(node, "weft_node_agent_enrolled_pods"); err != nil || v != enrolled+1 {
			return fmt.Errorf("%v pods enrolled, want %v: %v", v, enrolled+1, err)
		}
		return nil
	})
	attackNodePatches(t, e, node)
}

// attackNodePatches uses the node agent's service account, with a token
// bound to its pod on node, against what the admission policy forbids.
func attackNodePatches(t *testing.T, e *env, node string) {
	other := "node-0"
	if node == other {
		other = "node-1"
	}
	agent := strings.TrimSpace(e.mustKubectl(t, "-n", controlNS, "get", "pods", "-l", "app.kubernetes.io/name=weft-node-agent",
		"--field-selector", "spec.nodeName="+node, "-o", "jsonpath={.items[0].metadata.name}"))
	bound := e.apiClient(t, e.tokenFor(t, controlNS, "weft-node-agent", agent))
	// Harmless taints (PreferNoSchedule) for the attacks to aim at.
	for _, taint := range []string{other + " " + readinessTaint + "=x:PreferNoSchedule", node + " e2e.weft.io/keep=x:PreferNoSchedule"} {
		n, kv, _ := strings.Cut(taint, " ")
		e.mustKubectl(t, "taint", "node", n, kv)
		key, _, _ := strings.Cut(kv, "=")
		t.Cleanup(func() { e.kubectl("taint", "node", n, key+"-") })
	}
	ctx := context.Background()
	if _, err := bound.RemoveNodeTaint(ctx, other, readinessTaint); err == nil || !strings.Contains(err.Error(), "only the Node its pod runs on") {
		t.Errorf("removing the taint from %s with %s's token: %v, want the policy's refusal", other, node, err)
	}
	if _, err := bound.RemoveNodeTaint(ctx, node, "e2e.weft.io/keep"); err == nil || !strings.Contains(err.Error(), "may only remove the "+readinessTaint) {
		t.Errorf("removing another taint: %v, want the policy's refusal", err)
	}
	for what, patch := range map[string]string{
		"a label":         `{"metadata":{"labels":{"e2e.weft.io/attract":"true"}}}`,
		"an annotation":   `{"metadata":{"annotations":{"e2e.weft.io/x":"y"}}}`,
		"unschedulable":   `{"spec":{"unschedulable":true}}`,
		"an owner":        `{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"x","uid":"00000000-0000-0000-0000-000000000001"}]}}`,
		"a taint of note": fmt.Sprintf(`{"spec":{"taints":[{"key":%q,"effect":"NoSchedule"}]}}`, "e2e.weft.io/evil"),
	} {
		_, err := bound.cs.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		if err == nil || !strings.Contains(err.Error(), "denied request") {
			t.Errorf("adding %s to %s with its agent's token: %v, want the policy's refusal", what, node, err)
		}
	}
	if err := bound.cs.CoreV1().Nodes().Delete(ctx, other, metav1.DeleteOptions{}); err == nil {
		t.Errorf("deleting %s with %s's agent token succeeded", other, node)
	}
	// A token bound to no pod names no node: it removes nothing.
	unbound := e.apiClient(t, e.tokenFor(t, controlNS, "weft-node-agent", ""))
	e.mustKubectl(t, "taint", "node", node, readinessTaint+"=x:PreferNoSchedule")
	if _, err := unbound.RemoveNodeTaint(ctx, node, readinessTaint); err == nil {
		t.Error("a token bound to no pod removed the taint")
	}
	// What the policy allows still works: the refusals above were its.
	if removed, err := bound.RemoveNodeTaint(ctx, node, readinessTaint); err != nil || !removed {
		t.Errorf("removing the readiness taint from its own node: %v %v", removed, err)
	}
	if taints := e.taintKeys(t, node); !slices.Equal(taints, []string{"e2e.weft.io/keep"}) {
		t.Errorf("%s taints %v, want only the one the attacks aimed at", node, taints)
	}
}

// nodeAgentAPI is the node agent's API access with one token: the
// production client (kubeapi) and client-go for what it never sends.
type nodeAgentAPI struct {
	*kubeapi.Client
	cs *kubernetes.Clientset
}

// apiClient talks to the API server with token alone.
func (e *env) apiClient(t *testing.T, token string) nodeAgentAPI {
	t.Helper()
	cfg := &rest.Config{Host: e.c.REST.Host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAFile: e.c.REST.CAFile, CAData: e.c.REST.CAData}}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tlsConfig, err := rest.TLSConfigFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	return nodeAgentAPI{kubeapi.New(cfg.Host, file, tlsConfig), cs}
}

// taintKeys are node's taints' keys.
func (e *env) taintKeys(t *testing.T, node string) []string {
	t.Helper()
	n, err := e.c.Client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, taint := range n.Spec.Taints {
		if !strings.HasPrefix(taint.Key, "node.kubernetes.io/") { // the node lifecycle's own
			keys = append(keys, taint.Key)
		}
	}
	return keys
}

// waitingPod is a pod of the enrolled default namespace that only node
// can take (through the scheduler, unlike probePod's nodeName).
const waitingPod = `apiVersion: v1
kind: Pod
metadata:
  name: waiting
  namespace: default
  labels:
    app: waiting
spec:
  nodeSelector:
    kubernetes.io/hostname: %s
  terminationGracePeriodSeconds: 0
  containers:
  - name: probe
    image: weft-e2e/probe
`
