package nodebench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/weft-mesh/weft/internal/benchkit"
	"github.com/weft-mesh/weft/pkg/netns"
)

// startServers listens inside the pod netns nsPath on the bulk, echo and
// HTTP ports.
func startServers(tb testing.TB, nsPath string) *servers {
	tb.Helper()
	s := &servers{peers: map[netip.Addr]int{}}
	listen := func(port int) net.Listener {
		var ln net.Listener
		err := netns.Do(nsPath, func() error {
			var err error
			ln, err = net.Listen("tcp", ":"+strconv.Itoa(port))
			return err
		})
		if err != nil {
			tb.Fatalf("listen :%d in %s: %v", port, nsPath, err)
		}
		tb.Cleanup(func() { ln.Close() })
		return ln
	}
	accept := func(ln net.Listener, handle func(net.Conn)) {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				s.saw(c.RemoteAddr())
				go func() {
					defer c.Close()
					handle(c)
				}()
			}
		}()
	}
	accept(listen(bulkPort), func(c net.Conn) {
		if _, err := io.Copy(io.Discard, c); err == nil {
			c.Write([]byte{1})
		}
	})
	accept(listen(echoPort), func(c net.Conn) { io.Copy(c, c) })

	body := bytes.Repeat([]byte("x"), respSize)
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(respSize))
			w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateNew {
				s.saw(c.RemoteAddr())
			}
		},
	}
	ln := listen(httpPort)
	go hs.Serve(ln)
	tb.Cleanup(func() { hs.Close() })
	return s
}

// bulk sends n MiB from the client pod to the sink at dst (a server's
// bulk port, or the stunnel in front of it) on one connection and waits
// for the sink to have read it all.
func bulk(ctx context.Context, clientNS string, dst netip.AddrPort, n int) error {
	c, err := netns.Dial(ctx, clientNS, dst.String())
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	buf := make([]byte, 1<<20)
	for range n {
		if _, err := c.Write(buf); err != nil {
			return err
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	ack := make([]byte, 1)
	if _, err := io.ReadFull(c, ack); err != nil {
		return fmt.Errorf("sink did not confirm %d MiB: %w", n, err)
	}
	return nil
}

// pinger is a connection to an echo server (at dst: its echo port, or the
// stunnel in front of it) for 1-byte round trips.
type pinger struct {
	c   net.Conn
	buf [1]byte
}

func dialPinger(ctx context.Context, clientNS string, dst netip.AddrPort) (*pinger, error) {
	c, err := netns.Dial(ctx, clientNS, dst.String())
	if err != nil {
		return nil, err
	}
	c.(*net.TCPConn).SetNoDelay(true)
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	return &pinger{c: c}, nil
}

func (p *pinger) ping() error {
	p.buf[0] = 'p'
	if _, err := p.c.Write(p.buf[:]); err != nil {
		return err
	}
	_, err := io.ReadFull(p.c, p.buf[:])
	return err
}

func (p *pinger) rounds(n int) error {
	for range n {
		if err := p.ping(); err != nil {
			return err
		}
	}
	return nil
}

// httpClient makes HTTP requests from the client pod (keep-alive).
func httpClient(clientNS string) *http.Client {
	return benchkit.HTTPClient(dialer(clientNS), 256)
}
