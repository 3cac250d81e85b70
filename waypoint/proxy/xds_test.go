package proxy

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/pkg/xdsclient"
)

// TestDeltaADSFromControlPlane feeds the waypoint from a real
// go-control-plane delta ADS server through pkg/xdsclient: it serves once
// synced, NACKs a bad cluster while serving the rest, and keeps the last
// good configuration when the control plane goes away.
func TestDeltaADSFromControlPlane(t *testing.T) {
	e := newEnv(t)
	b := startBackend(t, "a", nil)
	const node = "waypoint~default/waypoint~waypoint-0"
	snaps := cache.NewSnapshotCache(true, cache.IDHash{}, nil)
	resources := func(extra ...types.Resource) map[resourcev3.Type][]types.Resource {
		return map[resourcev3.Type][]types.Resource{
			resourcev3.ClusterType:  append([]types.Resource{edsCluster(clusterName(""))}, extra...),
			resourcev3.EndpointType: {cla(clusterName(""), hboneEP(b, "v1"))},
			resourcev3.ListenerType: {listener(hcmChain(t, chainKey, vip, vipPort, chainKey))},
			resourcev3.RouteType:    {routeConfig(chainKey, svcHost, routeTo("default/reviews.0", clusterName("")))},
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	setSnap := func(version string, r map[resourcev3.Type][]types.Resource) {
		s, err := cache.NewSnapshot(version, r)
		if err != nil {
			t.Fatal(err)
		}
		if err := snaps.SetSnapshot(ctx, node, s); err != nil {
			t.Fatal(err)
		}
	}
	setSnap("1", resources())

	acks := make(chan *discovery.DeltaDiscoveryRequest, 64)
	g := grpc.NewServer()
	discovery.RegisterAggregatedDiscoveryServiceServer(g, server.NewServer(ctx, snaps, server.CallbackFuncs{
		StreamDeltaRequestFunc: func(_ int64, r *discovery.DeltaDiscoveryRequest) error {
			select {
			case acks <- r:
			default:
			}
			return nil
		},
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	defer g.Stop()

	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	xc := xdsclient.New(xdsclient.Config{Conn: conn, Node: &core.Node{Id: node}, Types: Types(),
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Log: slog.New(slog.DiscardHandler)}, e.wp.Store.Handle)
	go xc.Run(ctx)
	await.True(t, "the store to sync", e.wp.Store.Synced)
	c := e.httpClient(vipAuthority())
	if code, name := get(t, c, "/", nil); code != 200 || name != "a" {
		t.Fatalf("after sync: %d from %q", code, name)
	}

	// A bad cluster next to the good ones: NACK with the reason; still serving.
	bad := edsCluster("outbound|1||bad.default.svc.cluster.local", func(c *clusterv3.Cluster) {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
	})
	setSnap("2", resources(bad))
	waitForNACK(t, acks, "bad.default.svc.cluster.local")
	if code, _ := get(t, c, "/", nil); code != 200 {
		t.Fatalf("after NACK: %d", code)
	}

	// The control plane goes away: the last good configuration serves on.
	g.Stop()
	for range 5 {
		if code, _ := get(t, c, "/", nil); code != 200 {
			t.Fatalf("control plane gone: %d", code)
		}
	}
}

func waitForNACK(t *testing.T, acks <-chan *discovery.DeltaDiscoveryRequest, want string) {
	t.Helper()
	timeout := time.After(testTimeout)
	for {
		select {
		case r := <-acks:
			if d := r.GetErrorDetail(); d != nil && strings.Contains(d.GetMessage(), want) {
				return
			}
		case <-timeout:
			t.Fatalf("no NACK mentioning %q", want)
		}
	}
}

// TestTracingSpans: with tracing on, the waypoint continues the incoming
// W3C context in a server span and sends that span's context upstream in
// both W3C and B3 form.
func TestTracingSpans(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tr := NewTracing(sdktrace.NewSimpleSpanProcessor(exp), "weft-waypoint.test")
	defer tr.Shutdown(context.Background())
	e := newEnv(t, func(o *Options) { o.Tracing = tr })
	b := startBackend(t, "a", nil)
	e.simple(nil, b)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	code, _ := get(t, e.httpClient(vipAuthority()), "/traced", map[string]string{"traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"})
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	await.True(t, "the span exported", func() bool { return len(exp.GetSpans()) > 0 }) // ended after the response
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans exported", len(spans))
	}
	sp := spans[0]
	if sp.SpanContext.TraceID().String() != traceID || sp.Parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Fatalf("span trace %s parent %s: did not continue the incoming context", sp.SpanContext.TraceID(), sp.Parent.SpanID())
	}
	if got, want := b.seenHeader("Traceparent"), "00-"+traceID+"-"+sp.SpanContext.SpanID().String()+"-01"; got != want {
		t.Fatalf("upstream traceparent %q, want the waypoint span %q", got, want)
	}
	if got := b.seenHeader("X-B3-Spanid"); got != sp.SpanContext.SpanID().String() {
		t.Fatalf("upstream x-b3-spanid %q, want %s", got, sp.SpanContext.SpanID())
	}
}
