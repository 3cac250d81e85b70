package proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Documented limitations (docs/compatibility.md, "Transparency of HTTP").
const (
	// gateway_tls.go upstreamH2, as Istio's gateway picks the upstream
	// protocol from the service port.
	gatewayUpstreamH1 = "a gateway sends a client's h2 upstream as HTTP/1.1 unless it is gRPC or the cluster says " +
		"HTTP/2 (explicit_http_config), so the server sees HTTP/1.1 framing"
)

func transparencyCases() []transparencyCase {
	return []transparencyCase{
		{name: "websocket echo", peer: websocketEcho},
		{name: "upgrade client half-closes first", peer: upgradeClientClosesFirst},
		{name: "upgrade server half-closes first", peer: upgradeServerClosesFirst},
		{name: "h2c upgrade request", peer: h2cUpgradeRequest},
		{name: "connection close read to EOF", peer: func() transparencyPeer {
			return toEOF("GET /close HTTP/1.1\r\nHost: " + svcHostPort + "\r\nConnection: close\r\n\r\n")
		}},
		{name: "HTTP/1.0 without keep-alive", peer: func() transparencyPeer {
			return toEOF("GET /old HTTP/1.0\r\nHost: " + svcHostPort + "\r\n\r\n")
		}},
		{name: "close-delimited response", peer: closeDelimited},
		{name: "HTTP/1.1 pipelining", peer: pipelining},
		{name: "chunked both ways", peer: chunkedBothWays},
		{name: "expect 100-continue accepted", peer: func() transparencyPeer { return expectContinue(true) }},
		{name: "expect 100-continue refused", peer: func() transparencyPeer { return expectContinue(false) }},
		{name: "trailers HTTP/1.1 chunked", peer: func() transparencyPeer { return trailers(false) }},
		{name: "trailers h2", peer: func() transparencyPeer { return trailers(true) },
			limits: map[string]string{"gateway": gatewayUpstreamH1}},
		{name: "h2c prior knowledge", peer: h2cPriorKnowledge, limits: map[string]string{"gateway": gatewayUpstreamH1}},
		{name: "server-sent events unbuffered", peer: serverSentEvents},
		{name: "large bodies streamed", peer: largeBodies},
		{name: "gRPC bidirectional stream", peer: grpcBidi},
	}
}

// websocketEcho: gorilla/websocket on both ends, a subprotocol, small and
// 1 MiB messages, and the closing handshake.
func websocketEcho() transparencyPeer {
	h := wsEcho(websocket.Upgrader{Subprotocols: []string{"chat"}}, "echo ")
	run := func(ctx context.Context, _ *testing.T, dial dialFunc) (string, error) {
		d := websocket.Dialer{Subprotocols: []string{"chat"},
			NetDialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) }}
		c, resp, err := d.DialContext(ctx, "ws://"+svcHostPort+"/chat", nil)
		if err != nil {
			if resp != nil {
				return "", fmt.Errorf("handshake answered %d: %w", resp.StatusCode, err)
			}
			return "", fmt.Errorf("handshake: %w", err)
		}
		defer c.Close()
		out := fmt.Sprintf("%d subprotocol %q", resp.StatusCode, c.Subprotocol())
		for _, m := range []string{"one", "two", strings.Repeat("x", 1<<20)} {
			if err := c.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
				return "", err
			}
			_, got, err := c.ReadMessage()
			if err != nil {
				return "", err
			}
			out += ", " + summary(got)
		}
		if err := c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye")); err != nil {
			return "", err
		}
		_, _, err = c.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			return "", fmt.Errorf("closing handshake: %v", err)
		}
		return out + fmt.Sprintf(", closed %d", ce.Code), nil
	}
	return transparencyPeer{serve: httpServer(h), run: run}
}

const upgradeRequest = "GET /tunnel HTTP/1.1\r\nHost: " + svcHostPort + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"

