package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weft-mesh/weft/control/ca"
	"github.com/weft-mesh/weft/control/xds"
	"github.com/weft-mesh/weft/internal/await"
)

// countingAuthn accepts every token and counts the reviews.
type countingAuthn struct{ reviews atomic.Int64 }

func (a *countingAuthn) Authenticate(context.Context, string) (*ca.Caller, error) {
	a.reviews.Add(1)
	return &ca.Caller{Namespace: "default", ServiceAccount: "client"}, nil
}

// TestStreamsPerSourceAreCapped floods the xDS port from one address: past
// the cap, streams are refused before their token is reviewed, another
// address is not affected, and a closed stream frees its slot.
func TestStreamsPerSourceAreCapped(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const max = 3
	authn := &countingAuthn{}
	reg := prometheus.NewRegistry()
	capper := newStreamCap(max, reg)
	g := grpc.NewServer(xdsInterceptors(capper, authn, slog.New(slog.DiscardHandler)))
	s := xds.New(ctx, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	s.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	defer g.Stop()

	open := func(ctx context.Context, from string) error {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		conn, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }))
		if err != nil {
			return err
		}
		t.Cleanup(func() { conn.Close() })
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer any")
		st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
		if err != nil {
			return err
		}
		// A stream the server already ended fails Send with io.EOF; its
		// status is what Recv then returns.
		if err := st.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: "n"}, TypeUrl: xds.AddressType}); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		_, err = st.Recv()
		return err
	}
	var first context.CancelFunc
	for i := range max {
		sctx, scancel := context.WithCancel(ctx)
		if i == 0 {
			first = scancel
		} else {
			defer scancel()
		}
		if err := open(sctx, "127.0.0.1"); err != nil {
			t.Fatalf("stream %d of %d: %v", i+1, max, err)
		}
	}
	if err := open(ctx, "127.0.0.1"); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("stream %d from one address: %v, want ResourceExhausted", max+1, err)
	}
	if n := authn.reviews.Load(); n != max {
		t.Errorf("%d tokens reviewed, want %d: the refused stream's too", n, max)
	}
	if v := testutil.ToFloat64(capper.refused); v != 1 {
		t.Errorf("weft_xds_streams_refused_total = %v, want 1", v)
	}
	if err := open(ctx, "127.0.0.2"); err != nil {
		t.Fatalf("another address: %v", err)
	}
	first()
	await.NoError(t, "a slot freed by a closed stream", func() error { return open(ctx, "127.0.0.1") })
}
