package probe

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// Client runs behaviours against a probe server.
type Client struct {
	// Host is the server's name or address; names are resolved once
	// (Resolve), so a thousand connections do not make a thousand lookups.
	Host  string
	Ports Ports
	// Addr is the host's address, when it is not to be looked up.
	Addr string
	Sizes

	ip string
}

// Resolve looks the host up once for every later connection, unless
// Addr gives its address (as curl --resolve: HTTP requests still name Host).
func (c *Client) Resolve(ctx context.Context) error {
	if c.Addr != "" {
		c.ip = c.Addr
		return nil
	}
	ips, err := net.DefaultResolver.LookupHost(ctx, c.Host)
	if err != nil {
		return err
	}
	c.ip = ips[0]
	return nil
}

// Run runs one behaviour (an ID of Behaviours) and times it.
func (c *Client) Run(ctx context.Context, behaviour string) Result {
	run, ok := c.behaviours()[behaviour]
	if !ok {
		return Result{Behaviour: behaviour, Outcome: "unknown behaviour"}
	}
	if n := c.loadOf(behaviour); n != nil && *n < 1 {
		// A load row with nothing to load would pass without testing.
		return Result{Behaviour: behaviour, Outcome: "no load configured", Detail: "the client's count for this behaviour is 0"}
	}
	start := time.Now()
	r := run(ctx)
	r.Behaviour, r.Millis = behaviour, ms(time.Since(start))
	return r
}

// loadOf is the count a load behaviour sends, nil for the others.
func (c *Client) loadOf(behaviour string) *int {
	idle := int(c.Idle.Milliseconds())
	return map[string]*int{"concurrent": &c.Conns, "keepalive-off": &c.Requests, "grpc-streams": &c.Streams, "idle": &idle}[behaviour]
}

func (c *Client) behaviours() map[string]func(context.Context) Result {
	return map[string]func(context.Context) Result{
		"half-close":        c.halfClose,
		"server-half-close": c.serverHalfClose,
		"idle":              c.idle,
		"server-close-raw":  c.serverCloseRaw,
		"http10":            c.rawHTTP("GET /hello?n=10 HTTP/1.0\r\nHost: %s\r\n\r\n", "hello 10\n"),
		"connection-close":  c.rawHTTP("GET /hello?n=11 HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", "hello 11\n"),
		"rst-from-server":   c.rstFromServer,
		"rst-from-client":   c.rstFromClient,
		"closed-port":       c.closedPort,
		"bulk":              c.bulk,
		"concurrent":        c.concurrent,
		"pipelining":        c.pipelining,
		"chunked":           c.chunked,
		"websocket":         c.websocket,
		"h2c":               c.h2c,
		"sse":               c.sse,
		"source-ip":         c.sourceIP,
		"keepalive-off":     c.keepAliveOff,
		"expect-continue":   c.expectContinue,
		"trailers":          c.trailers,
		"grpc-streams":      c.grpcStreams,
	}
}

func (c *Client) addr(port int) string { return net.JoinHostPort(c.ip, strconv.Itoa(port)) }

func (c *Client) dial(ctx context.Context, port int) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: hangTimeout}
	conn, err := d.DialContext(ctx, "tcp", c.addr(port))
	if err != nil {
		return nil, err
	}
	return conn.(*net.TCPConn), nil
}

// dialHTTP is the HTTP clients' DialContext: the resolved address, whatever
// host the URL names.
func (c *Client) dialHTTP(ctx context.Context, _, _ string) (net.Conn, error) {
	return c.dial(ctx, c.Ports.HTTP)
}

// failed is the Result of a step that failed.
func failed(step string, err error) Result {
	class := Classify(err)
	return Result{Outcome: step + ": " + class, Class: class, Detail: err.Error()}
}

