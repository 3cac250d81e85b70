package probe

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

func (c *Client) url(path string) string {
	return "http://" + net.JoinHostPort(c.Host, strconv.Itoa(c.Ports.HTTP)) + path
}

// httpClient is a net/http client of its own (no connection shared between
// behaviours) that dials with dial (c.dialHTTP when nil); h2c: HTTP/2 with
// prior knowledge only.
func (c *Client) httpClient(dial func(context.Context, string, string) (net.Conn, error), h2c bool) *httpProbe {
	if dial == nil {
		dial = c.dialHTTP
	}
	h := &httpProbe{}
	tr := &http.Transport{DialContext: func(ctx context.Context, n, a string) (net.Conn, error) {
		conn, err := dial(ctx, n, a)
		if err != nil {
			return nil, err
		}
		return causeConn{conn, h}, nil
	}}
	if h2c {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	h.Client = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return h
}

// httpProbe is a net/http client that remembers the first error its
// connections met on the network: net/http may report a consequence
// instead (a write on the connection it closed after a failed read).
type httpProbe struct {
	*http.Client
	mu    sync.Mutex
	cause error
}

// failed is the Result of a failed step, classified by the network's error.
func (h *httpProbe) failed(step string, err error) Result {
	h.mu.Lock()
	cause := h.cause
	h.mu.Unlock()
	if cause != nil && !errors.Is(err, cause) {
		err = fmt.Errorf("%w (net/http: %v)", cause, err)
	}
	return failed(step, err)
}

type causeConn struct {
	net.Conn
	h *httpProbe
}

func (c causeConn) Read(p []byte) (int, error)  { return c.note(c.Conn.Read(p)) }
func (c causeConn) Write(p []byte) (int, error) { return c.note(c.Conn.Write(p)) }

func (c causeConn) note(n int, err error) (int, error) {
	if err != nil && !errors.Is(err, net.ErrClosed) {
		c.h.mu.Lock()
		// A socket reports a reset to one call only; a read racing the
		// call that met it sees EOF, and may note it first.
		if c.h.cause == nil || Classify(c.h.cause) == "eof" {
			c.h.cause = err
		}
		c.h.mu.Unlock()
	}
	return n, err
}

// rawHTTP is a behaviour that writes request (%s: the host) on a new
// connection and reads the response to EOF.
func (c *Client) rawHTTP(request, body string) func(context.Context) Result {
	return func(ctx context.Context) Result { return c.closeDelimited(ctx, fmt.Sprintf(request, c.Host), body) }
}

// closeDelimited writes req, reads to EOF and wants a 2xx with body.
func (c *Client) closeDelimited(ctx context.Context, req, body string) Result {
	conn, err := c.dial(ctx, c.Ports.HTTP)
	if err != nil {
		return failed("connect", err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, req); err != nil {
		return failed("write", err)
	}
	got, err := readToEOF(conn)
	return replied(got, err, func(got []byte) error {
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(got)), nil)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode/100 != 2 || string(b) != body {
			return fmt.Errorf("%s %q", resp.Status, cut(string(b)))
		}
		return nil
	})
}

// keepAliveOff is a load generator with keep-alive off (as ab or hey
// -disable-keepalive): sequential Connection: close requests, each read to
// EOF; it stops after 3 failures.
func (c *Client) keepAliveOff(ctx context.Context) Result {
	req := fmt.Sprintf("GET /hello?n=load HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", c.Host)
	ok, n := 0, 0
	var failures []Result
	for ; n < c.Requests && len(failures) < 3; n++ {
		if r := c.closeDelimited(ctx, req, "hello load\n"); r.Outcome == OK {
			ok++
		} else {
			failures = append(failures, r)
		}
	}
	detail := fmt.Sprintf("%d of %d requests 2xx", ok, c.Requests)
	if len(failures) > 0 {
		f := failures[0]
		detail += fmt.Sprintf(" (stopped after %d requests, %d failed; first: %s: %s)", n, len(failures), f.Outcome, f.Detail)
		return Result{Outcome: "not all 2xx: " + f.Outcome, Class: f.Class, Detail: detail}
	}
	return Result{Outcome: OK, Detail: detail}
}

