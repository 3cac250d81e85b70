package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/gorilla/websocket"

	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/pkg/hbone"
)

// pipeStream is one end of a net.Pipe as an hbone.Stream.
type pipeStream struct{ net.Conn }

func (pipeStream) CloseWrite() error { return nil }

// idlePipe pipes client <-> server through hbone.Pipe with the idle
// timeout on the server (upstream) end, as the TCP proxy and upgrades do;
// done closes when Pipe returns.
func idlePipe(d time.Duration) (client, server net.Conn, done chan struct{}) {
	client, down := net.Pipe()
	up, server := net.Pipe()
	done = make(chan struct{})
	go func() {
		defer close(done)
		hbone.Pipe(pipeStream{down}, withIdleTimeout(pipeStream{up}, d))
	}()
	return client, server, done
}

// TestTCPIdleTimeoutClosesBothEnds: after the last byte, an hour of
// silence ends the stream, exactly then, on both ends; a byte either way
// (client to server, or server to client alone) starts the hour again.
func TestTCPIdleTimeoutClosesBothEnds(t *testing.T) {
	for _, dir := range []string{"client sends", "server sends"} {
		t.Run(dir, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				client, server, done := idlePipe(defaultTCPIdleTimeout)
				from, to := client, server
				if dir == "server sends" {
					from, to = server, client
				}
				buf := make([]byte, 1)
				for range 5 { // 5 × 50 min: open for over 4 h while a byte moves
					time.Sleep(50 * time.Minute)
					if _, err := from.Write([]byte("x")); err != nil {
						t.Fatalf("closed while bytes were moving: write: %v", err)
					}
					if _, err := io.ReadFull(to, buf); err != nil {
						t.Fatalf("read: %v", err)
					}
				}
				last := time.Now()
				errs := make(chan error, 2)
				for _, c := range []net.Conn{client, server} {
					go func() { _, err := c.Read(buf); errs <- err }()
				}
				for range 2 {
					if err := <-errs; err == nil {
						t.Fatal("an end read a byte nobody sent")
					}
				}
				if idle := time.Since(last); idle != defaultTCPIdleTimeout {
					t.Fatalf("closed after %v of silence, want %v", idle, defaultTCPIdleTimeout)
				}
				<-done
			})
		})
	}
}

// tcpService serves workload at backend as a TCP Service at vip:port (a
// tcp_proxy chain to an HBONE endpoint) and opens a stream to it.
func (e *env) tcpService(t *testing.T, workload, vip string, port int, backend string) *hbone.ClientStream {
	t.Helper()
	host := workload + ".default.svc.cluster.local"
	cl := fmt.Sprintf("outbound|%d||%s", port, host)
	e.mustPush(resourcev3.ClusterType, edsCluster(cl))
	e.mustPush(resourcev3.EndpointType, cla(cl, epSpec{addr: mustAddrPort(backend), tunnel: "HBONE",
		identity: backendID.String(), workload: workload, health: corev3.HealthStatus_HEALTHY}))
	e.mustPush(resourcev3.ListenerType, listener(tcpChain(t, fmt.Sprintf("%s:%d", host, port), vip, uint32(port), cl)))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	st, err := e.dial(ctx, net.JoinHostPort(vip, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// rstBackend accepts one connection on a pod IP, reads until it ends and
// reports how: a reset (or other error) or EOF.
func rstBackend(t *testing.T) (net.Listener, chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(podIP().String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ended := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, err = io.Copy(io.Discard, c)
		if err == nil {
			err = io.EOF
		}
		ended <- err
	}()
	return ln, ended
}

// TestTCPProxyStreamIdleTimeout: through the waypoint, a TCP-proxied
// stream with no byte either way for TCPIdleTimeout is reset at both
// ends: the HBONE client's stream and the backend's connection.
func TestTCPProxyStreamIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	e := newEnv(t, func(o *Options) { o.TCPIdleTimeout = idle })
	ln, backendEnded := rstBackend(t)
	st := e.tcpService(t, "idle", "10.96.0.22", 6380, ln.Addr().String())
	defer st.Close()
	if _, err := st.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	clientEnded := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, st); clientEnded <- err }()
	for what, ch := range map[string]chan error{"client stream": clientEnded, "backend connection": backendEnded} {
		select {
		case err := <-ch:
			if err == nil || errors.Is(err, io.EOF) {
				t.Errorf("%s ended cleanly (%v), want a reset", what, err)
			}
		case <-time.After(await.Timeout):
			t.Fatalf("%s still open %v after the last byte (idle timeout %v)", what, await.Timeout, idle)
		}
	}
	if d := time.Since(start); d < idle {
		t.Errorf("ended after %v, before the idle timeout %v", d, idle)
	}
}

// TestUpgradedStreamIdleTimeout: a WebSocket through the waypoint that
// moves no byte either way for TCPIdleTimeout is closed under the client.
func TestUpgradedStreamIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	e := newEnv(t, func(o *Options) { o.TCPIdleTimeout = idle })
	e.subsets(map[string]*backend{"v1": wsBackend(t, "chat-v1")})
	e.mustPush(resourcev3.RouteType, routeConfig(chainKey, svcHost, routeTo("default/chat.0", clusterName("v1"))))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return e.dialConn(ctx, vipAuthority()) }}
	c, _, err := d.DialContext(ctx, "ws://"+svcHostPort+"/chat", nil)
	if err != nil {
		t.Fatalf("websocket through the waypoint: %v", err)
	}
	defer c.Close()
	// Before the write: the echo's last byte passes the waypoint (its idle
	// timer's start) before ReadMessage returns here.
	start := time.Now()
	if err := c.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { _, _, err := c.ReadMessage(); ended <- err }()
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("read a message nobody sent")
		}
	case <-time.After(await.Timeout):
		c.Close()
		t.Fatalf("upgraded stream still open %v after the last byte (idle timeout %v)", await.Timeout, idle)
	}
	if d := time.Since(start); d < idle {
		t.Errorf("ended after %v, before the idle timeout %v", d, idle)
	}
}

// TestHBONEHandshakesShedExported: a source's connections beyond the
// handshake limit are counted in weft_waypoint_hbone_handshakes_shed_total.
func TestHBONEHandshakesShedExported(t *testing.T) {
	e := newEnv(t)
	for range hbone.DefaultMaxHandshakesPerSource + 1 {
		c, err := net.Dial("tcp", e.wpAddr)
		if err != nil {
			continue // reset before connect returned: shed too
		}
		defer c.Close()
	}
	await.True(t, "one handshake shed", func() bool {
		return metricValue(t, e, "weft_waypoint_hbone_handshakes_shed_total", map[string]string{"limit": "source"}) == 1
	})
}
