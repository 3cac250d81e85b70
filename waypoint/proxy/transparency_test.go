package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weft-mesh/weft/internal/benchkit"
)

// The transparency matrix: every HTTP behaviour an application may rely on
// is run directly against its server (the baseline) and through the
// waypoint (HBONE in) and the gateway (plain TCP in, --mode=gateway), with
// clients and servers the project did not write (net/http, grpc-go,
// gorilla/websocket, raw connections). Each path must observe exactly what
// the baseline observed. The cases are in transparency_cases_test.go.

// dialFunc opens the connection a client speaks on.
type dialFunc func(ctx context.Context) (net.Conn, error)

// transparencyPeer is one behaviour's server and client, made fresh for
// every path.
type transparencyPeer struct {
	// serve starts the server on ln; the closer stops it.
	serve func(ln net.Listener) io.Closer
	// run is the client; it returns what it observed, in a form that is
	// compared across paths.
	run func(ctx context.Context, t *testing.T, dial dialFunc) (string, error)
}

type transparencyCase struct {
	name string
	peer func() transparencyPeer
	// limits names the paths that cannot behave as the baseline, and why:
	// each is a documented limitation (docs/compatibility.md).
	limits map[string]string
}

// transparencyPath is one way from the client to the server.
type transparencyPath struct {
	name string
	mesh bool
	dial func(ctx context.Context, server netip.AddrPort) (net.Conn, error)
}

const baselinePath = "direct"

func TestTransparency(t *testing.T) {
	for _, tc := range transparencyCases() {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			var baseline string
			for _, p := range e.transparencyPaths(t) {
				ok := t.Run(p.name, func(t *testing.T) {
					if why := tc.limits[p.name]; why != "" {
						t.Skip("documented limitation: " + why)
					}
					got := e.runPeer(t, tc.peer(), p)
					if p.name == baselinePath {
						baseline = got
					} else if got != baseline {
						t.Errorf("through the %s the client observed:\n%s\nwithout the mesh:\n%s", p.name, got, baseline)
					}
				})
				if !ok && p.name == baselinePath {
					t.Fatal("the baseline itself failed: the case is wrong, not the mesh")
				}
			}
		})
	}
}

// transparencyPaths are the baseline (a TCP connection to the server), the
// waypoint (an HBONE stream to it, CONNECT to the service VIP) and the
// gateway (a TCP connection to its listener); both mesh paths reach the
// server over HBONE through the stand-in node agent.
func (e *env) transparencyPaths(t *testing.T) []transparencyPath {
	port := freePort(t)
	rcName := "http." + strconv.Itoa(int(port))
	e.mustPush(resourcev3.ListenerType, gatewayListener(t, port))
	e.mustPush(resourcev3.RouteType, routeConfig(rcName, "*", untimedRoute("default/gateway.0")))
	pl := &PlainListeners{Proxy: e.wp, Host: "127.0.0.1", Source: Source{ID: waypointID,
		Baggage: "k8s.deployment.name=weft-ingress,k8s.namespace.name=weft-ingress"}}
	if err := pl.Sync([]uint16{uint16(port)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pl.Close)
	gateway := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	var d net.Dialer
	return []transparencyPath{
		{name: baselinePath, dial: func(ctx context.Context, server netip.AddrPort) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", server.String())
		}},
		{name: "waypoint", mesh: true, dial: func(ctx context.Context, _ netip.AddrPort) (net.Conn, error) {
			return e.dialConn(ctx, vipAuthority())
		}},
		{name: "gateway", mesh: true, dial: func(ctx context.Context, _ netip.AddrPort) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", gateway)
		}},
	}
}

