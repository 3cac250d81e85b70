package xds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weft-mesh/weft/internal/await"
)

// serveWithCallers is serve with an interceptor that attaches the caller
// named in metadata "x-test-caller" (<ns>/<sa>), as the production token
// interceptor attaches the token's service account.
func serveWithCallers(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		md, _ := metadata.FromIncomingContext(ss.Context())
		if v := md.Get("x-test-caller"); len(v) == 1 {
			ns, sa, _ := strings.Cut(v[0], "/")
			return h(srv, ctxStream{ss, WithCaller(ss.Context(), Caller{Namespace: ns, ServiceAccount: sa})})
		}
		return h(srv, ss)
	}))
	s.Register(g)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return ln.Addr().String()
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c ctxStream) Context() context.Context { return c.ctx }

// firstDelta opens a delta stream as caller claiming nodeID and returns the
// first response or the stream's error.
func firstDelta(t *testing.T, addr, caller, nodeID string) (*discovery.DeltaDiscoveryResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-test-caller", caller), 5*time.Second)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(dial(t, addr)).DeltaAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	if err := st.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: nodeID}, TypeUrl: resourcev3.ListenerType}); err != nil {
		return nil, err
	}
	return st.Recv()
}

// TestWaypointNodeIDMustBeTheCaller: a workload cannot read another
// waypoint's configuration by claiming its node ID.
func TestWaypointNodeIDMustBeTheCaller(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(ctx, quiet, prometheus.NewRegistry())
	// As pushed while gRPC clients are connected (grpcgroup.go).
	s.SetWaypointSnapshots("1", map[string]Resources{"default/wp": group("reviews.default.svc.cluster.local:9080"), GroupGRPC: {}})
	addr := serveWithCallers(t, s)

	resp, err := firstDelta(t, addr, "default/wp", "waypoint~default/wp~wp-1")
	if err != nil || len(resp.GetResources()) != 1 {
		t.Fatalf("the waypoint itself: %v resources, err %v", len(resp.GetResources()), err)
	}
	_, err = firstDelta(t, addr, "default/curl", "waypoint~default/wp~x")
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("another service account claiming the waypoint: err %v, want PermissionDenied", err)
	}
	// gRPC clients and other nodes are not tied to an identity.
	if _, err := firstDelta(t, addr, "default/curl", "grpc~client"); err != nil {
		t.Fatalf("grpc client: %v", err)
	}
}

// TestGatewayNodeIDMustBeTheCaller: an ingress gateway's snapshot is served
// only to its own service account, and never to a waypoint of the same name.
func TestGatewayNodeIDMustBeTheCaller(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(ctx, quiet, prometheus.NewRegistry())
	s.SetWaypointSnapshots("1", map[string]Resources{
		GatewayGroup("weft-ingress/weft-ingress"): group("http.8080"),
		"weft-ingress/weft-ingress":               group("a.weft-ingress.svc.cluster.local:80", "b.weft-ingress.svc.cluster.local:80"),
	})
	addr := serveWithCallers(t, s)

	resp, err := firstDelta(t, addr, "weft-ingress/weft-ingress", "gateway~weft-ingress/weft-ingress~gw-1")
	if err != nil || len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != "http.8080" {
		t.Fatalf("the gateway itself: %v, err %v; want its own listener http.8080", resp.GetResources(), err)
	}
	_, err = firstDelta(t, addr, "default/productpage", "gateway~weft-ingress/weft-ingress~x")
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("another service account claiming the gateway: err %v, want PermissionDenied", err)
	}
}

// TestClientsNameTheCallersNamespace: /debug/syncz scopes clients by the
// namespace of the service account that authenticated the stream, which a
// client cannot choose (its node ID it can).
func TestClientsNameTheCallersNamespace(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(ctx, quiet, prometheus.NewRegistry())
	addr := serveWithCallers(t, s)
	sctx := metadata.AppendToOutgoingContext(ctx, "x-test-caller", "tenant-a/client")
	st, err := discovery.NewAggregatedDiscoveryServiceClient(dial(t, addr)).DeltaAggregatedResources(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: "grpc~claims-weft-system"}, TypeUrl: resourcev3.ListenerType}); err != nil {
		t.Fatal(err)
	}
	await.NoError(t, "the stream listed with its caller's namespace", func() error {
		c, err := clientNamed(s, "grpc~claims-weft-system")
		if err != nil {
			return err
		}
		if c.Namespace != "tenant-a" {
			return fmt.Errorf("namespace %q, want tenant-a", c.Namespace)
		}
		return nil
	})
}

// TestStreamKindsNeverShareACaller attacks the stream bookkeeping: a
// state-of-the-world stream and a delta stream must never be confused, or
// one stream's requests would be checked against the other's caller (or
// against none once the other closed). The attacker holds a
// state-of-the-world stream as its own service account while a waypoint
// connects over delta, then disconnects, then claims the waypoint's node ID.
func TestStreamKindsNeverShareACaller(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(ctx, quiet, prometheus.NewRegistry())
	// As pushed while gRPC clients are connected (grpcgroup.go).
	s.SetWaypointSnapshots("1", map[string]Resources{"default/wp": group("reviews.default.svc.cluster.local:9080"), GroupGRPC: {}})
	addr := serveWithCallers(t, s)

	actx := metadata.AppendToOutgoingContext(ctx, "x-test-caller", "tenant/attacker")
	attacker := newSotw(actx, t, dial(t, addr), "grpc~attacker")
	attacker.send(&discovery.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResourceNames: []string{"x"}})
	first, err := attacker.recv(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The waypoint comes and goes (a restart, a reconnect).
	if resp, err := firstDelta(t, addr, "default/wp", "waypoint~default/wp~wp-1"); err != nil || len(resp.GetResources()) != 1 {
		t.Fatalf("the waypoint itself: %v, err %v", resp, err)
	}
	await.NoError(t, "the waypoint's stream closed", func() error {
		if _, err := clientNamed(s, "waypoint~default/wp~wp-1"); err == nil {
			return errors.New("still listed")
		}
		return nil
	})

	attacker.node = &core.Node{Id: "waypoint~default/wp~x"}
	attacker.send(&discovery.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResponseNonce: first.GetNonce(),
		VersionInfo: first.GetVersionInfo(), ResourceNames: []string{"reviews.default.svc.cluster.local:9080"}})
	resp, err := attacker.recv(5 * time.Second)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("claiming the waypoint's node ID: listeners %v, err %v; want PermissionDenied", resourceNames(t, resp), err)
	}
}