// upgrade sends upgradeRequest on a fresh connection and reads the 101.
func upgrade(ctx context.Context, dial dialFunc) (net.Conn, *bufio.Reader, string, error) {
	conn, err := dial(ctx)
	if err != nil {
		return nil, nil, "", err
	}
	br := bufio.NewReader(conn)
	resp, err := func() (*http.Response, error) {
		if _, err := io.WriteString(conn, upgradeRequest); err != nil {
			return nil, err
		}
		return http.ReadResponse(br, nil)
	}()
	if err != nil {
		conn.Close()
		return nil, nil, "", err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(resp.Body)
		conn.Close()
		return nil, nil, "", fmt.Errorf("upgrade answered %d %q", resp.StatusCode, body)
	}
	return conn, br, fmt.Sprintf("%d upgrade %q connection %q", resp.StatusCode, resp.Header.Get("Upgrade"), resp.Header.Get("Connection")), nil
}

// upgradeClientClosesFirst: after the 101 the client sends 256 KiB and
// half-closes; the server reads to EOF, then answers and closes.
func upgradeClientClosesFirst() transparencyPeer {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, br, err := hijack(w)
		if err != nil {
			return
		}
		defer conn.Close()
		got, err := io.ReadAll(br)
		fmt.Fprintf(conn, "server read %s (%v)", summary(got), err)
	})
	run := func(ctx context.Context, _ *testing.T, dial dialFunc) (string, error) {
		conn, br, head, err := upgrade(ctx, dial)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		if _, err := conn.Write(make([]byte, 256<<10)); err != nil {
			return "", err
		}
		if err := halfClose(conn); err != nil {
			return "", err
		}
		reply, err := io.ReadAll(br)
		if err != nil {
			return "", fmt.Errorf("reading the reply to EOF (got %q): %w", reply, err)
		}
		return head + ", then " + string(reply) + " and EOF", nil
	}
	return transparencyPeer{serve: httpServer(h), run: run}
}

// upgradeServerClosesFirst: after the 101 the server writes and
// half-closes; the client reads to EOF, then writes and half-closes; the
// server reads that to EOF.
func upgradeServerClosesFirst() transparencyPeer {
	serverRead := make(chan string, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, br, err := hijack(w)
		if err != nil {
			return
		}
		defer conn.Close()
		io.WriteString(conn, "hello from the server")
		if err := halfClose(conn); err != nil {
			serverRead <- err.Error()
			return
		}
		got, err := io.ReadAll(br)
		serverRead <- fmt.Sprintf("%q (%v)", got, err)
	})
	run := func(ctx context.Context, _ *testing.T, dial dialFunc) (string, error) {
		conn, br, head, err := upgrade(ctx, dial)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		got, err := io.ReadAll(br)
		if err != nil {
			return "", fmt.Errorf("reading to the server's EOF (got %q): %w", got, err)
		}
		if _, err := io.WriteString(conn, "hello from the client"); err != nil {
			return "", fmt.Errorf("writing after the server half-closed: %w", err)
		}
		if err := halfClose(conn); err != nil {
			return "", err
		}
		select {
		case s := <-serverRead:
			return fmt.Sprintf("%s, client read %q, server read %s", head, got, s), nil
		case <-ctx.Done():
			return "", fmt.Errorf("the server never saw the client's half-close: %w", errNotDelivered)
		}
	}
	return transparencyPeer{serve: httpServer(h), run: run}
}

// h2cUpgradeRequest: an HTTP/1.1 request offering "Upgrade: h2c" is
// answered in HTTP/1.1 (net/http servers do not switch; Envoy strips the
// offer), and the connection goes on serving HTTP/1.1.
func h2cUpgradeRequest() transparencyPeer {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.Proto, r.URL.Path)
	})
	run := func(ctx context.Context, _ *testing.T, dial dialFunc) (string, error) {
		conn, err := dial(ctx)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		out := ""
		for _, req := range []string{
			"GET /offer HTTP/1.1\r\nHost: " + svcHostPort + "\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
			"GET /after HTTP/1.1\r\nHost: " + svcHostPort + "\r\n\r\n",
		} {
			if _, err := io.WriteString(conn, req); err != nil {
				return "", err
			}
			resp, body, err := readResponse(br)
			if err != nil {
				return "", err
			}
			out += fmt.Sprintf("%s %d upgrade %q body %q; ", resp.Proto, resp.StatusCode, resp.Header.Get("Upgrade"), body)
		}
		return out, nil
	}
	return transparencyPeer{serve: httpServer(h), run: run}
}

