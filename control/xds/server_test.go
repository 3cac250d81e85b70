package xds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/pkg/controlclient"
	"github.com/weft-mesh/weft/pkg/xdsclient"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func workload(name, ip string) *workloadv1.Address {
	return &workloadv1.Address{Type: &workloadv1.Address_Workload{Workload: &workloadv1.Workload{
		Uid: "Kubernetes//Pod/default/" + name, Name: name, Namespace: "default", Addresses: []string{ip},
		TunnelProtocol: workloadv1.TunnelProtocol_HBONE,
	}}}
}

func addresses(ws ...*workloadv1.Address) map[string]proto.Message {
	out := map[string]proto.Message{}
	for _, w := range ws {
		out[w.GetWorkload().GetUid()] = w
	}
	return out
}

// serve runs the server's ADS on a loopback listener until the test ends.
func serve(tb testing.TB, s *Server) string {
	tb.Helper()
	_, addr := serveAt(tb, s, "127.0.0.1:0")
	return addr
}

// recorder collects what the client's handler saw, and keeps what it
// accepted (Snapshot).
type recorder struct {
	mu       sync.Mutex
	updates  []map[string]proto.Message
	removed  [][]string
	reject   error
	accepted *xdsclient.Mirror
}

func newRecorder() *recorder {
	r := &recorder{}
	r.accepted = xdsclient.NewMirror(r.record)
	return r
}

// handle is the client's handler.
func (r *recorder) handle(typ string, upd map[string]proto.Message, rem []string) error {
	return r.accepted.Handle(typ, upd, rem)
}

// Snapshot returns the accepted resources of a type.
func (r *recorder) Snapshot(typ string) map[string]proto.Message { return r.accepted.Snapshot(typ) }

func (r *recorder) record(typ string, upd map[string]proto.Message, rem []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reject != nil {
		return r.reject
	}
	r.updates = append(r.updates, upd)
	r.removed = append(r.removed, rem)
	return nil
}

func (r *recorder) last() (map[string]proto.Message, []string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.updates) == 0 {
		return nil, nil, 0
	}
	return r.updates[len(r.updates)-1], r.removed[len(r.removed)-1], len(r.updates)
}

