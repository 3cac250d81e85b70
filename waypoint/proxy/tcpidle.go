package proxy

import (
	"sync/atomic"
	"time"

	"github.com/weft-mesh/weft/pkg/hbone"
)

// defaultTCPIdleTimeout is Envoy's tcp_proxy idle_timeout default: a
// TCP-proxied stream, or an upgraded (WebSocket) one, that moved no byte
// either way for an hour is closed, both ends.
const defaultTCPIdleTimeout = time.Hour

// idleStream is the upstream end of a piped stream (TCP proxy, upgrade)
// that ends itself after d without a byte read or written. Every byte of
// either direction passes through it (hbone.Pipe reads what the upstream
// sends from it and writes what the client sends to it), so it sees all
// activity. When it fires it resets the upstream end; hbone.Pipe's copy
// from it fails and Pipe then aborts the client's end too. Envoy closes
// both connections without flushing; a tunnel stream has no close that
// ends both directions at once, so here both ends are reset.
type idleStream struct {
	hbone.Stream
	d    time.Duration
	last atomic.Int64 // unix nanos of the last byte either way
	t    *time.Timer
}

// withIdleTimeout wraps s; d <= 0 returns s unchanged.
func withIdleTimeout(s hbone.Stream, d time.Duration) hbone.Stream {
	if d <= 0 {
		return s
	}
	i := &idleStream{Stream: s, d: d}
	i.last.Store(time.Now().UnixNano())
	i.t = time.AfterFunc(d, i.check)
	return i
}

func (i *idleStream) Read(p []byte) (int, error) {
	n, err := i.Stream.Read(p)
	if n > 0 {
		i.last.Store(time.Now().UnixNano())
	}
	return n, err
}

func (i *idleStream) Write(p []byte) (int, error) {
	n, err := i.Stream.Write(p)
	if n > 0 {
		i.last.Store(time.Now().UnixNano())
	}
	return n, err
}

func (i *idleStream) check() {
	if idle := time.Since(time.Unix(0, i.last.Load())); idle < i.d {
		i.t.Reset(i.d - idle)
		return
	}
	_ = i.SetLinger(0)
	i.Stream.Close()
}

// SetLinger passes hbone.Pipe's reset through to a TCP upstream.
func (i *idleStream) SetLinger(sec int) error {
	if l, ok := i.Stream.(interface{ SetLinger(int) error }); ok {
		return l.SetLinger(sec)
	}
	return nil
}

func (i *idleStream) Close() error {
	i.t.Stop()
	return i.Stream.Close()
}
