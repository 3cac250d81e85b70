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
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/internal/await"
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	g := grpc.NewServer()
	s.Register(g)
	go g.Serve(ln)
	tb.Cleanup(g.Stop)
	return ln.Addr().String()
}

// recorder collects what the client's handler saw.
type recorder struct {
	mu      sync.Mutex
	updates []map[string]proto.Message
	removed [][]string
	reject  error
}

func (r *recorder) handle(typ string, upd map[string]proto.Message, rem []string) error {
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
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
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

	rec := &recorder{}
	c := xdsclient.New(xdsclient.Config{Conn: conn, Node: &core.Node{Id: "node-0"}, Types: []string{AddressType}, Log: quiet}, rec.handle)
	go c.Run(ctx)
	await.NoError(t, "initial state", func() error {
		if got := len(c.Snapshot(AddressType)); got != 2 {
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
	if got := c.Snapshot(AddressType); len(got) != 1 {
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
	rec := &recorder{}
	c := xdsclient.New(xdsclient.Config{Conn: conn, Node: &core.Node{Id: "n"}, Types: []string{AddressType}, Log: quiet}, rec.handle)
	go c.Run(ctx)
	await.NoError(t, "initial state", func() error {
		if len(c.Snapshot(AddressType)) != 1 {
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
	got := c.Snapshot(AddressType)["Kubernetes//Pod/default/a"]
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

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	g := grpc.NewServer()
	s.Register(g)
	go g.Serve(ln)

	rec := &recorder{}
	streamEnded := await.NewLogLine("xds stream ended")
	c := xdsclient.New(xdsclient.Config{Conn: dial(t, addr), Node: &core.Node{Id: "n"}, Types: []string{AddressType},
		Log: slog.New(slog.NewTextHandler(streamEnded, nil)), MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}, rec.handle)
	go c.Run(ctx)
	await.NoError(t, "initial state", func() error {
		if !c.Synced() {
			return errors.New("not synced")
		}
		return nil
	})
	_, _, before := rec.last()

	// The control plane goes away: the client keeps its state.
	g.Stop()
	streamEnded.Wait(t)
	if len(c.Snapshot(AddressType)) != 1 {
		t.Fatal("state lost while the control plane is away")
	}
	// It comes back (same address) with one more workload: the client
	// reconnects and receives only the new one, not the one it has.
	b := workload("b", "10.0.0.2")
	s.Update(AddressType, addresses(a, b))
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	g2 := grpc.NewServer()
	s.Register(g2)
	go g2.Serve(ln2)
	defer g2.Stop()
	await.NoError(t, "resync after reconnect", func() error {
		if len(c.Snapshot(AddressType)) != 2 {
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