func dial(tb testing.TB, addr string) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, append(controlclient.Options(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

func TestDeltaPushesOnlyChanges(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	s := New(ctx, quiet, reg)
	a, b := workload("a", "10.0.0.1"), workload("b", "10.0.0.2")
	s.Update(AddressType, addresses(a, b))
	conn := dial(t, serve(t, s))

	rec := newRecorder()
	c := xdsclient.New(xdsclient.Config{Conn: conn, Node: &core.Node{Id: "node-0"}, Types: []string{AddressType}, Log: quiet}, rec.handle)
	go c.Run(ctx)
	await.NoError(t, "initial state", func() error {
		if got := len(rec.Snapshot(AddressType)); got != 2 {
			return fmt.Errorf("%d resources", got)
		}
		return nil
	})

	// Re-sending the same state pushes nothing.
	if n := s.Update(AddressType, addresses(a, b)); n != 0 {
		t.Fatalf("unchanged update reported %d changes", n)
	}
	// Changing one workload sends exactly that one.
	b2 := workload("b", "10.0.0.22")
	if n := s.Update(AddressType, addresses(a, b2)); n != 1 {
		t.Fatalf("one change reported as %d", n)
	}
	await.NoError(t, "incremental update", func() error {
		upd, _, _ := rec.last()
		if len(upd) != 1 || !proto.Equal(upd[b2.GetWorkload().GetUid()], b2) {
			return fmt.Errorf("last update %v", upd)
		}
		return nil
	})
	// Removing one sends a removal.
	s.Update(AddressType, addresses(b2))
	await.NoError(t, "removal", func() error {
		_, rem, _ := rec.last()
		if len(rem) != 1 || rem[0] != a.GetWorkload().GetUid() {
			return fmt.Errorf("last removal %v", rem)
		}
		return nil
	})
	if got := rec.Snapshot(AddressType); len(got) != 1 {
		t.Fatalf("client state %v", got)
	}
	if v := testutil.ToFloat64(s.metrics.clients); v != 1 {
		t.Errorf("connected clients = %v", v)
	}
}

func TestNackKeepsLastGoodState(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(ctx, quiet, prometheus.NewRegistry())
	s.Update(AddressType, addresses(workload("a", "10.0.0.1")))
	conn := dial(t, serve(t, s))
	rec := newRecorder()
	c := xdsclient.New(xdsclient.Config{Conn: conn, Node: &core.Node{Id: "n"}, Types: []string{AddressType}, Log: quiet}, rec.handle)
	go c.Run(ctx)
	await.NoError(t, "initial state", func() error {
		if len(rec.Snapshot(AddressType)) != 1 {
			return errors.New("not yet")
		}
		return nil
	})
	rec.mu.Lock()
	rec.reject = errors.New("bad config")
	rec.mu.Unlock()
	s.Update(AddressType, addresses(workload("a", "10.0.0.9")))
	await.NoError(t, "NACK counted", func() error {
		if v := testutil.ToFloat64(s.metrics.nacks.WithLabelValues(AddressType)); v != 1 {
			return fmt.Errorf("nacks = %v", v)
		}
		return nil
	})
	got := rec.Snapshot(AddressType)["Kubernetes//Pod/default/a"]
	if got.(*workloadv1.Address).GetWorkload().GetAddresses()[0] != "10.0.0.1" {
		t.Fatalf("NACKed config replaced the last good state: %v", got)
	}
}

func TestReconnectResumesAndKeepsStateWhileAway(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(ctx, quiet, prometheus.NewRegistry())
	a := workload("a", "10.0.0.1")
	s.Update(AddressType, addresses(a))
	g, addr := serveAt(t, s, "127.0.0.1:0")
	rec := newRecorder()
	c, streamEnded := resumingClient(ctx, t, addr, rec.handle)
	_, _, before := rec.last()

	// The control plane goes away: the client tells its handler to drop
	// nothing.
	g.Stop()
	streamEnded.Wait(t)
	if len(rec.Snapshot(AddressType)) != 1 {
		t.Fatal("state lost while the control plane is away")
	}
	// It comes back (same address) with one more workload: the client
	// reconnects and receives only the new one, not the one it has.
	b := workload("b", "10.0.0.2")
	s.Update(AddressType, addresses(a, b))
	serveAt(t, s, addr)
	await.NoError(t, "resync after reconnect", func() error {
		if len(rec.Snapshot(AddressType)) != 2 {
			return errors.New("not yet")
		}
		return nil
	})
	if c.Connects() < 2 {
		t.Errorf("connects = %d, want a reconnect", c.Connects())
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, upd := range rec.updates[before:] {
		if _, resent := upd[a.GetWorkload().GetUid()]; resent {
			t.Errorf("unchanged workload re-sent after reconnect")
		}
	}
}

// serveAt serves s's ADS at addr ("127.0.0.1:0" for any port) until
// stopped or the test ends, and returns the server and its address.
func serveAt(tb testing.TB, s *Server, addr string) (*grpc.Server, string) {
	tb.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	g := grpc.NewServer(ServerOptions()...)
	s.Register(g)
	go g.Serve(ln)
	tb.Cleanup(g.Stop)
	return g, ln.Addr().String()
}

// resumingClient is a synced client of addr that reconnects quickly, and
// the log line of its stream ending.
func resumingClient(ctx context.Context, t *testing.T, addr string, h xdsclient.Handler) (*xdsclient.Client, *await.LogLine) {
	t.Helper()
	streamEnded := await.NewLogLine("xds stream ended")
	c := xdsclient.New(xdsclient.Config{Conn: dial(t, addr), Node: &core.Node{Id: "n"}, Types: []string{AddressType},
		Log: slog.New(slog.NewTextHandler(streamEnded, nil)), MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}, h)
	go c.Run(ctx)
	await.NoError(t, "initial state", func() error {
		if !c.Synced() {
			return errors.New("not synced")
		}
		return nil
	})
	return c, streamEnded
}

// TestReconnectToANewServerGetsWhatChanged: a control plane that restarts
// (or a client that moves to another replica) must not take the versions a
// client resumes with for its own: the same name at the same version has to
// mean the same content, whichever server said it.
func TestReconnectToANewServerGetsWhatChanged(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	before, after := workload("a", "10.0.0.1"), workload("a", "10.0.0.99")
	s1 := New(ctx, quiet, prometheus.NewRegistry())
	s1.Update(AddressType, addresses(before))
	g1, addr := serveAt(t, s1, "127.0.0.1:0")
	rec := newRecorder()
	_, streamEnded := resumingClient(ctx, t, addr, rec.handle)
	g1.Stop()
	streamEnded.Wait(t)

	// A new server whose first state has the workload changed.
	s2 := New(ctx, quiet, prometheus.NewRegistry())
	s2.Update(AddressType, addresses(after))
	serveAt(t, s2, addr)
	await.NoError(t, "the changed workload after reconnecting", func() error {
		got := rec.Snapshot(AddressType)[after.GetWorkload().GetUid()]
		if !proto.Equal(got, after) {
			return fmt.Errorf("client holds %v", got)
		}
		return nil
	})
}

// TestSilentClientHoldsUpNoOne: a client that never answers gets no more
// responses (one in flight per type) and does not delay anyone else's.
func TestSilentClientHoldsUpNoOne(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(ctx, quiet, prometheus.NewRegistry())
	s.Update(AddressType, addresses(workload("a", "10.0.0.1")))
	conn := dial(t, serve(t, s))

	silent, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := silent.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: "silent"}, TypeUrl: AddressType}); err != nil {
		t.Fatal(err)
	}
	if _, err := silent.Recv(); err != nil {
		t.Fatal(err)
	}
	got := make(chan *discovery.DeltaDiscoveryResponse, 100)
	go func() {
		for {
			r, err := silent.Recv()
			if err != nil {
				return
			}
			got <- r
		}
	}()

	rec := newRecorder()
	c := xdsclient.New(xdsclient.Config{Conn: conn, Node: &core.Node{Id: "n"}, Types: []string{AddressType}, Log: quiet}, rec.handle)
	go c.Run(ctx)
	for i := range 5 {
		want := workload("a", fmt.Sprintf("10.0.1.%d", i))
		s.Update(AddressType, addresses(want))
		await.NoError(t, "the answering client has the change", func() error {
			if have := rec.Snapshot(AddressType)[want.GetWorkload().GetUid()]; !proto.Equal(have, want) {
				return fmt.Errorf("holds %v", have)
			}
			return nil
		})
	}
	if len(got) != 0 {
		t.Fatalf("the silent client was sent %d more responses before answering the first", len(got))
	}
	wantSynced(t, s, "n", true)
	wantSynced(t, s, "silent", false)
}

