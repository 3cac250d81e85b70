package workload

import (
	"strings"
	"testing"

	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestPolicyOfPodsOutsideTheMeshIsNotReported: a selector policy that picks
// only pods outside the mesh (an ingress gateway's) is not the node agents'
// to report on, whatever it holds (CUSTOM, L7 attributes): the gateway
// applies it (control/waypoint). The same policy on enrolled pods is.
func TestPolicyOfPodsOutsideTheMeshIsNotReported(t *testing.T) {
	ns := func(name string, ambient bool) *corev1.Namespace {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if ambient {
			n.Labels = map[string]string{labelDataplaneMode: dataplaneAmbient}
		}
		return n
	}
	pod := func(ns, name string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
			Status: corev1.PodStatus{PodIP: "10.244.0.9"}}
	}
	custom := func(ns, name string, labels map[string]string) *securityv1.AuthorizationPolicy {
		return &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: securityapi.AuthorizationPolicy{Selector: &typeapi.WorkloadSelector{MatchLabels: labels},
				Action: securityapi.AuthorizationPolicy_CUSTOM, ActionDetail: &securityapi.AuthorizationPolicy_Provider{
					Provider: &securityapi.AuthorizationPolicy_ExtensionProvider{Name: "ext-authz"}},
				Rules: []*securityapi.Rule{{To: []*securityapi.Rule_To{{Operation: &securityapi.Operation{Paths: []string{"/admin"}}}}}}}}
	}
	out := Translate(Config{}, Inputs{
		Namespaces: []*corev1.Namespace{ns("default", true), ns("weft-ingress", false)},
		Pods: []*corev1.Pod{pod("default", "reviews", map[string]string{"app": "reviews"}),
			pod("weft-ingress", "gateway", map[string]string{"istio": "ingress"})},
		AuthorizationPolicies: []*securityv1.AuthorizationPolicy{
			custom("weft-ingress", "at-the-gateway", map[string]string{"istio": "ingress"}),
			custom("default", "on-reviews", map[string]string{"app": "reviews"}),
		},
	})
	reported := map[string]bool{}
	for _, p := range out.Problems {
		if p.Kind == "AuthorizationPolicy" && strings.Contains(p.Message, "CUSTOM") {
			reported[p.Name] = true
		}
	}
	if reported["at-the-gateway"] || !reported["on-reviews"] {
		t.Errorf("CUSTOM reported on %v; want on-reviews (enrolled pods) only, not at-the-gateway (pods outside the mesh)", reported)
	}
}
