package hbone

import (
	"net"
	"testing"

	"github.com/weft-mesh/weft/internal/benchkit"
)

// TestOpenTunnelSendBufferIsBounded: an open tunnel costs its client a
// send buffer as large as the frames the server allows (x/net/http2 holds
// min(SETTINGS_MAX_FRAME_SIZE, 512 KiB) for the stream's whole life). With
// 1 MiB frames every tunnelled connection held half a MiB in the node agent
// or waypoint that opened it: 70 of the waypoint benchmark's 82 MiB live
// heap. The bound covers both ends of each tunnel, the server's Pipe
// buffers included: about 580 KiB with 1 MiB frames, about 330 KiB with
// the default 256 KiB.
func TestOpenTunnelSendBufferIsBounded(t *testing.T) {
	const tunnels, maxPerTunnel = 200, 420 << 10
	e := newEnv(t, Options{})
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	target := startTarget(t, func(c *net.TCPConn) { <-hold })
	e.dial(t, target).Close() // the pooled connection and its buffers
	before := benchkit.LiveHeap()
	for range tunnels {
		s := e.dial(t, target)
		t.Cleanup(func() { s.Close() })
	}
	per := (int64(benchkit.LiveHeap()) - int64(before)) / tunnels
	t.Logf("%d open tunnels: %d KiB each (client and server)", tunnels, per>>10)
	if per > maxPerTunnel {
		t.Errorf("each open tunnel holds %d KiB, want at most %d KiB", per>>10, maxPerTunnel>>10)
	}
}