// runPeer starts the peer's server on a fresh "pod IP", points the mesh's
// cluster at it and runs the client over path p. Every connection the
// client dials is closed when the run's deadline passes, so a hang fails
// the run instead of the test binary.
func (e *env) runPeer(t *testing.T, peer transparencyPeer, p transparencyPath) string {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(podIP(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	server := netip.MustParseAddrPort(ln.Addr().String())
	stop := peer.serve(ln)
	t.Cleanup(func() { stop.Close() })
	if p.mesh {
		e.simple(nil, &backend{name: "server", addr: server})
		e.mustPush(resourcev3.RouteType, routeConfig(chainKey, svcHost, untimedRoute("default/reviews.0")))
	}
	// A failsafe, not a measure: generous enough for 96 MiB under -race.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dial := func(dialCtx context.Context) (net.Conn, error) {
		c, err := p.dial(dialCtx, server)
		if err == nil {
			context.AfterFunc(ctx, func() { c.Close() })
		}
		return c, err
	}
	start := time.Now()
	got, err := peer.run(ctx, t, dial)
	t.Logf("%s: %v", p.name, time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	return got
}

// untimedRoute sends everything to the service's cluster with no route
// timeout, as Istio's routes do (Envoy's 15 s default would cut long
// streams, as it should).
func untimedRoute(name string) *routev3.Route {
	r := routeTo(name, clusterName(""))
	r.GetRoute().Timeout = durationpb.New(0)
	return r
}

// ---- servers ----

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// httpServer serves h with net/http: HTTP/1.1 and h2c with prior knowledge.
func httpServer(h http.Handler) func(net.Listener) io.Closer {
	return func(ln net.Listener) io.Closer {
		srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
		go srv.Serve(ln)
		return srv
	}
}

// rawServer hands every accepted connection to serve.
func rawServer(serve func(net.Conn)) func(net.Listener) io.Closer {
	return func(ln net.Listener) io.Closer {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					serve(c)
				}()
			}
		}()
		return ln
	}
}

// hijack takes over an HTTP/1.1 connection and answers 101 itself, as an
// application with its own upgrade protocol does.
func hijack(w http.ResponseWriter) (net.Conn, *bufio.Reader, error) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil, err
	}
	_, err = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	return conn, brw.Reader, err
}

// ---- clients ----

func transport(dial dialFunc, h2c bool) *http.Transport {
	tr := &http.Transport{DisableCompression: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) }}
	if h2c {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	return tr
}

// fetch sends req with tr and reads the whole response.
func fetch(tr *http.Transport, req *http.Request) (*http.Response, []byte, error) {
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the %d response body: %w", resp.StatusCode, err)
	}
	return resp, body, nil
}

// do is fetch describing the response: protocol, status, framing, body
// (summarized when long) and trailers.
func do(tr *http.Transport, req *http.Request) (string, error) {
	resp, body, err := fetch(tr, req)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s %d length %d te %v body %s trailer %v", resp.Proto, resp.StatusCode,
		resp.ContentLength, resp.TransferEncoding, summary(body), resp.Trailer), nil
}

// exchangeToEOF writes request on a fresh connection and reads until the
// server closes it; the bytes must be exactly one response.
func exchangeToEOF(ctx context.Context, dial dialFunc, request string) (string, error) {
	conn, err := dial(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, request); err != nil {
		return "", err
	}
	all, err := io.ReadAll(conn)
	if err != nil {
		return "", fmt.Errorf("reading to EOF (got %q): %w", all, err)
	}
	br := bufio.NewReader(bytes.NewReader(all))
	resp, body, err := readResponse(br)
	if err != nil {
		return "", fmt.Errorf("parsing %q: %w", all, err)
	}
	rest, _ := io.ReadAll(br)
	return fmt.Sprintf("%s %d close %v body %s, then %d more bytes and EOF", resp.Proto, resp.StatusCode,
		resp.Close, summary(body), len(rest)), nil
}

// readResponse reads one response and its body from br.
func readResponse(br *bufio.Reader) (*http.Response, []byte, error) {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func halfClose(c net.Conn) error {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return fmt.Errorf("%T cannot half-close", c)
	}
	return cw.CloseWrite()
}

// summary is b itself when short, else its length and checksum.
func summary(b []byte) string {
	if len(b) <= 64 {
		return strconv.Quote(string(b))
	}
	return fmt.Sprintf("%d bytes sha256 %x", len(b), sha256.Sum256(b))
}

// ---- bounded memory ----

// heapProbe records the largest live heap (after a GC) seen during a
// transfer, relative to the live heap when it was made.
type heapProbe struct {
	mu         sync.Mutex
	base, peak uint64
}

func newHeapProbe() *heapProbe {
	h := benchkit.LiveHeap()
	return &heapProbe{base: h, peak: h}
}

func (p *heapProbe) sample() {
	h := benchkit.LiveHeap()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.peak = max(p.peak, h)
}

func (p *heapProbe) growth() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peak - min(p.base, p.peak)
}

// errNotDelivered is a streaming client giving up on data the server wrote.
var errNotDelivered = errors.New("not delivered")
