package workload

import (
	"fmt"
	"testing"

	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
)

// scaleInputs builds a cluster of pods across namespaces (half of them
// ambient, a tenth with a namespace waypoint), services selecting ten pods
// each, and a mix of authorization policies and PeerAuthentications.
func scaleInputs(pods, namespaces, services, policies int) Inputs {
	var in Inputs
	yes := true
	for n := range namespaces {
		ns := fmt.Sprintf("ns-%03d", n)
		labels := map[string]string{}
		if n%2 == 0 {
			labels[labelDataplaneMode] = dataplaneAmbient
		}
		if n%10 == 0 {
			labels[labelUseWaypoint] = "waypoint"
			in.Gateways = append(in.Gateways, &gatewayv1.Gateway{
				ObjectMeta: metav1.ObjectMeta{Name: "waypoint", Namespace: ns},
				Spec:       gatewayv1.GatewaySpec{GatewayClassName: WaypointGatewayClass},
			})
		}
		in.Namespaces = append(in.Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}})
	}
	appsPerNS := max(services/namespaces, 1)
	for i := range pods {
		ns := fmt.Sprintf("ns-%03d", i%namespaces)
		app := fmt.Sprintf("app-%d", (i/namespaces)%appsPerNS)
		hash := "5b9d5d6f8c"
		in.Pods = append(in.Pods, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name: fmt.Sprintf("%s-%s-%05d", app, hash, i), Namespace: ns,
				Labels:          map[string]string{"app": app, "version": "v1", "pod-template-hash": hash},
				OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: app + "-" + hash, Controller: &yes}},
			},
			Spec: corev1.PodSpec{
				NodeName: fmt.Sprintf("node-%d", i%50), ServiceAccountName: app,
				Containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}},
			},
			Status: corev1.PodStatus{
				Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255),
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			},
		})
	}
	for i := range services {
		ns := fmt.Sprintf("ns-%03d", i%namespaces)
		app := fmt.Sprintf("app-%d", (i/namespaces)%appsPerNS)
		in.Services = append(in.Services, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns},
			Spec: corev1.ServiceSpec{
				ClusterIP: fmt.Sprintf("10.96.%d.%d", i>>8&255, i&255),
				Selector:  map[string]string{"app": app},
				Ports: []corev1.ServicePort{
					{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
					{Name: "metrics", Port: 9090, TargetPort: intstr.FromInt32(9090)},
				},
			},
		})
	}
	for i := range policies {
		ns := fmt.Sprintf("ns-%03d", i%namespaces)
		ap := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("policy-%d", i), Namespace: ns}}
		ap.Spec.Rules = []*securityapi.Rule{{
			From: []*securityapi.Rule_From{{Source: &securityapi.Source{
				Principals: []string{"cluster.local/ns/" + ns + "/sa/app-0", "cluster.local/ns/ops/*"},
				IpBlocks:   []string{"10.0.0.0/8"},
			}}},
			To: []*securityapi.Rule_To{{Operation: &securityapi.Operation{Ports: []string{"8080"}}}},
		}}
		if i%2 == 0 {
			ap.Spec.Selector = &typeapi.WorkloadSelector{MatchLabels: map[string]string{"app": "app-0"}}
		}
		in.AuthorizationPolicies = append(in.AuthorizationPolicies, ap)
	}
	mesh := &securityv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "weft-system"}}
	mesh.Spec.Mtls = &securityapi.PeerAuthentication_MutualTLS{Mode: securityapi.PeerAuthentication_MutualTLS_STRICT}
	probes := &securityv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Name: "probes", Namespace: "ns-001"}}
	probes.Spec.Selector = &typeapi.WorkloadSelector{MatchLabels: map[string]string{"app": "app-1"}}
	probes.Spec.PortLevelMtls = map[uint32]*securityapi.PeerAuthentication_MutualTLS{
		9090: {Mode: securityapi.PeerAuthentication_MutualTLS_PERMISSIVE},
	}
	in.PeerAuthentications = append(in.PeerAuthentications, mesh, probes)
	return in
}

// BenchmarkTranslateOnePodChange is the control plane's translation of a
// pod change (the pod turns unready, then ready again) at the size of
// BenchmarkTranslate10kWorkloads, by a Translator that translated the
// cluster before: pods_translated/op is how many pods each change
// re-translated.
func BenchmarkTranslateOnePodChange(b *testing.B) {
	in := scaleInputs(10000, 100, 1000, 50)
	tr := NewTranslator(Config{})
	tr.Translate(in)
	pod := in.Pods[4321]
	unready := pod.DeepCopy()
	unready.Status.Conditions = nil
	translated := 0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		want := workloadv1.WorkloadStatus_UNHEALTHY
		if in.Pods[4321] = unready; i%2 == 1 {
			in.Pods[4321], want = pod, workloadv1.WorkloadStatus_HEALTHY
		}
		out := tr.Translate(in)
		if got := out.Addresses["Kubernetes//Pod/"+pod.Namespace+"/"+pod.Name].GetWorkload().GetStatus(); got != want || len(out.Addresses) != 11000 {
			b.Fatalf("status %v, %d addresses", got, len(out.Addresses))
		}
		translated += tr.Translated()
	}
	b.ReportMetric(float64(translated)/float64(b.N), "pods_translated/op")
}

func TestScaleInputs(t *testing.T) {
	out := Translate(Config{}, scaleInputs(1000, 10, 100, 10))
	if len(out.Problems) != 0 {
		t.Errorf("problems: %v", out.Problems)
	}
	if got, want := len(out.Addresses), 1000+100; got != want {
		t.Errorf("%d addresses, want %d", got, want)
	}
	checkConsistent(t, out)
	w := out.Addresses["Kubernetes//Pod/ns-000/app-0-5b9d5d6f8c-00000"].GetWorkload()
	if w == nil || len(w.Services) != 1 || len(w.AuthorizationPolicies) == 0 || w.Waypoint != nil {
		t.Errorf("unexpected workload %v", w)
	}
}

// BenchmarkTranslate10kWorkloads translates 10k pods across 100
// namespaces, 1k services and 50 authorization policies.
func BenchmarkTranslate10kWorkloads(b *testing.B) {
	in := scaleInputs(10000, 100, 1000, 50)
	b.ReportAllocs()
	for b.Loop() {
		out := Translate(Config{}, in)
		if len(out.Addresses) != 11000 {
			b.Fatalf("%d addresses", len(out.Addresses))
		}
	}
}
