package ca

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

func testPod(ns, name, uid, sa, node string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)},
		Spec:       corev1.PodSpec{ServiceAccountName: sa, NodeName: node},
		Status:     corev1.PodStatus{Phase: phase},
	}
}

// testPods: node-a runs productpage, the agent and a finished job; node-b
// runs reviews.
var testPods = []*corev1.Pod{
	testPod("weft-system", "weft-node-agent-a", "uid-agent-a", "weft-node-agent", "node-a", corev1.PodRunning),
	testPod("weft-system", "weft-node-agent-b", "uid-agent-b", "weft-node-agent", "node-b", corev1.PodRunning),
	testPod("default", "productpage-v1-abc", "uid-pp", "bookinfo-productpage", "node-a", corev1.PodRunning),
	testPod("default", "details-v1-abc", "uid-details", "", "node-a", corev1.PodPending), // default SA
	testPod("default", "reviews-v1-abc", "uid-reviews", "bookinfo-reviews", "node-b", corev1.PodRunning),
	testPod("batch", "job-xyz", "uid-job", "cron", "node-a", corev1.PodSucceeded),
}

// indexerLookup builds the same PodLookup the control plane uses.
func indexerLookup(t *testing.T, pods []*corev1.Pod) PodLookup {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, PodIndexers())
	for _, p := range pods {
		if err := idx.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	return NewIndexerPodLookup(idx)
}

type failingLookup struct{}

func (failingLookup) PodsOnNode(string) ([]*corev1.Pod, error) {
	return nil, errors.New("cache broken")
}
func (failingLookup) Pod(string, string) (*corev1.Pod, error) { return nil, errors.New("cache broken") }

func TestAuthorize(t *testing.T) {
	policy := Policy{TrustDomain: testTD, NodeAgent: DefaultNodeAgent}
	pods := indexerLookup(t, testPods)

	productpage := &Caller{Namespace: "default", ServiceAccount: "bookinfo-productpage", PodName: "productpage-v1-abc", PodUID: "uid-pp", NodeName: "node-a"}
	agentA := &Caller{Namespace: "weft-system", ServiceAccount: "weft-node-agent", PodName: "weft-node-agent-a", PodUID: "uid-agent-a", NodeName: "node-a"}
	agentANoNode := &Caller{Namespace: "weft-system", ServiceAccount: "weft-node-agent", PodName: "weft-node-agent-a", PodUID: "uid-agent-a"}
	agentStaleUID := &Caller{Namespace: "weft-system", ServiceAccount: "weft-node-agent", PodName: "weft-node-agent-a", PodUID: "uid-old"}
	agentGonePod := &Caller{Namespace: "weft-system", ServiceAccount: "weft-node-agent", PodName: "weft-node-agent-gone", PodUID: "uid-gone"}
	agentUnbound := &Caller{Namespace: "weft-system", ServiceAccount: "weft-node-agent"}
	// Attacks on the binding: a token bound to a node only (kubectl create
	// token --bound-object-kind Node), to a pod of another service
	// account, or naming a node its pod is not on.
	agentNodeOnly := &Caller{Namespace: "weft-system", ServiceAccount: "weft-node-agent", NodeName: "node-a"}
	agentOnOthersPod := &Caller{Namespace: "weft-system", ServiceAccount: "weft-node-agent", PodName: "productpage-v1-abc", PodUID: "uid-pp", NodeName: "node-a"}
	agentNodeMismatch := &Caller{Namespace: "weft-system", ServiceAccount: "weft-node-agent", PodName: "weft-node-agent-b", PodUID: "uid-agent-b", NodeName: "node-a"}
	otherInAgentNS := &Caller{Namespace: "weft-system", ServiceAccount: "weft-control", PodName: "weft-control-1", NodeName: "node-a"}

	id := func(ns, sa string) spiffeid.ID { return workloadID(t, testTD, ns, sa) }
	odd := func(path string) spiffeid.ID {
		v, err := spiffeid.FromPath(testTD, path)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	tests := []struct {
		name      string
		policy    Policy
		pods      PodLookup
		caller    *Caller
		requested spiffeid.ID
		allowed   bool
		lookupErr bool
	}{
		{"own identity", policy, pods, productpage, id("default", "bookinfo-productpage"), true, false},
		{"own identity without pod binding", policy, pods, &Caller{Namespace: "default", ServiceAccount: "x"}, id("default", "x"), true, false},
		{"other SA in same namespace", policy, pods, productpage, id("default", "bookinfo-reviews"), false, false},
		{"own SA name in another namespace", policy, pods, productpage, id("prod", "bookinfo-productpage"), false, false},
		{"own identity in foreign trust domain", policy, pods, productpage, workloadID(t, otherTD, "default", "bookinfo-productpage"), false, false},
		{"node agent own identity", policy, pods, agentA, id("weft-system", "weft-node-agent"), true, false},
		{"node agent for SA on its node", policy, pods, agentA, id("default", "bookinfo-productpage"), true, false},
		{"node agent for default SA on its node (pending pod)", policy, pods, agentA, id("default", "default"), true, false},
		{"node agent for SA only on another node", policy, pods, agentA, id("default", "bookinfo-reviews"), false, false},
		{"node agent for SA with only a finished pod", policy, pods, agentA, id("batch", "cron"), false, false},
		{"node agent for SA with no pods", policy, pods, agentA, id("default", "nobody"), false, false},
		{"node agent without node in token uses bound pod", policy, pods, agentANoNode, id("default", "bookinfo-productpage"), true, false},
		{"node agent without node in token, bound pod's node differs", policy, pods, agentANoNode, id("default", "bookinfo-reviews"), false, false},
		{"node agent with stale pod UID", policy, pods, agentStaleUID, id("default", "bookinfo-productpage"), false, false},
		{"node agent whose bound pod is gone", policy, pods, agentGonePod, id("default", "bookinfo-productpage"), false, false},
		{"node agent token not bound to a pod", policy, pods, agentUnbound, id("default", "bookinfo-productpage"), false, false},
		{"node agent token bound to a node only", policy, pods, agentNodeOnly, id("default", "bookinfo-productpage"), false, false},
		{"node agent token bound to another service account's pod", policy, pods, agentOnOthersPod, id("default", "bookinfo-productpage"), false, false},
		{"node agent token naming a node its pod is not on", policy, pods, agentNodeMismatch, id("default", "bookinfo-reviews"), false, false},
		{"node agent, foreign trust domain", policy, pods, agentA, workloadID(t, otherTD, "default", "bookinfo-productpage"), false, false},
		{"node agent, non-workload path", policy, pods, agentA, odd("/ns/default/sa/bookinfo-productpage/extra"), false, false},
		{"node agent rule disabled", Policy{TrustDomain: testTD}, pods, agentA, id("default", "bookinfo-productpage"), false, false},
		{"non-agent in agent namespace asks for someone else", policy, pods, otherInAgentNS, id("default", "bookinfo-productpage"), false, false},
		{"non-agent asks for the node agent", policy, pods, productpage, id("weft-system", "weft-node-agent"), false, false},
		{"nil caller", policy, pods, nil, id("default", "bookinfo-productpage"), false, false},
		{"lookup failure is not a denial", policy, failingLookup{}, agentA, id("default", "bookinfo-productpage"), false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Authorize(tc.policy, tc.pods, tc.caller, tc.requested)
			switch {
			case tc.allowed:
				if err != nil {
					t.Fatalf("denied: %v", err)
				}
			case tc.lookupErr:
				if err == nil || errors.Is(err, ErrPermissionDenied) {
					t.Fatalf("err %v, want a lookup error that is not a denial", err)
				}
			default:
				if !errors.Is(err, ErrPermissionDenied) {
					t.Fatalf("err %v, want ErrPermissionDenied", err)
				}
				if !strings.Contains(err.Error(), tc.requested.String()) {
					t.Errorf("denial %q does not name the requested identity", err)
				}
				if tc.caller != nil && !strings.Contains(err.Error(), tc.caller.Namespace+"/"+tc.caller.ServiceAccount) {
					t.Errorf("denial %q does not name the caller", err)
				}
			}
		})
	}
}

