package cluster

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"

	"github.com/weft-mesh/weft/pkg/netns"
)

// forwarder relays host loopback connections to an address inside a
// network namespace, so kubectl on the host reaches the API server without
// the cluster's network ever touching the host's.
type forwarder struct {
	ln     net.Listener
	netns  string
	target string
	log    *slog.Logger
	wg     sync.WaitGroup
}

func listenLoopback(port int) (net.Listener, error) {
	return net.Listen("tcp", net.JoinHostPort("127.0.0.1", itoa(port)))
}

func (f *forwarder) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				f.log.Error("forwarder accept", "err", err)
			}
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.relay(c)
		}()
	}
}

func (f *forwarder) relay(c net.Conn) {
	defer c.Close()
	up, err := netns.Dial(context.Background(), f.netns, f.target)
	if err != nil {
		f.log.Warn("forwarder dial", "target", f.target, "err", err)
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}

func (f *forwarder) close() {
	_ = f.ln.Close()
}
