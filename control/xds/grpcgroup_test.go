package xds

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weft-mesh/weft/internal/await"
)

// awaitGRPCWanted fails unless GRPCWanted signals within a few seconds.
func awaitGRPCWanted(t *testing.T, s *Server, why string) {
	t.Helper()
	select {
	case <-s.GRPCWanted():
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no GRPCWanted signal", why)
	}
}

// TestGRPCGroupOnlyWhileClientsAreConnected: snapshots without the gRPC
// group (the control plane leaves it out with no gRPC client connected)
// never serve a gRPC client an empty or stale group: the client's first
// request asks for a push (GRPCWanted) and its first response is the
// pushed group. Once the last client left, a push without the group drops
// it; a push without it while a client is connected keeps it and asks
// for another push.
func TestGRPCGroupOnlyWhileClientsAreConnected(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(ctx, quiet, prometheus.NewRegistry())
	wp := map[string]Resources{"default/wp": group("reviews.default.svc.cluster.local:9080")}
	s.SetWaypointSnapshots("1", wp)
	if s.HasGRPCClients() {
		t.Fatal("gRPC clients before any connected")
	}
	select {
	case <-s.GRPCWanted():
		t.Fatal("GRPCWanted without a gRPC client")
	default:
	}

	const name = "a.default.svc.cluster.local:80"
	cctx, disconnect := context.WithCancel(ctx)
	c := newSotw(cctx, t, dial(t, serve(t, s)), "grpc~10.1.1.1~client")
	c.send(&discovery.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResourceNames: []string{name}})
	awaitGRPCWanted(t, s, "a gRPC client connected")
	if !s.HasGRPCClients() {
		t.Fatal("the connected gRPC client is not counted")
	}
	with := map[string]Resources{"default/wp": wp["default/wp"], GroupGRPC: group(name)}
	s.SetWaypointSnapshots("2", with)
	resp, err := c.recv(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := resourceNames(t, resp); !slices.Equal(got, []string{name}) {
		t.Fatalf("the client's first response has %v, want the pushed group's %s", got, name)
	}

	// A push that started before the client came left the group out.
	v := s.waypointVersion(GroupGRPC)
	s.SetWaypointSnapshots("3", wp)
	if s.waypointVersion(GroupGRPC) != v {
		t.Error("a push without the group replaced it while a client is connected")
	}
	awaitGRPCWanted(t, s, "a push left the group out while a client is connected")

	disconnect()
	await.NoError(t, "the gRPC client's stream closed", func() error {
		if s.HasGRPCClients() {
			return errors.New("still counted")
		}
		return nil
	})
	s.SetWaypointSnapshots("4", wp)
	if v := s.waypointVersion(GroupGRPC); v != "" {
		t.Errorf("with no client left, the gRPC group is still served (version %s)", v)
	}
	if s.waypointVersion("default/wp") == "" {
		t.Error("the waypoint's group went with the gRPC group")
	}
}