func (c *Client) pipelining(ctx context.Context) Result {
	conn, err := c.dial(ctx, c.Ports.HTTP)
	if err != nil {
		return failed("connect", err)
	}
	defer conn.Close()
	var reqs strings.Builder
	for i := 1; i <= 3; i++ {
		fmt.Fprintf(&reqs, "GET /hello?n=p%d HTTP/1.1\r\nHost: %s\r\n\r\n", i, c.Host)
	}
	if _, err := io.WriteString(conn, reqs.String()); err != nil {
		return failed("write", err)
	}
	br := bufio.NewReader(idleReader{conn})
	for i := 1; i <= 3; i++ {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return failed(fmt.Sprintf("response %d", i), err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return failed(fmt.Sprintf("response %d body", i), err)
		}
		if want := fmt.Sprintf("hello p%d\n", i); string(b) != want {
			return Result{Outcome: "wrong response", Detail: fmt.Sprintf("response %d: %s %q, want %q", i, resp.Status, cut(string(b)), want)}
		}
	}
	return Result{Outcome: OK, Detail: "3 responses in order on one connection"}
}

// chunked posts a body of unknown length (chunked) that the server echoes
// in flushed parts (chunked).
func (c *Client) chunked(ctx context.Context) Result {
	body := bytes.Repeat([]byte("chunk "), 50000)
	pr, pw := io.Pipe()
	go func() {
		for i := range 3 {
			pw.Write(body[i*len(body)/3 : (i+1)*len(body)/3])
		}
		pw.Close()
	}()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/echo"), pr)
	client := c.httpClient(nil, false)
	defer client.CloseIdleConnections()
	resp, got, fail := client.roundTrip(req)
	if fail != nil {
		return *fail
	}
	te := resp.Header.Get("X-Request-Transfer-Encoding")
	switch {
	case resp.StatusCode != http.StatusOK:
		return Result{Outcome: "HTTP " + resp.Status, Detail: cut(string(got))}
	case !bytes.Equal(got, body):
		return Result{Outcome: "body differs", Detail: fmt.Sprintf("%d bytes back, sent %d", len(got), len(body))}
	case te != "chunked":
		return Result{Outcome: "request not chunked at the server", Detail: fmt.Sprintf("server saw transfer encoding %q", te)}
	case !slices.Equal(resp.TransferEncoding, []string{"chunked"}):
		return Result{Outcome: "response not chunked", Detail: fmt.Sprintf("transfer encoding %q", resp.TransferEncoding)}
	}
	return Result{Outcome: OK, Detail: fmt.Sprintf("%d bytes each way, chunked both ways", len(body))}
}

func (c *Client) websocket(ctx context.Context) Result {
	d := websocket.Dialer{NetDialContext: c.dialHTTP, HandshakeTimeout: hangTimeout}
	ws, resp, err := d.DialContext(ctx, "ws://"+net.JoinHostPort(c.Host, strconv.Itoa(c.Ports.HTTP))+"/ws", nil)
	if err != nil {
		if resp != nil {
			return Result{Outcome: "handshake answered " + resp.Status, Detail: err.Error()}
		}
		return failed("handshake", err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(hangTimeout))
	for _, msg := range []string{"one", "two"} {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			return failed("write", err)
		}
		_, got, err := ws.ReadMessage()
		if err != nil {
			return failed("read", err)
		}
		if string(got) != msg {
			return Result{Outcome: "wrong echo", Detail: fmt.Sprintf("%q, want %q", got, msg)}
		}
	}
	return Result{Outcome: OK, Detail: resp.Status + ", 2 messages echoed"}
}

func (c *Client) h2c(ctx context.Context) Result {
	client := c.httpClient(nil, true)
	defer client.CloseIdleConnections()
	resp, b, fail := c.get(ctx, client, "/proto")
	switch {
	case fail != nil:
		return *fail
	case resp.ProtoMajor != 2:
		return Result{Outcome: "client answered over " + resp.Proto}
	case string(b) != "HTTP/2.0":
		return Result{Outcome: "server got " + cut(string(b)), Detail: resp.Status}
	}
	return Result{Outcome: OK, Detail: "client and server on HTTP/2.0"}
}

