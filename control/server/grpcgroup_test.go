package server

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	fakedynamic "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/weft-mesh/weft/control/discovery"
	"github.com/weft-mesh/weft/control/xds"
	"github.com/weft-mesh/weft/control/xds/xdstest"
)

// TestGRPCClientGetsItsGroupFromThePushLoop: with no proxyless gRPC client
// connected, the control plane's pushes leave the gRPC group out; a
// client's first request makes the push loop (translator.run) build it. The
// cluster starts empty, so no informer event pushes on its own: without the
// client's request reaching the loop, the client would wait forever. Then a
// Service appears and its listener reaches the connected client.
func TestGRPCClientGetsItsGroupFromThePushLoop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kube := fake.NewClientset()
	_, x, tr := fakeControlPlane(ctx, t, kube)
	tr.push()
	go tr.run(ctx, 10*time.Millisecond)
	st := grpcClient(ctx, t, x)

	const name = "greeter.default.svc.cluster.local:50051"
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: &core.Node{Id: "grpc~10.0.0.9~client"},
		TypeUrl: resourcev3.ListenerType, ResourceNames: []string{name}}); err != nil {
		t.Fatal(err)
	}
	first := recvListeners(t, st)
	if len(first.names) != 0 {
		t.Fatalf("listeners %v in an empty cluster", first.names)
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResourceNames: []string{name},
		VersionInfo: first.version, ResponseNonce: first.nonce}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "greeter"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.20", Selector: map[string]string{"app": "greeter"},
			Ports: []corev1.ServicePort{{Name: "grpc", Port: 50051}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := recvListeners(t, st).names; len(got) != 1 || got[0] != name {
		t.Fatalf("after the Service appeared the client has listeners %v, want [%s]", got, name)
	}
}

// fakeControlPlane starts discovery on kube (and empty Istio, Gateway API
// and dynamic fakes), an xDS server and the push's translator, without
// pushing.
func fakeControlPlane(ctx context.Context, t *testing.T, kube *fake.Clientset) (*discovery.Cluster, *xds.Server, *translator) {
	t.Helper()
	// Istio's fake clientset cannot serve watch-list (see control/discovery's
	// TestMain).
	if os.Getenv("KUBE_FEATURE_WatchListClient") == "" {
		t.Setenv("KUBE_FEATURE_WatchListClient", "false")
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cluster, err := discovery.New(quiet, discovery.Clients{Kube: kube, Istio: istiofake.NewSimpleClientset(),
		Gateway: gatewayfake.NewSimpleClientset(), Dynamic: fakedynamic.NewSimpleDynamicClient(runtime.NewScheme())})
	if err != nil {
		t.Fatal(err)
	}
	if err := cluster.Start(ctx); err != nil {
		t.Fatal(err)
	}
	x := xds.New(ctx, quiet, prometheus.NewRegistry())
	tr := newTranslator(Options{TrustDomain: "cluster.local", DomainSuffix: "cluster.local", RootNamespace: "istio-system"},
		quiet, cluster, x, prometheus.NewRegistry())
	return cluster, x, tr
}

func grpcClient(ctx context.Context, t *testing.T, x *xds.Server) discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(xdstest.Dial(t, x)).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

type listenersResponse struct {
	names          []string
	version, nonce string
}

func recvListeners(t *testing.T, st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient) listenersResponse {
	t.Helper()
	resp, err := st.Recv()
	if err != nil {
		t.Fatalf("no answer to the gRPC client: %v", err)
	}
	r := listenersResponse{version: resp.GetVersionInfo(), nonce: resp.GetNonce()}
	for _, a := range resp.GetResources() {
		var l listenerv3.Listener
		if err := a.UnmarshalTo(&l); err != nil {
			t.Fatal(err)
		}
		r.names = append(r.names, l.GetName())
	}
	return r
}
