package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weft-mesh/weft/pkg/spiffetest"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("cluster.local")
	clientID = spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/x")
	serverID = spiffeid.RequireFromString("spiffe://cluster.local/ns/weft-system/sa/weft-node")
	otherID  = spiffeid.RequireFromString("spiffe://cluster.local/ns/b/sa/y")
)

// rotatingSource is an x509svid.Source whose SVID can be swapped.
type rotatingSource struct{ v atomic.Pointer[x509svid.SVID] }

func (r *rotatingSource) GetX509SVID() (*x509svid.SVID, error) { return r.v.Load(), nil }

// countingListener records accepted conns so tests can count and kill them.
type countingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *countingListener) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

func (l *countingListener) killAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
}

// seen is what the test handler observed for the last request.
type seen struct {
	Peer                                       spiffeid.ID
	Authority, Forwarded, Baggage, Traceparent string
}

type env struct {
	ca        *spiffetest.CA
	srv       *Server
	ln        *countingListener
	addr      string
	dialer    *Dialer
	echo      string // loopback echo target
	serverSrc *rotatingSource
	mu        sync.Mutex
	last      seen
	streamErr chan error   // errors the handler's Pipe returned
	accepted  atomic.Int64 // streams the handler accepted
}

func (e *env) lastSeen() seen {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.last
}

// newEnv starts an echo target and an HBONE server that proxies accepted
// streams to :authority with Pipe, like the node agent's inbound path.
func newEnv(tb testing.TB, opts Options) *env {
	tb.Helper()
	e := &env{ca: spiffetest.NewCA(tb, td), streamErr: make(chan error, 1024)}
	e.echo = startEcho(tb)
	e.serverSrc = &rotatingSource{}
	e.serverSrc.v.Store(e.ca.Issue(tb, serverID))
	e.srv = &Server{
		TLS:     ServerTLSConfig(e.serverSrc, e.ca.Bundle(), nil),
		Options: opts,
		Handler: func(ctx context.Context, req *Request) error {
			e.mu.Lock()
			e.last = seen{req.Peer, req.Authority, req.Forwarded, req.Baggage, req.Traceparent}
			e.mu.Unlock()
			if req.Header.Get("x-test-refuse") != "" {
				return Refuse(http.StatusForbidden, "denied by test policy")
			}
			var d net.Dialer
			up, err := d.DialContext(ctx, "tcp", req.Authority)
			if err != nil {
				return Refuse(http.StatusServiceUnavailable, "destination unreachable: "+err.Error())
			}
			st, err := req.Accept()
			if err != nil {
				up.Close()
				return err
			}
			e.accepted.Add(1)
			_, _, err = Pipe(st, up.(*net.TCPConn))
			select {
			case e.streamErr <- err:
			default:
			}
			return nil
		},
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	e.ln = &countingListener{Listener: l}
	e.addr = l.Addr().String()
	go e.srv.Serve(e.ln)
	tb.Cleanup(func() { e.srv.Close() })
	e.dialer = e.newDialer(tb, clientID, opts)
	return e
}

// serveWith runs a second Server with e's TLS and handler h on loopback
// and returns its address; the test's cleanup closes it.
func (e *env) serveWith(tb testing.TB, h func(context.Context, *Request) error) string {
	tb.Helper()
	srv := &Server{TLS: e.srv.TLS, Handler: h}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Serve(l)
	tb.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

func (e *env) newDialer(tb testing.TB, id spiffeid.ID, opts Options) *Dialer {
	d := &Dialer{SVID: e.ca.Issue(tb, id), Bundle: e.ca.Bundle(), Options: opts}
	tb.Cleanup(func() { d.Close() })
	return d
}

func (e *env) dial(tb testing.TB, target string) *ClientStream {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.dialer.Dial(ctx, e.addr, tlsconfig.AuthorizeID(serverID), target, nil)
	if err != nil {
		tb.Fatalf("dial %s via %s: %v", target, e.addr, err)
	}
	return s
}

// startEcho runs a loopback TCP echo server that half-closes after EOF.
func startEcho(tb testing.TB) string {
	tb.Helper()
	return startTarget(tb, func(c *net.TCPConn) {
		io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 64<<10))
		c.CloseWrite()
	})
}

func startTarget(tb testing.TB, handle func(*net.TCPConn)) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	return l.Addr().String()
}

func isRefused(err error, status int) bool {
	var re *RefusedError
	return errors.As(err, &re) && re.Status == status
}

// refusedCert: the error names the server's TLS alert refusing our
// certificate, the reason an operator needs, not the write that found the
// connection closed.
func refusedCert(err error) bool {
	return err != nil && strings.Contains(err.Error(), "remote error: tls: bad certificate")
}

func spiffeidMust(s string) spiffeid.ID { return spiffeid.RequireFromString(s) }
