package status

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	securityapi "istio.io/api/security/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	"istio.io/client-go/pkg/clientset/versioned/fake"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"

	"github.com/weft-mesh/weft/control/workload"
)

func policy(name string, gen int64) *securityv1.AuthorizationPolicy {
	return &securityv1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Generation: gen},
		Spec:       securityapi.AuthorizationPolicy{Action: securityapi.AuthorizationPolicy_DENY},
	}
}

func TestPolicyConditions(t *testing.T) {
	got := PolicyConditions(
		[]*securityv1.AuthorizationPolicy{policy("good", 1), policy("bad", 3)},
		[]workload.Problem{
			{Kind: "AuthorizationPolicy", Namespace: "default", Name: "bad", Message: "rule 0 uses L7 attributes (paths)"},
			{Kind: "AuthorizationPolicy", Namespace: "default", Name: "bad", Message: "rule 0 uses L7 attributes (paths)"},
			{Kind: "Namespace", Name: "default", Message: "waypoint missing"},
		})
	if c := got["default/good"]; c.Status != "True" || c.Reason != ReasonAccepted || c.Generation != 1 {
		t.Errorf("good: %v", c)
	}
	if c := got["default/bad"]; c.Status != "False" || c.Reason != ReasonPartiallyInvalid || c.Message != "rule 0 uses L7 attributes (paths)" || c.Generation != 3 {
		t.Errorf("bad: %v (duplicates must be folded)", c)
	}
}

func TestSyncWritesOnlyChanges(t *testing.T) {
	good, bad := policy("good", 1), policy("bad", 1)
	client := fake.NewSimpleClientset(good, bad)
	w := &Writer{Client: client, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	problems := []workload.Problem{{Kind: "AuthorizationPolicy", Namespace: "default", Name: "bad", Message: "invalid CIDR 10.0.0/8"}}
	ctx := context.Background()

	w.Sync(ctx, Objects{AuthorizationPolicies: []*securityv1.AuthorizationPolicy{good, bad}}, problems)
	if n := countUpdates(client); n != 2 {
		t.Fatalf("first sync made %d status updates, want 2", n)
	}
	stored, err := client.SecurityV1().AuthorizationPolicies("default").Get(ctx, "bad", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := find(istioStatus(&stored.Status))
	if c == nil || c.GetStatus() != "False" || !strings.Contains(c.GetMessage(), "invalid CIDR") || c.GetLastTransitionTime() == nil {
		t.Fatalf("stored condition %v", c)
	}
	// The informer now shows the stored objects: nothing more to write.
	client.ClearActions()
	storedGood, _ := client.SecurityV1().AuthorizationPolicies("default").Get(ctx, "good", metav1.GetOptions{})
	client.ClearActions()
	w.Sync(ctx, Objects{AuthorizationPolicies: []*securityv1.AuthorizationPolicy{storedGood, stored}}, problems)
	if n := countUpdates(client); n != 0 {
		t.Fatalf("unchanged conditions rewritten %d times", n)
	}
	// Fixing the policy flips its condition.
	w.Sync(ctx, Objects{AuthorizationPolicies: []*securityv1.AuthorizationPolicy{storedGood, stored}}, nil)
	if n := countUpdates(client); n != 1 {
		t.Fatalf("fix made %d updates, want 1", n)
	}
}

func countUpdates(c *fake.Clientset) int {
	n := 0
	for _, a := range c.Actions() {
		if a.GetVerb() == "update" && a.GetSubresource() == "status" {
			n++
		}
	}
	return n
}

// TestSyncReportsFailedWrites: a write that fails (a conflict here) makes
// Sync ask for a retry; nothing else may change to trigger another Sync.
func TestSyncReportsFailedWrites(t *testing.T) {
	ap := policy("p", 1)
	client := fake.NewSimpleClientset(ap)
	client.PrependReactor("update", "authorizationpolicies", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "authorizationpolicies"}, "p", errors.New("stale"))
	})
	w := &Writer{Client: client, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if !w.Sync(context.Background(), Objects{AuthorizationPolicies: []*securityv1.AuthorizationPolicy{ap}}, nil) {
		t.Error("a conflicting write did not ask for a retry")
	}
	client.PrependReactor("update", "authorizationpolicies", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, ap, nil
	})
	if w.Sync(context.Background(), Objects{AuthorizationPolicies: []*securityv1.AuthorizationPolicy{ap}}, nil) {
		t.Error("a successful write asked for a retry")
	}
}
