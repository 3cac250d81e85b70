package server

import (
	"context"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/weft-mesh/weft/internal/await"
)

// TestReadinessChangeTranslatesOnlyEndpoints: through the discovery
// informers (one object per version, which the waypoint Translator relies
// on), a pod turning unready makes the next push's waypoint translation
// make again only the load assignments the pod is an endpoint of (its
// Service's, in the proxyless gRPC group), counted as an endpoints
// translation; a new Service then translates everything.
func TestReadinessChangeTranslatesOnlyEndpoints(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kube := fake.NewClientset(
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "greeter"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.20", Selector: map[string]string{"app": "greeter"},
				Ports: []corev1.ServicePort{{Name: "grpc", Port: 50051}}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "greeter-1", Labels: map[string]string{"app": "greeter"}},
			Spec: corev1.PodSpec{NodeName: "node-0"},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.5", PodIPs: []corev1.PodIP{{IP: "10.0.0.5"}},
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}})
	cluster, x, tr := fakeControlPlane(ctx, t, kube)
	if err := grpcClient(ctx, t, x).Send(&discoveryv3.DiscoveryRequest{Node: &core.Node{Id: "grpc~10.0.0.9~client"},
		TypeUrl: resourcev3.ListenerType, ResourceNames: []string{"greeter.default.svc.cluster.local:50051"}}); err != nil {
		t.Fatal(err)
	}
	await.True(t, "the gRPC client's stream", x.HasGRPCClients)
	ready := func(want corev1.ConditionStatus) func() bool {
		return func() bool {
			in, err := cluster.Inputs()
			return err == nil && len(in.Pods) == 1 && len(in.Pods[0].Status.Conditions) == 1 && in.Pods[0].Status.Conditions[0].Status == want
		}
	}
	await.True(t, "the ready pod in the informer", ready(corev1.ConditionTrue))
	tr.push()
	if _, full := tr.waypoints.Rebuilt(); !full {
		t.Fatal("the first push did not translate everything")
	}

	pod, err := kube.CoreV1().Pods("default").Get(ctx, "greeter-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Status.Conditions[0].Status = corev1.ConditionFalse
	if _, err := kube.CoreV1().Pods("default").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	await.True(t, "the unready pod in the informer", ready(corev1.ConditionFalse))
	tr.push()
	if n, full := tr.waypoints.Rebuilt(); full || n != 1 {
		t.Errorf("a readiness change: full translation %v, %d load assignments made again; want 1, not full", full, n)
	}
	if got := testutil.ToFloat64(tr.metrics.waypoints.WithLabelValues("endpoints")); got != 1 {
		t.Errorf("endpoints translations counted: %v, want 1", got)
	}

	if _, err := kube.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "other"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.21", Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	await.True(t, "the new Service in the informer", func() bool {
		in, err := cluster.Inputs()
		return err == nil && len(in.Services) == 2
	})
	tr.push()
	if _, full := tr.waypoints.Rebuilt(); !full {
		t.Error("a new Service did not translate everything")
	}
	if got := testutil.ToFloat64(tr.metrics.waypoints.WithLabelValues("full")); got != 2 {
		t.Errorf("full translations counted: %v, want 2", got)
	}
}
