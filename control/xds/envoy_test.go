package xds

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/status"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/pkg/xdsclient"
)

var envoyTypes = []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType}

// group builds a consistent group: one HCM listener per name with RDS of
// the same name, one EDS cluster and its CLA.
func group(names ...string) Resources {
	var r Resources
	for _, n := range names {
		hcm, _ := anypb.New(&hcmv3.HttpConnectionManager{
			StatPrefix: n,
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
				RouteConfigName: n,
				ConfigSource:    &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}},
			}},
		})
		r.Listeners = append(r.Listeners, &listenerv3.Listener{Name: n, ApiListener: &listenerv3.ApiListener{ApiListener: hcm}})
		cluster := "outbound|80||" + n
		r.Routes = append(r.Routes, &routev3.RouteConfiguration{Name: n, VirtualHosts: []*routev3.VirtualHost{{
			Name: n, Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
			}},
		}}})
		r.Clusters = append(r.Clusters, &clusterv3.Cluster{
			Name:                 cluster,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}},
		})
		r.Endpoints = append(r.Endpoints, &endpointv3.ClusterLoadAssignment{ClusterName: cluster})
	}
	return r
}

func TestNodeGroup(t *testing.T) {
	for id, want := range map[string]string{
		"waypoint~default/wp~wp-7c9f-abcde":   "default/wp",
		"waypoint~default/wp":                 "default/wp",
		"waypoint~default~pod":                "",
		"waypoint~/wp~pod":                    "",
		"waypoint~a/b/c~pod":                  "",
		"gateway~weft-ingress/weft-ingress~p": "gateway:weft-ingress/weft-ingress",
		"gateway~weft-ingress~pod":            "",
		"gateway~a/b/c~pod":                   "",
		"grpc~10.0.0.1~client":                "grpc",
		"grpc~":                               "grpc",
		"node-agent-1":                        "",
		"":                                    "",
		"sidecar~10.0.0.1~x.default~default":  "",
	} {
		if got := NodeGroup(id); got != want {
			t.Errorf("NodeGroup(%q) = %q, want %q", id, got, want)
		}
	}
}

func names(m map[string]proto.Message) []string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// subscriber is a delta xDS client and the resources it accepted.
type subscriber struct {
	*xdsclient.Client
	*xdsclient.Mirror
}

// deltaClient subscribes (wildcard) to types as node id.
func deltaClient(ctx context.Context, t *testing.T, conn grpc.ClientConnInterface, id string, types ...string) subscriber {
	m := xdsclient.NewMirror(nil)
	c := xdsclient.New(xdsclient.Config{Conn: conn, Node: &core.Node{Id: id}, Types: types, Log: quiet}, m.Handle)
	go c.Run(ctx)
	return subscriber{c, m}
}

func wantNames(t *testing.T, c subscriber, typ string, want ...string) {
	t.Helper()
	slices.Sort(want)
	await.NoError(t, typ, func() error {
		if got := names(c.Snapshot(typ)); !slices.Equal(got, want) {
			return fmt.Errorf("%s = %v, want %v", typ, got, want)
		}
		return nil
	})
}

