package xds

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/pkg/xdsclient"
)

func clientNamed(s *Server, node string) (ClientStatus, error) {
	for _, c := range s.Clients() {
		if c.Node == node {
			return c, nil
		}
	}
	return ClientStatus{}, fmt.Errorf("%s not connected; clients %+v", node, s.Clients())
}

func wantSynced(t *testing.T, s *Server, node string, synced bool) ClientStatus {
	t.Helper()
	var got ClientStatus
	await.NoError(t, fmt.Sprintf("%s synced=%v", node, synced), func() error {
		c, err := clientNamed(s, node)
		if err != nil {
			return err
		}
		got = c
		if c.Synced != synced {
			return fmt.Errorf("%+v", c)
		}
		return nil
	})
	return got
}

func TestClientsReportAckedVersions(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(ctx, quiet, prometheus.NewRegistry())
	s.Update(AddressType, addresses(workload("a", "10.0.0.1")))
	s.SetWaypointSnapshots("1", map[string]Resources{"default/wp": group("x:80")})
	conn := dial(t, serve(t, s))

	// A node agent: both Weft types, delta.
	agent := deltaClient(ctx, t, conn, "node-agent~node-0", AddressType, AuthorizationType)
	c := wantSynced(t, s, "node-agent~node-0", true)
	if !c.Delta || len(c.Types) != 2 {
		t.Fatalf("agent status %+v", c)
	}
	for _, ts := range c.Types {
		if ts.Acked != ts.Latest || ts.Pending != 0 {
			t.Fatalf("type %+v", ts)
		}
	}
	// A change is acknowledged: synced again at the new version.
	s.Update(AddressType, addresses(workload("a", "10.0.0.2")))
	await.NoError(t, "new version acked", func() error {
		c, err := clientNamed(s, "node-agent~node-0")
		if err != nil {
			return err
		}
		if !c.Synced || c.Types[0].Acked != "2" {
			return fmt.Errorf("%+v", c)
		}
		return nil
	})
	_ = agent

	// A waypoint: Envoy types of its group.
	deltaClient(ctx, t, conn, "waypoint~default/wp~wp-0", resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType, resourcev3.EndpointType)
	wp := wantSynced(t, s, "waypoint~default/wp~wp-0", true)
	if wp.Types[0].Latest != s.waypointVersion("default/wp") {
		t.Fatalf("waypoint status %+v", wp)
	}
	s.SetWaypointSnapshots("2", map[string]Resources{"default/wp": group("x:80", "y:80")})
	await.NoError(t, "waypoint acked the new snapshot", func() error {
		c, err := clientNamed(s, "waypoint~default/wp~wp-0")
		if err != nil {
			return err
		}
		if !c.Synced || c.Types[0].Latest != s.waypointVersion("default/wp") {
			return fmt.Errorf("%+v", c)
		}
		return nil
	})
}

func TestClientsReportNACKAsNotSynced(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(ctx, quiet, prometheus.NewRegistry())
	s.Update(AddressType, addresses(workload("a", "10.0.0.1")))
	conn := dial(t, serve(t, s))
	rec := newRecorder()
	go xdsclient.New(xdsclient.Config{Conn: conn, Node: &core.Node{Id: "node-agent~n"}, Types: []string{AddressType}, Log: quiet},
		rec.handle).Run(ctx)
	wantSynced(t, s, "node-agent~n", true)
	rec.mu.Lock()
	rec.reject = errors.New("bad config")
	rec.mu.Unlock()
	s.Update(AddressType, addresses(workload("a", "10.0.0.9")))
	c := wantSynced(t, s, "node-agent~n", false)
	await.NoError(t, "NACK recorded", func() error {
		c, _ = clientNamed(s, "node-agent~n")
		if c.Types[0].NACK == "" {
			return fmt.Errorf("%+v", c)
		}
		return nil
	})
	if c.Types[0].Acked != "1" || c.Types[0].Latest != "2" {
		t.Fatalf("NACKed type %+v", c.Types[0])
	}
	cancel()
}