// unfilteredLookup answers PodsOnNode with every pod, as a lookup whose
// node filter was ignored (a fake API server ignores field selectors).
type unfilteredLookup []*corev1.Pod

func (l unfilteredLookup) PodsOnNode(string) ([]*corev1.Pod, error) { return l, nil }

func (l unfilteredLookup) Pod(namespace, name string) (*corev1.Pod, error) {
	for _, p := range l {
		if p.Namespace == namespace && p.Name == name {
			return p, nil
		}
	}
	return nil, nil
}

// TestNodeAuthorizerChecksTheNodeItself: the authorizer does not trust the
// lookup to have filtered by node.
func TestNodeAuthorizerChecksTheNodeItself(t *testing.T) {
	ctx := context.Background()
	a := NewNodeAuthorizer(testTD, ServiceAccountRef{}, unfilteredLookup(testPods))
	agent := &Caller{Namespace: "weft-system", ServiceAccount: "weft-node-agent", PodName: "weft-node-agent-a", PodUID: "uid-agent-a"}
	if err := a.Authorize(ctx, agent, workloadID(t, testTD, "default", "bookinfo-productpage")); err != nil {
		t.Fatalf("same node: %v", err)
	}
	if err := a.Authorize(ctx, agent, workloadID(t, testTD, "default", "bookinfo-reviews")); !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("other node: %v", err)
	}
}

func TestParseServiceAccountRef(t *testing.T) {
	for in, ok := range map[string]bool{"weft-system/weft-node-agent": true, "weft-node-agent": false, "/x": false, "a/": false, "a/b/c": false} {
		_, err := ParseServiceAccountRef(in)
		if (err == nil) != ok {
			t.Errorf("%q: err %v", in, err)
		}
	}
}