// replied judges a reply read to EOF: valid checks the bytes, err is the
// read's end (nil: EOF).
func replied(got []byte, err error, valid func([]byte) error) Result {
	verr := valid(got)
	class := Classify(err)
	switch {
	case verr == nil && err == nil:
		return Result{Outcome: OK, Detail: fmt.Sprintf("%d bytes, then EOF", len(got))}
	case verr == nil:
		return Result{Outcome: "reply, then " + class + " instead of EOF", Class: class,
			Detail: fmt.Sprintf("%d bytes (complete), then: %v", len(got), err)}
	case len(got) == 0 && err != nil:
		return failed("no reply", err)
	case len(got) == 0:
		return Result{Outcome: "no reply: eof", Class: "eof", Detail: "EOF before any byte"}
	case err != nil:
		return Result{Outcome: "partial reply, then " + class, Class: class, Detail: fmt.Sprintf("%d bytes (%v), then: %v", len(got), verr, err)}
	}
	return Result{Outcome: "wrong reply", Detail: verr.Error()}
}

func (c *Client) halfClose(ctx context.Context) Result {
	conn, err := c.dial(ctx, c.Ports.HalfClose)
	if err != nil {
		return failed("connect", err)
	}
	defer conn.Close()
	msg := bytes.Repeat([]byte("half-close "), 10000)
	if _, err := conn.Write(msg); err != nil {
		return failed("write", err)
	}
	if err := conn.CloseWrite(); err != nil {
		return failed("close write", err)
	}
	got, err := readToEOF(conn)
	return replied(got, err, equals(fmt.Sprintf("%d %x\n", len(msg), sha256.Sum256(msg))))
}

func (c *Client) serverCloseRaw(ctx context.Context) Result {
	conn, err := c.dial(ctx, c.Ports.Banner)
	if err != nil {
		return failed("connect", err)
	}
	defer conn.Close()
	got, err := readToEOF(conn)
	return replied(got, err, equals(bannerText))
}

func equals(want string) func([]byte) error {
	return func(got []byte) error {
		if string(got) != want {
			return fmt.Errorf("got %q, want %q", cut(string(got)), want)
		}
		return nil
	}
}

func cut(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}

// closedPort connects where nothing listens and says how that failed.
func (c *Client) closedPort(ctx context.Context) Result {
	start := time.Now()
	conn, err := c.dial(ctx, c.Ports.Closed)
	if err != nil {
		return closedPortResult("connect", err, time.Since(start))
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("x")); err != nil {
		return closedPortResult("connected, then write", err, time.Since(start))
	}
	conn.SetReadDeadline(time.Now().Add(hangTimeout))
	n, err := conn.Read(make([]byte, 1))
	if n > 0 {
		return Result{Outcome: "connected and got data", Detail: "a closed port answered"}
	}
	return closedPortResult("connected, then read", err, time.Since(start))
}

// closedPortResult: refused and reset are both a connection error (see
// ConnError); a clean close looks like an empty reply and a hang is a hang.
func closedPortResult(step string, err error, took time.Duration) Result {
	class := Classify(err)
	detail := fmt.Sprintf("%s: %s after %s", step, class, msText(took))
	if class == "refused" || class == "reset" {
		return Result{Outcome: ConnError, Class: class, Detail: detail}
	}
	return Result{Outcome: step + ": " + class, Class: class, Detail: detail + ": " + fmt.Sprint(err)}
}

// resetResult judges how a reset arrived: as ECONNRESET within a second.
func resetResult(class string, took time.Duration, detail string) Result {
	detail = fmt.Sprintf("%s after %s (%s)", class, msText(took), detail)
	switch {
	case class == "reset" && took <= time.Second:
		return Result{Outcome: OK, Class: class, Detail: detail}
	case class == "reset":
		return Result{Outcome: "reset later than 1 s", Class: class, Detail: detail}
	case class == "eof":
		return Result{Outcome: "FIN instead of RST", Class: class, Detail: detail}
	case class == "timeout":
		return Result{Outcome: "neither RST nor FIN (hang)", Class: class, Detail: detail}
	}
	return Result{Outcome: "not a reset: " + class, Class: class, Detail: detail}
}