// toEOF: the client sends request and reads until the server closes.
func toEOF(request string) transparencyPeer {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "served "+r.URL.Path)
	})
	run := func(ctx context.Context, _ *testing.T, dial dialFunc) (string, error) {
		return exchangeToEOF(ctx, dial, request)
	}
	return transparencyPeer{serve: httpServer(h), run: run}
}

// closeDelimited: a server whose response body ends when it closes the
// connection (no Content-Length, no chunking), read by net/http's client.
// Only status and body are compared: a proxy may frame the body anew.
func closeDelimited() transparencyPeer {
	body := strings.Repeat("close-delimited ", 8<<10)
	serve := func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"+body)
	}
	run := func(ctx context.Context, _ *testing.T, dial dialFunc) (string, error) {
		tr := transport(dial, false)
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+svcHostPort+"/", nil)
		resp, body, err := fetch(tr, req)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%d body %s", resp.StatusCode, summary(body)), nil
	}
	return transparencyPeer{serve: rawServer(serve), run: run}
}

// pipelining: three requests written at once on one connection, the
// responses read back in order.
func pipelining() transparencyPeer {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %q", r.Method, r.URL.Path, b)
	})
	run := func(ctx context.Context, _ *testing.T, dial dialFunc) (string, error) {
		conn, err := dial(ctx)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		host := "Host: " + svcHostPort + "\r\n"
		reqs := "GET /1 HTTP/1.1\r\n" + host + "\r\n" +
			"POST /2 HTTP/1.1\r\n" + host + "Content-Length: 5\r\n\r\nhello" +
			"GET /3 HTTP/1.1\r\n" + host + "\r\n"
		if _, err := io.WriteString(conn, reqs); err != nil {
			return "", err
		}
		br := bufio.NewReader(conn)
		out := ""
		for range 3 {
			resp, body, err := readResponse(br)
			if err != nil {
				return "", fmt.Errorf("after %q: %w", out, err)
			}
			out += fmt.Sprintf("%d %s; ", resp.StatusCode, body)
		}
		return out, nil
	}
	return transparencyPeer{serve: httpServer(h), run: run}
}

// chunkedBothWays: a request body of unknown length (chunked) echoed in a
// response flushed in two parts (chunked).
func chunkedBothWays() transparencyPeer {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "server saw length %d te %v (%v); ", r.ContentLength, r.TransferEncoding, err)
		http.NewResponseController(w).Flush()
		fmt.Fprintf(w, "body %q", b)
	})
	run := func(ctx context.Context, _ *testing.T, dial dialFunc) (string, error) {
		tr := transport(dial, false)
		defer tr.CloseIdleConnections()
		pr, pw := io.Pipe()
		go func() {
			for i := range 3 {
				fmt.Fprintf(pw, "chunk %d;", i)
			}
			pw.Close()
		}()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+svcHostPort+"/echo", pr)
		return do(tr, req)
	}
	return transparencyPeer{serve: httpServer(h), run: run}
}

// expectContinue: a 64 KiB upload with "Expect: 100-continue" that the
// server either reads (100 Continue, then the body) or refuses without
// reading (401 and no body sent).
func expectContinue(accept bool) transparencyPeer {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !accept {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, "refused before the body")
			return
		}
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, "server read "+summary(b))
	})
	run := func(ctx context.Context, _ *testing.T, dial dialFunc) (string, error) {
		tr := transport(dial, false)
		tr.ExpectContinueTimeout = testTimeout
		defer tr.CloseIdleConnections()
		var got100 atomic.Bool
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{Got100Continue: func() { got100.Store(true) }})
		body := &readTracker{r: strings.NewReader(strings.Repeat("u", 64<<10))}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+svcHostPort+"/upload", io.NopCloser(body))
		req.ContentLength = 64 << 10
		req.Header.Set("Expect", "100-continue")
		out, err := do(tr, req)
		return fmt.Sprintf("%s; got 100 %v, body sent %v", out, got100.Load(), body.read.Load()), err
	}
	return transparencyPeer{serve: httpServer(h), run: run}
}