func TestDeltaWaypointGroupsAndWorkloadTypesOnOneStream(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(ctx, quiet, prometheus.NewRegistry())
	s.Update(AddressType, addresses(workload("a", "10.0.0.1")))
	s.SetWaypointSnapshots("1", map[string]Resources{
		"default/wp": group("reviews.default.svc.cluster.local:9080"),
		"other/wp":   group("ratings.other.svc.cluster.local:9080"),
		GroupGRPC:    group("a.default.svc.cluster.local:80", "b.default.svc.cluster.local:80"),
	})
	conn := dial(t, serve(t, s))

	// A waypoint: its own group, and the Weft types on the same stream.
	wp := deltaClient(ctx, t, conn, "waypoint~default/wp~wp-1", append([]string{AddressType}, envoyTypes...)...)
	wantNames(t, wp, resourcev3.ListenerType, "reviews.default.svc.cluster.local:9080")
	wantNames(t, wp, resourcev3.RouteType, "reviews.default.svc.cluster.local:9080")
	wantNames(t, wp, resourcev3.ClusterType, "outbound|80||reviews.default.svc.cluster.local:9080")
	wantNames(t, wp, resourcev3.EndpointType, "outbound|80||reviews.default.svc.cluster.local:9080")
	wantNames(t, wp, AddressType, "Kubernetes//Pod/default/a")

	grpcClient := deltaClient(ctx, t, conn, "grpc~10.1.1.1~client", envoyTypes...)
	wantNames(t, grpcClient, resourcev3.ListenerType, "a.default.svc.cluster.local:80", "b.default.svc.cluster.local:80")

	// An unknown node: nothing, no error, and its Weft types still work.
	other := deltaClient(ctx, t, conn, "node-agent-1", append([]string{AddressType}, envoyTypes...)...)
	wantNames(t, other, AddressType, "Kubernetes//Pod/default/a")
	await.NoError(t, "unknown node synced", func() error {
		if !other.Synced() {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	for _, typ := range envoyTypes {
		if got := other.Snapshot(typ); len(got) != 0 {
			t.Errorf("unknown node got %s %v", typ, names(got))
		}
	}

	// A change of one group reaches only that group; the others keep their
	// version.
	v := s.waypointVersion("other/wp")
	vg := s.waypointVersion(GroupGRPC)
	if n := s.SetWaypointSnapshots("2", map[string]Resources{
		"default/wp": group("reviews.default.svc.cluster.local:9080", "details.default.svc.cluster.local:9080"),
		"other/wp":   group("ratings.other.svc.cluster.local:9080"),
		GroupGRPC:    group("a.default.svc.cluster.local:80", "b.default.svc.cluster.local:80"),
	}); n != 1 {
		t.Errorf("changed groups = %d, want 1", n)
	}
	if s.waypointVersion("other/wp") != v || s.waypointVersion(GroupGRPC) != vg {
		t.Errorf("unchanged groups got new versions")
	}
	wantNames(t, wp, resourcev3.ListenerType, "reviews.default.svc.cluster.local:9080", "details.default.svc.cluster.local:9080")
	wantNames(t, wp, resourcev3.EndpointType, "outbound|80||reviews.default.svc.cluster.local:9080", "outbound|80||details.default.svc.cluster.local:9080")

	// The Weft types still update on the waypoint's stream.
	s.Update(AddressType, addresses(workload("a", "10.0.0.1"), workload("b", "10.0.0.2")))
	wantNames(t, wp, AddressType, "Kubernetes//Pod/default/a", "Kubernetes//Pod/default/b")

	// A group that disappears is emptied for its clients.
	s.SetWaypointSnapshots("3", map[string]Resources{GroupGRPC: group("a.default.svc.cluster.local:80", "b.default.svc.cluster.local:80")})
	wantNames(t, wp, resourcev3.ListenerType)
	wantNames(t, wp, resourcev3.ClusterType)
}

// sotw is a raw state-of-the-world ADS stream.
type sotw struct {
	t      *testing.T
	stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *core.Node
	// pending is a Recv still running after a recv timed out.
	pending chan sotwResult
}

func newSotw(ctx context.Context, t *testing.T, conn grpc.ClientConnInterface, id string) *sotw {
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &sotw{t: t, stream: st, node: &core.Node{Id: id}}
}

func (c *sotw) send(req *discovery.DiscoveryRequest) {
	c.t.Helper()
	req.Node, c.node = c.node, nil // the node on the first request only, like gRPC
	if err := c.stream.Send(req); err != nil {
		c.t.Fatal(err)
	}
}

type sotwResult struct {
	resp *discovery.DiscoveryResponse
	err  error
}

// recv waits for one response (or fails after d). A Recv that timed out
// is still pending and delivers to the next call, so no response is lost.
func (c *sotw) recv(d time.Duration) (*discovery.DiscoveryResponse, error) {
	if c.pending == nil {
		ch := make(chan sotwResult, 1)
		go func() {
			r, err := c.stream.Recv()
			ch <- sotwResult{r, err}
		}()
		c.pending = ch
	}
	select {
	case r := <-c.pending:
		c.pending = nil
		return r.resp, r.err
	case <-time.After(d):
		return nil, fmt.Errorf("no response within %s", d)
	}
}

func resourceNames(t *testing.T, resp *discovery.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range resp.GetResources() {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		switch r := m.(type) {
		case *listenerv3.Listener:
			out = append(out, r.GetName())
		case *routev3.RouteConfiguration:
			out = append(out, r.GetName())
		case *clusterv3.Cluster:
			out = append(out, r.GetName())
		case *endpointv3.ClusterLoadAssignment:
			out = append(out, r.GetClusterName())
		default:
			out = append(out, fmt.Sprintf("%T", m))
		}
	}
	slices.Sort(out)
	return out
}

func TestSotwProxylessGRPCNamedSubscriptions(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(ctx, quiet, prometheus.NewRegistry())
	s.SetWaypointSnapshots("1", map[string]Resources{
		"default/wp": group("reviews.default.svc.cluster.local:9080"),
		GroupGRPC:    group("a.default.svc.cluster.local:80", "b.default.svc.cluster.local:80"),
	})
	conn := dial(t, serve(t, s))
	c := newSotw(ctx, t, conn, "grpc~10.1.1.1~client")

	// The gRPC xDS client's sequence: LDS by target name, then RDS, CDS, EDS.
	steps := []struct{ typ, name string }{
		{resourcev3.ListenerType, "a.default.svc.cluster.local:80"},
		{resourcev3.RouteType, "a.default.svc.cluster.local:80"},
		{resourcev3.ClusterType, "outbound|80||a.default.svc.cluster.local:80"},
		{resourcev3.EndpointType, "outbound|80||a.default.svc.cluster.local:80"},
	}
	for _, st := range steps {
		c.send(&discovery.DiscoveryRequest{TypeUrl: st.typ, ResourceNames: []string{st.name}})
		resp, err := c.recv(5 * time.Second)
		if err != nil {
			t.Fatalf("%s %s: %v", st.typ, st.name, err)
		}
		if got := resourceNames(t, resp); !slices.Equal(got, []string{st.name}) {
			t.Fatalf("%s = %v, want [%s]", st.typ, got, st.name)
		}
		c.send(&discovery.DiscoveryRequest{TypeUrl: st.typ, ResourceNames: []string{st.name}, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
	}

	// A change to the group pushes the new state of the subscribed listener.
	r := group("a.default.svc.cluster.local:80", "b.default.svc.cluster.local:80")
	r.Listeners[0].StatPrefix = "changed"
	s.SetWaypointSnapshots("2", map[string]Resources{"default/wp": group("reviews.default.svc.cluster.local:9080"), GroupGRPC: r})
	for {
		resp, err := c.recv(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetTypeUrl() != resourcev3.ListenerType {
			c.send(&discovery.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResourceNames: resourceNames(t, resp), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
			continue
		}
		var l listenerv3.Listener
		if err := resp.GetResources()[0].UnmarshalTo(&l); err != nil || l.GetStatPrefix() != "changed" {
			t.Fatalf("pushed listener %v (%v)", &l, err)
		}
		break
	}
}

func TestSotwWaypointAndUnknownNode(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(ctx, quiet, prometheus.NewRegistry())
	s.Update(AddressType, addresses(workload("a", "10.0.0.1")))
	s.SetWaypointSnapshots("1", map[string]Resources{
		"default/wp": group("reviews.default.svc.cluster.local:9080"),
		"other/wp":   group("ratings.other.svc.cluster.local:9080"),
		GroupGRPC:    group("a.default.svc.cluster.local:80"),
	})
	conn := dial(t, serve(t, s))

	// Envoy-style wildcard LDS and CDS for a waypoint: exactly its group.
	wp := newSotw(ctx, t, conn, "waypoint~default/wp~wp-1")
	for typ, want := range map[string]string{
		resourcev3.ListenerType: "reviews.default.svc.cluster.local:9080",
		resourcev3.ClusterType:  "outbound|80||reviews.default.svc.cluster.local:9080",
	} {
		wp.send(&discovery.DiscoveryRequest{TypeUrl: typ})
		resp, err := wp.recv(5 * time.Second)
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if got := resourceNames(t, resp); !slices.Equal(got, []string{want}) {
			t.Errorf("%s = %v, want [%s]", typ, got, want)
		}
	}
	// Weft's types are served over delta only (DESIGN.md): a SotW request
	// for one is refused with the reason, not left unanswered.
	wp.send(&discovery.DiscoveryRequest{TypeUrl: AddressType})
	resp, err := wp.recv(5 * time.Second)
	if grpcstatus.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "delta xDS only") {
		t.Fatalf("Address over SotW: %v, err %v; want InvalidArgument naming delta", resp, err)
	}

	// An unknown node: an empty answer, the stream stays up.
	other := newSotw(ctx, t, conn, "something-else")
	other.send(&discovery.DiscoveryRequest{TypeUrl: resourcev3.ListenerType})
	resp, err = other.recv(5 * time.Second)
	if err != nil {
		t.Fatalf("unknown node: %v", err)
	}
	if len(resp.GetResources()) != 0 {
		t.Errorf("unknown node got %v", resourceNames(t, resp))
	}
	other.send(&discovery.DiscoveryRequest{TypeUrl: resourcev3.ClusterType})
	if resp, err = other.recv(5 * time.Second); err != nil || resp.GetTypeUrl() != resourcev3.ClusterType {
		t.Fatalf("unknown node's CDS after the empty LDS: %v, %v", resp, err)
	}
}

func TestSetWaypointSnapshotsUnchangedKeepsVersion(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(ctx, quiet, prometheus.NewRegistry())
	if n := s.SetWaypointSnapshots("1", map[string]Resources{"default/wp": group("x:80", "y:80")}); n != 1 {
		t.Fatalf("first set: %d changed", n)
	}
	v := s.waypointVersion("default/wp")
	// Same content in another order and with another version: no change.
	r := group("y:80", "x:80")
	if n := s.SetWaypointSnapshots("2", map[string]Resources{"default/wp": r}); n != 0 {
		t.Fatalf("reordered set: %d changed", n)
	}
	if got := s.waypointVersion("default/wp"); got != v {
		t.Fatalf("version %q -> %q without a change", v, got)
	}
	if n := s.SetWaypointSnapshots("3", map[string]Resources{"default/wp": group("x:80")}); n != 1 {
		t.Fatalf("changed set: %d changed", n)
	}
	if got := s.waypointVersion("default/wp"); got == v || got[:2] != "3-" {
		t.Fatalf("version after change = %q", got)
	}
}

func TestWaypointWithoutResourcesGetsEmptyAnswerThenResources(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(ctx, quiet, prometheus.NewRegistry())
	s.Update(AddressType, addresses(workload("a", "10.0.0.1")))
	conn := dial(t, serve(t, s))

	// Nothing translated for this waypoint (no service uses it yet): it
	// still gets an answer for every type, so it can become ready.
	wp := deltaClient(ctx, t, conn, "waypoint~default/new~new-1", append([]string{AddressType}, envoyTypes...)...)
	await.NoError(t, "synced with nothing", func() error {
		if !wp.Synced() {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	// SotW alike.
	c := newSotw(ctx, t, conn, "waypoint~default/other~other-1")
	c.send(&discovery.DiscoveryRequest{TypeUrl: resourcev3.ListenerType})
	if resp, err := c.recv(5 * time.Second); err != nil || len(resp.GetResources()) != 0 {
		t.Fatalf("SotW LDS for an untranslated waypoint: %v, %v", resp, err)
	}
	// Then a service starts using it.
	s.SetWaypointSnapshots("1", map[string]Resources{"default/new": group("reviews.default.svc.cluster.local:9080")})
	wantNames(t, wp, resourcev3.ListenerType, "reviews.default.svc.cluster.local:9080")
	wantNames(t, wp, resourcev3.EndpointType, "outbound|80||reviews.default.svc.cluster.local:9080")
}

// TestSotwNACKIsNotAnsweredUntilAChange: a client rejecting a snapshot
// must not get the same snapshot back at once (that loop ran at thousands
// of round trips a second); the next change reaches it.
func TestSotwNACKIsNotAnsweredUntilAChange(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(ctx, quiet, prometheus.NewRegistry())
	s.SetWaypointSnapshots("1", map[string]Resources{GroupGRPC: group("a.default.svc.cluster.local:80")})
	c := newSotw(ctx, t, dial(t, serve(t, s)), "grpc~10.1.1.1~client")
	const name = "a.default.svc.cluster.local:80"
	c.send(&discovery.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResourceNames: []string{name}})
	resp, err := c.recv(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// NACK: the previous accepted version ("") and an error.
	c.send(&discovery.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResourceNames: []string{name}, ResponseNonce: resp.GetNonce(),
		ErrorDetail: &status.Status{Code: 3, Message: "listener rejected"}})
	if again, err := c.recv(500 * time.Millisecond); err == nil {
		t.Fatalf("the rejected snapshot was sent again at once (version %s)", again.GetVersionInfo())
	}
	r := group(name)
	r.Listeners[0].StatPrefix = "fixed"
	s.SetWaypointSnapshots("2", map[string]Resources{GroupGRPC: r})
	next, err := c.recv(5 * time.Second)
	if err != nil {
		t.Fatalf("the change after a NACK never arrived: %v", err)
	}
	if next.GetVersionInfo() == resp.GetVersionInfo() {
		t.Fatalf("got version %s again", next.GetVersionInfo())
	}
}