func (c *Client) rstFromServer(ctx context.Context) Result {
	conn, err := c.dial(ctx, c.Ports.ServerReset)
	if err != nil {
		return failed("connect", err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(hangTimeout))
	if _, err := bufio.NewReader(conn).ReadString('\n'); err != nil {
		return failed("no ready", err)
	}
	if _, err := conn.Write([]byte("g")); err != nil {
		return failed("write", err)
	}
	start := time.Now()
	_, err = conn.Read(make([]byte, 1))
	if err == nil {
		return Result{Outcome: "data instead of a reset"}
	}
	return resetResult(Classify(err), time.Since(start), err.Error())
}

// rstFromClient resets a connection the server is reading and asks the
// server (over HTTP) how the reset arrived.
func (c *Client) rstFromClient(ctx context.Context) Result {
	id := randomID()
	conn, err := c.dial(ctx, c.Ports.ClientReset)
	if err != nil {
		return failed("connect", err)
	}
	if _, err := io.WriteString(conn, id+"\n"); err != nil {
		conn.Close()
		return failed("write", err)
	}
	conn.SetReadDeadline(time.Now().Add(hangTimeout))
	if _, err := bufio.NewReader(conn).ReadString('\n'); err != nil {
		conn.Close()
		return failed("no ready", err)
	}
	conn.SetLinger(0)
	conn.Close()
	seen, err := c.seen(ctx, id)
	if err != nil {
		return failed("asking the server what it saw", err)
	}
	return resetResult(seen.Class, time.Duration(seen.Millis*float64(time.Millisecond)), "at the server: "+seen.Detail)
}

func randomID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// serverHalfCloseBytes is what the client sends after the server's FIN.
const serverHalfCloseBytes = 1 << 20

// serverHalfClose reads the server's greeting and FIN, then sends
// serverHalfCloseBytes and half-closes, and asks the server (over HTTP)
// what it received after its own FIN.
func (c *Client) serverHalfClose(ctx context.Context) Result {
	id := randomID()
	conn, err := c.dial(ctx, c.Ports.ServerHalfClose)
	if err != nil {
		return failed("connect", err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, id+"\n"); err != nil {
		return failed("write", err)
	}
	got, err := readToEOF(conn)
	if r := replied(got, err, equals(greetingText)); r.Outcome != OK {
		return r
	}
	msg := make([]byte, serverHalfCloseBytes)
	rand.Read(msg)
	conn.SetWriteDeadline(time.Now().Add(hangTimeout))
	if _, err := conn.Write(msg); err != nil {
		return failed("write after the server's FIN", err)
	}
	if err := conn.CloseWrite(); err != nil {
		return failed("close write", err)
	}
	seen, err := c.seen(ctx, id)
	if err != nil {
		return failed("asking the server what it read", err)
	}
	if want := fmt.Sprintf("%d %x", len(msg), sha256.Sum256(msg)); seen.Class != "" || seen.Detail != want {
		return Result{Outcome: "the server did not read it all: " + seen.Class, Class: seen.Class, Detail: "at the server: " + seen.Detail}
	}
	return Result{Outcome: OK, Detail: fmt.Sprintf("greeting and FIN, then %d KiB to the server, byte-exact, then EOF", len(msg)>>10)}
}

// idle echoes once, stays silent for Idle, and echoes again: nothing on
// the path may close or forget a quiet connection.
func (c *Client) idle(ctx context.Context) Result {
	conn, err := c.dial(ctx, c.Ports.Echo)
	if err != nil {
		return failed("connect", err)
	}
	defer conn.Close()
	if err := echoOnce(conn); err != nil {
		return failed("first echo", err)
	}
	select {
	case <-time.After(c.Idle):
	case <-ctx.Done():
		return failed("idle", ctx.Err())
	}
	if err := echoOnce(conn); err != nil {
		return failed(fmt.Sprintf("echo after %s idle", c.Idle), err)
	}
	return Result{Outcome: OK, Detail: fmt.Sprintf("echoed, %s idle, echoed", c.Idle)}
}