type readTracker struct {
	r    io.Reader
	read atomic.Bool
}

func (t *readTracker) Read(p []byte) (int, error) {
	t.read.Store(true)
	return t.r.Read(p)
}

// trailers: a chunked (h1) or h2 request with a trailer the server reads,
// and a response trailer computed after the body.
func trailers(h2 bool) transparencyPeer {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Result")
		fmt.Fprintf(w, "server read %q with trailer %q", b, r.Trailer.Get("X-Checksum"))
		w.Header().Set("X-Result", fmt.Sprintf("%d bytes", len(b)))
	})
	run := func(ctx context.Context, _ *testing.T, dial dialFunc) (string, error) {
		tr := transport(dial, h2)
		defer tr.CloseIdleConnections()
		pr, pw := io.Pipe()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+svcHostPort+"/trailers", pr)
		req.Trailer = http.Header{"X-Checksum": nil}
		go func() {
			io.WriteString(pw, "payload")
			req.Trailer.Set("X-Checksum", "sum-of-payload")
			pw.Close()
		}()
		return do(tr, req)
	}
	return transparencyPeer{serve: httpServer(h), run: run}
}

// h2cPriorKnowledge: an h2 client without TLS or upgrade, GET and POST.
func h2cPriorKnowledge() transparencyPeer {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %q", r.Proto, r.Method, b)
	})
	run := func(ctx context.Context, _ *testing.T, dial dialFunc) (string, error) {
		tr := transport(dial, true)
		defer tr.CloseIdleConnections()
		out := ""
		for _, body := range []string{"", "posted"} {
			method := http.MethodGet
			if body != "" {
				method = http.MethodPost
			}
			req, _ := http.NewRequestWithContext(ctx, method, "http://"+svcHostPort+"/", strings.NewReader(body))
			got, err := do(tr, req)
			if err != nil {
				return "", err
			}
			out += got + "; "
		}
		return out, nil
	}
	return transparencyPeer{serve: httpServer(h), run: run}
}

// serverSentEvents: the server writes the second event only after the
// client has read the first, so any buffering on the way deadlocks the run
// (and fails it at its deadline).
func serverSentEvents() transparencyPeer {
	firstRead := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		io.WriteString(w, "id: 1\ndata: first\n\n")
		rc.Flush()
		select {
		case <-firstRead:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "id: 2\ndata: second\n\n")
		rc.Flush()
	})
	run := func(ctx context.Context, _ *testing.T, dial dialFunc) (string, error) {
		tr := transport(dial, false)
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+svcHostPort+"/events", nil)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		first, err := readEvent(br)
		if err != nil {
			return "", fmt.Errorf("first event, written and flushed by the server: %w (%w)", errNotDelivered, err)
		}
		close(firstRead)
		second, err := readEvent(br)
		if err != nil {
			return "", fmt.Errorf("second event: %w", err)
		}
		return fmt.Sprintf("%d %s: %q then %q", resp.StatusCode, resp.Header.Get("Content-Type"), first, second), nil
	}
	return transparencyPeer{serve: httpServer(h), run: run}
}

// readEvent reads one server-sent event (up to its blank line).
func readEvent(br *bufio.Reader) (string, error) {
	ev := ""
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return ev, err
		}
		if line == "\n" {
			return ev, nil
		}
		ev += line
	}
}