// get GETs path and reads the body; a failure comes as the Result to report.
func (c *Client) get(ctx context.Context, client *httpProbe, path string) (*http.Response, []byte, *Result) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.url(path), nil)
	return client.roundTrip(req)
}

// roundTrip sends req and reads the whole response body (trailers
// included); a failure comes as the Result to report.
func (h *httpProbe) roundTrip(req *http.Request) (*http.Response, []byte, *Result) {
	resp, err := h.Do(req)
	if err != nil {
		r := h.failed("request", err)
		return nil, nil, &r
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r := h.failed("response body", err)
		return nil, nil, &r
	}
	return resp, b, nil
}

// sourceIP asks the server which address the connection came from.
func (c *Client) sourceIP(ctx context.Context) Result {
	var local string
	client := c.httpClient(func(ctx context.Context, n, a string) (net.Conn, error) {
		conn, err := c.dialHTTP(ctx, n, a)
		if err == nil {
			local, _, _ = net.SplitHostPort(conn.LocalAddr().String())
		}
		return conn, err
	}, false)
	defer client.CloseIdleConnections()
	_, b, fail := c.get(ctx, client, "/ip")
	if fail != nil {
		return *fail
	}
	if string(b) != local {
		return Result{Outcome: "server saw another address", Detail: fmt.Sprintf("server saw %s, the client is %s", cut(string(b)), local)}
	}
	return Result{Outcome: OK, Detail: "server saw " + local + ", the client's own address"}
}

// seen asks the server what it saw on connection id (how its reset
// arrived, what it read after its FIN), until it knows (5 s: then nothing
// arrived, a hang).
func (c *Client) seen(ctx context.Context, id string) (Result, error) {
	client := c.httpClient(nil, false)
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/seen?id="+id), nil)
		resp, err := client.Do(req)
		if err != nil {
			return Result{}, err
		}
		var seen Result
		if resp.StatusCode == http.StatusOK {
			err = json.NewDecoder(resp.Body).Decode(&seen)
		}
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusOK:
			return seen, err
		case time.Now().After(deadline):
			return Result{Class: "timeout", Millis: 5000, Detail: "nothing arrived within 5 s"}, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sse reads event 1, confirms it to the server on another connection and
// only then gets event 2: a path that buffers the stream delivers event 1
// only with event 2, which the server then marks unacked.
func (c *Client) sse(ctx context.Context) Result {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	client := c.httpClient(nil, false)
	defer client.CloseIdleConnections()
	id := randomID()
	start := time.Now()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/sse?id="+id), nil)
	resp, err := client.Do(req)
	if err != nil {
		return client.failed("request", err)
	}
	defer resp.Body.Close()
	events := make(chan string, 2)
	go func() {
		defer close(events)
		for sc := bufio.NewScanner(resp.Body); sc.Scan(); {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				events <- data
			}
		}
	}()
	first, err := nextEvent(events)
	if err != nil {
		return client.failed("event 1", err)
	}
	took := time.Since(start)
	ack, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/sse-ack?id="+id), nil)
	if resp, err := client.Do(ack); err != nil {
		return client.failed("acknowledging event 1", err)
	} else {
		resp.Body.Close()
	}
	second, err := nextEvent(events)
	detail := fmt.Sprintf("event %q after %s, then %q", first, msText(took), second)
	switch {
	case err != nil:
		return client.failed("event 2", err)
	case second == "2 unacked":
		return Result{Outcome: "buffered: event 1 arrived only with event 2", Detail: detail}
	case first != "1" || second != "2 acked":
		return Result{Outcome: "wrong events", Detail: detail}
	}
	return Result{Outcome: OK, Detail: detail}
}

// nextEvent waits hangTimeout for an event; a closed stream is EOF.
func nextEvent(events <-chan string) (string, error) {
	select {
	case e, ok := <-events:
		if !ok {
			return "", io.EOF
		}
		return e, nil
	case <-time.After(hangTimeout):
		return "", context.DeadlineExceeded
	}
}