// TestEveryTypeOfAStreamIsServed: a change of one type reaches a client
// subscribed to several, whatever the others have (nothing, here).
func TestEveryTypeOfAStreamIsServed(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(ctx, quiet, prometheus.NewRegistry())
	s.Update(AddressType, addresses(workload("a", "10.0.0.1")))
	conn := dial(t, serve(t, s))
	rec := newRecorder()
	c := xdsclient.New(xdsclient.Config{Conn: conn, Node: &core.Node{Id: "n"},
		Types: []string{AddressType, AuthorizationType, EnrolledNamespaceType}, Log: quiet}, rec.handle)
	go c.Run(ctx)
	for i := range 10 {
		want := &workloadv1.Authorization{Name: fmt.Sprintf("p%d", i), Namespace: "default"}
		s.Update(AuthorizationType, map[string]proto.Message{"default/p": want})
		await.NoError(t, "the policy's change", func() error {
			if have := rec.Snapshot(AuthorizationType)["default/p"]; !proto.Equal(have, want) {
				return fmt.Errorf("holds %v", have)
			}
			return nil
		})
	}
}

// TestPushLatencyIsTheTypes: a response carrying a change of one of Weft's
// types is timed from that type's change, no earlier.
func TestPushLatencyIsTheTypes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(ctx, quiet, prometheus.NewRegistry())
	rec := newRecorder()
	resumingClient(ctx, t, serve(t, s), rec.handle)
	want := workload("a", "10.0.0.1")
	t0 := time.Now()
	s.Update(AddressType, addresses(want))
	await.NoError(t, "the change", func() error {
		if have := rec.Snapshot(AddressType)[want.GetWorkload().GetUid()]; !proto.Equal(have, want) {
			return fmt.Errorf("holds %v", have)
		}
		return nil
	})
	elapsed := time.Since(t0)
	m := &dto.Metric{}
	if err := s.metrics.pushLatency.WithLabelValues(AddressType).(prometheus.Histogram).Write(m); err != nil {
		t.Fatal(err)
	}
	if n, sum := m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum(); n != 1 || sum > elapsed.Seconds() {
		t.Fatalf("%d pushes timed, %.3fs in all; want one, within the %.3fs it took", n, sum, elapsed.Seconds())
	}
}