// largeBodies: 48 MiB up, then 48 MiB down, generated and checksummed on
// the fly; the process's live heap must stay below one body, so no hop
// may hold a whole body. Flow control lets each of the waypoint path's
// four receiving HBONE ends hold a 4 MiB stream window (hbone.
// DefaultStreamWindow), so that path grows by 12 to 31 MiB under -race:
// half a body is too tight a bound, one body is what the claim needs.
func largeBodies() transparencyPeer {
	const size = 48 << 20
	probe := newHeapProbe()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sum := sha256.New()
		n, err := io.Copy(sum, r.Body)
		w.Header().Set("X-Request-Sha256", fmt.Sprintf("%d bytes %x (%v)", n, sum.Sum(nil), err))
		w.Header().Set("Content-Length", strconv.Itoa(size))
		io.Copy(w, newPattern(2, size, probe))
	})
	run := func(ctx context.Context, t *testing.T, dial dialFunc) (string, error) {
		tr := transport(dial, false)
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+svcHostPort+"/bulk", io.NopCloser(newPattern(1, size, probe)))
		req.ContentLength = size
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		sum := sha256.New()
		n, err := io.Copy(sum, resp.Body)
		if err != nil {
			return "", fmt.Errorf("response body after %d bytes: %w", n, err)
		}
		grew := probe.growth()
		t.Logf("live heap grew by at most %.1f MiB", float64(grew)/(1<<20))
		return fmt.Sprintf("%d request %s, response %d bytes %x, heap bounded %v", resp.StatusCode,
			resp.Header.Get("X-Request-Sha256"), n, sum.Sum(nil), grew < size), nil
	}
	return transparencyPeer{serve: httpServer(h), run: run}
}

// pattern is n deterministic pseudo-random bytes; it samples the heap
// probe every 8 MiB.
type pattern struct {
	rnd       *rand.ChaCha8
	left      int64
	sinceLast int64
	probe     *heapProbe
}

func newPattern(seed byte, n int64, probe *heapProbe) *pattern {
	return &pattern{rnd: rand.NewChaCha8([32]byte{seed}), left: n, probe: probe}
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.left)]
	p.rnd.Read(b)
	p.left -= int64(len(b))
	if p.sinceLast += int64(len(b)); p.sinceLast >= 8<<20 {
		p.sinceLast = 0
		p.probe.sample()
	}
	return len(b), nil
}

// grpcBidi: grpc-go on both ends, a bidirectional stream in lock step
// (each reply before the next message, so nothing may be buffered) and
// the trailer at its end.
func grpcBidi() transparencyPeer {
	serve := func(ln net.Listener) io.Closer {
		gs := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			for n := 0; ; n++ {
				var in wrapperspb.StringValue
				if err := stream.RecvMsg(&in); err == io.EOF {
					stream.SetTrailer(metadata.Pairs("x-count", strconv.Itoa(n)))
					return nil
				} else if err != nil {
					return err
				}
				if err := stream.SendMsg(wrapperspb.String("echo " + in.GetValue())); err != nil {
					return err
				}
			}
		}))
		go gs.Serve(ln)
		return closerFunc(func() error { gs.Stop(); return nil })
	}
	run := func(ctx context.Context, _ *testing.T, dial dialFunc) (string, error) {
		conn, err := grpc.NewClient("passthrough:///"+svcHostPort, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return dial(ctx) }))
		if err != nil {
			return "", err
		}
		defer conn.Close()
		stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/test.Echo/Chat")
		if err != nil {
			return "", err
		}
		out := ""
		for i := range 5 {
			if err := stream.SendMsg(wrapperspb.String(strconv.Itoa(i))); err != nil {
				return "", err
			}
			var reply wrapperspb.StringValue
			if err := stream.RecvMsg(&reply); err != nil {
				return "", fmt.Errorf("reply %d: %w", i, err)
			}
			out += reply.GetValue() + ", "
		}
		if err := stream.CloseSend(); err != nil {
			return "", err
		}
		var extra wrapperspb.StringValue
		if err := stream.RecvMsg(&extra); err != io.EOF {
			return "", fmt.Errorf("after CloseSend: %v, want EOF", err)
		}
		return out + fmt.Sprintf("trailer %v", stream.Trailer().Get("x-count")), nil
	}
	return transparencyPeer{serve: serve, run: run}
}
