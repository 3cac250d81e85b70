package hbone

import (
	"context"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/weft-mesh/weft/internal/benchkit"
)

// TestOpenTunnelHoldsNoSendBuffer: an open, idle tunnel stream costs its
// client only the stream's bookkeeping. x/net/http2's client, which Dialer
// used before, held a send buffer of min(the server's frame size, 512 KiB)
// for every open stream: about 330 KiB per tunnel with 256 KiB frames, 70
// of the waypoint benchmark's 82 MiB live heap with 1 MiB frames. Measured
// (live heap, both ends' streams) against a server whose handler holds the
// stream without Pipe buffers; about 2 KiB per tunnel.
func TestOpenTunnelHoldsNoSendBuffer(t *testing.T) {
	const tunnels, maxPerTunnel = 200, 16 << 10
	e := newEnv(t, Options{})
	addr := e.serveWith(t, func(ctx context.Context, req *Request) error {
		if _, err := req.Accept(); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	})
	dial := func() *ClientStream {
		s, err := e.dialer.Dial(context.Background(), addr, tlsconfig.AuthorizeID(serverID), "10.0.0.1:80", nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	dial().Close() // the pooled connection and its buffers
	before := benchkit.LiveHeap()
	for range tunnels {
		s := dial()
		t.Cleanup(func() { s.Close() })
	}
	per := (int64(benchkit.LiveHeap()) - int64(before)) / tunnels
	t.Logf("%d open tunnels: %d KiB each (client and server)", tunnels, per>>10)
	if per > maxPerTunnel {
		t.Errorf("each open tunnel holds %d KiB, want at most %d KiB", per>>10, maxPerTunnel>>10)
	}
}

// TestClosedStreamsLeaveNothing: streams that ended leave nothing behind
// on their pooled connection, which lives as long as traffic flows between
// two nodes (a per-stream context left registered with the connection's
// would grow without bound).
func TestClosedStreamsLeaveNothing(t *testing.T) {
	const streams, maxPerStream = 3000, 64
	e := newEnv(t, Options{})
	echoOnce(t, e)
	before := benchkit.LiveHeap()
	for range streams {
		echoOnce(t, e)
	}
	per := (int64(benchkit.LiveHeap()) - int64(before)) / streams
	t.Logf("%d closed streams: %d bytes each left", streams, per)
	if per > maxPerStream {
		t.Errorf("each closed stream left %d bytes, want at most %d", per, maxPerStream)
	}
}
