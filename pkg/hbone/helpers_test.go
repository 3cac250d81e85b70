package hbone

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("cluster.local")
	clientID = spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/x")
	serverID = spiffeid.RequireFromString("spiffe://cluster.local/ns/weft-system/sa/weft-node")
	otherID  = spiffeid.RequireFromString("spiffe://cluster.local/ns/b/sa/y")
)

// testCA is a throwaway CA issuing SPIFFE SVIDs.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(tb testing.TB) *testCA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"weft test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

var serial atomic.Int64

func (ca *testCA) issue(tb testing.TB, id spiffeid.ID) *x509svid.SVID {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1) + 10),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

func (ca *testCA) bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(td, []*x509.Certificate{ca.cert})
}

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
	ca        *testCA
	srv       *Server
	ln        *countingListener
	addr      string
	dialer    *Dialer
	echo      string // loopback echo target
	serverSrc *rotatingSource
	mu        sync.Mutex
	last      seen
	streamErr chan error // errors the handler's Pipe returned
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
	e := &env{ca: newCA(tb), streamErr: make(chan error, 1024)}
	e.echo = startEcho(tb)
	e.serverSrc = &rotatingSource{}
	e.serverSrc.v.Store(e.ca.issue(tb, serverID))
	e.srv = &Server{
		TLS:     ServerTLSConfig(e.serverSrc, e.ca.bundle(), nil),
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

func (e *env) newDialer(tb testing.TB, id spiffeid.ID, opts Options) *Dialer {
	d := &Dialer{SVID: e.ca.issue(tb, id), Bundle: e.ca.bundle(), Options: opts}
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

func spiffeidMust(s string) spiffeid.ID { return spiffeid.RequireFromString(s) }
