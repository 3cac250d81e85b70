package cli

import (
	"context"
	"testing"

	securityapi "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/weft-mesh/weft/weftctl/internal/analyze"
)

func TestFetchSnapshot(t *testing.T) {
	ready := corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	kc := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app", Labels: map[string]string{"istio.io/dataplane-mode": "ambient"}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-2"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "agent-1", Namespace: "weft-system", Labels: map[string]string{"app": "weft-node-agent"}},
			Spec: corev1.PodSpec{NodeName: "node-1"}, Status: ready},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "app", Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{NodeName: "node-2"}, Status: ready},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "app", Labels: map[string]string{"istio.io/use-waypoint": "missing"}},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.1", Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}}},
	)
	gc := gatewayfake.NewSimpleClientset()
	ic := istiofake.NewSimpleClientset(&securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "app"},
		Spec: securityapi.AuthorizationPolicy{Action: securityapi.AuthorizationPolicy_ALLOW}})
	s, err := fetchSnapshot(context.Background(), kc, gc, ic, "weft-system")
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Namespaces) != 1 || len(s.Nodes) != 2 || len(s.Pods) != 2 || len(s.NodeAgents) != 1 || len(s.Services) != 1 ||
		len(s.Gateways) != 0 || len(s.AuthorizationPolicies) != 1 {
		t.Fatalf("snapshot: %d namespaces, %d nodes, %d pods, %d agents, %d services, %d gateways, %d policies",
			len(s.Namespaces), len(s.Nodes), len(s.Pods), len(s.NodeAgents), len(s.Services), len(s.Gateways), len(s.AuthorizationPolicies))
	}
	fs := analyze.Analyze(s, analyze.Options{Namespace: "app"})
	codes := map[string]bool{}
	for _, f := range fs {
		codes[f.Code] = true
	}
	if !codes[analyze.CodeNodeAgentMissing] || !codes[analyze.CodeWaypointNotFound] || fs.Errors() != 2 {
		t.Fatalf("findings: %+v", fs)
	}
}
