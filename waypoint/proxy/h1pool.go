package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// h1Pool sends HTTP/1.1 requests without a body upstream from the caller's
// goroutine: the request is written and the response read where the
// router runs. net/http's Transport hands each request to a writeLoop
// goroutine and each response over from a readLoop goroutine; those two
// hand-offs and the thread wake-ups they cost were the waypoint's largest
// CPU item at moderate load. Requests that have a body (the response may
// come while it is still being sent), wait for 100 Continue, upgrade,
// originate TLS or go over HTTP/2 stay on the Transport.
//
// Framing is net/http's own (Request.Write, ReadResponse); this type only
// pools connections, as the Transport does: LIFO per endpoint, at most
// maxIdle idle per endpoint, closed after idleTimeout unused, never reused
// after "Connection: close", an unfinished body or unsolicited bytes.
type h1Pool struct {
	dial        func(ctx context.Context, key string) (net.Conn, error)
	idleTimeout time.Duration
	maxIdle     int

	mu     sync.Mutex
	idle   map[string][]*h1Conn
	closed bool
}

// h1Conn is one pooled upstream connection.
type h1Conn struct {
	pool    *h1Pool
	key     string
	c       net.Conn
	br      *bufio.Reader
	bw      *bufio.Writer
	written int64       // bytes handed to c (a failed write that wrote nothing can be retried)
	read    int64       // bytes read from c (a request unanswered can be retried)
	limit   int64       // read may not pass it: bounds a response head
	sent    int         // requests sent on c
	timer   *time.Timer // closes c when idle too long
}

// h1Eligible is whether out can go through the h1Pool.
func h1Eligible(out *http.Request) bool {
	_, expect := out.Header["Expect"]
	_, upgrade := out.Header["Upgrade"]
	return (out.Body == nil || out.Body == http.NoBody) && !expect && !upgrade
}

// roundTrip sends out on a pooled connection to key (dialled when none is
// idle) and returns the response; its body gives the connection back at
// EOF. maxPerConn > 0 retires a connection after that many requests. A
// request that fails on a reused connection before any answer is tried
// again on another, when it is safe to (Transport's rule).
func (p *h1Pool) roundTrip(out *http.Request, key string, maxPerConn int) (*http.Response, error) {
	if err := validRequestHeader(out.Header); err != nil {
		return nil, err
	}
	ctx := out.Context()
	for {
		pc, reused, err := p.get(ctx, key)
		if err != nil {
			return nil, err
		}
		resp, retry, err := pc.roundTrip(out, maxPerConn)
		if err == nil && ctx.Err() != nil {
			// Ended while answered: closing the tunnel on cancel half-closes
			// it, and a backend may answer its EOF (net/http's implicit 200)
			// before the read sees the close. A cancelled request has no
			// response, as with the Transport.
			resp.Body.Close()
			resp, err = nil, ctx.Err()
		}
		if err == nil {
			return resp, nil
		}
		pc.c.Close()
		if !reused || !retry || ctx.Err() != nil {
			return nil, err
		}
	}
}

// validRequestHeader refuses header fields that would break the request's
// framing (CR/LF injection), as the Transport does; values are not quoted
// in the error: they may be secrets.
func validRequestHeader(h http.Header) error {
	for k, vv := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("invalid upstream header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("invalid upstream header field value for %q", k)
			}
		}
	}
	return nil
}

// get takes the most recently used idle connection to key that is still
// open, or dials one.
func (p *h1Pool) get(ctx context.Context, key string) (*h1Conn, bool, error) {
	for {
		pc := p.popIdle(key)
		if pc == nil {
			break
		}
		if pc.stillIdle() {
			return pc, true, nil
		}
		pc.c.Close()
	}
	c, err := p.dial(ctx, key)
	if err != nil {
		return nil, false, err
	}
	pc := &h1Conn{pool: p, key: key, c: c, limit: math.MaxInt64}
	pc.br = bufio.NewReaderSize(readCounter{pc}, 32<<10)
	pc.bw = bufio.NewWriterSize(writeCounter{pc}, 4<<10)
	return pc, false, nil
}

func (p *h1Pool) popIdle(key string) *h1Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	conns := p.idle[key]
	if len(conns) == 0 {
		return nil
	}
	pc := conns[len(conns)-1]
	conns[len(conns)-1] = nil
	p.idle[key] = conns[:len(conns)-1]
	if len(conns) == 1 {
		delete(p.idle, key)
	}
	pc.timer.Stop()
	return pc
}

// put makes pc idle again, or closes it when the pool is full or closed.
func (p *h1Pool) put(pc *h1Conn) {
	p.mu.Lock()
	if p.closed || len(p.idle[pc.key]) >= p.maxIdle {
		p.mu.Unlock()
		pc.c.Close()
		return
	}
	if p.idle == nil {
		p.idle = map[string][]*h1Conn{}
	}
	p.idle[pc.key] = append(p.idle[pc.key], pc)
	if pc.timer == nil {
		pc.timer = time.AfterFunc(p.idleTimeout, pc.expire)
	} else {
		pc.timer.Reset(p.idleTimeout)
	}
	p.mu.Unlock()
}

// expire closes pc if it is still idle when its idle timer fires.
func (pc *h1Conn) expire() {
	p := pc.pool
	p.mu.Lock()
	conns := p.idle[pc.key]
	for i, c := range conns {
		if c == pc {
			p.idle[pc.key] = append(conns[:i], conns[i+1:]...)
			if len(p.idle[pc.key]) == 0 {
				delete(p.idle, pc.key)
			}
			p.mu.Unlock()
			pc.c.Close()
			return
		}
	}
	p.mu.Unlock()
}

// close closes every idle connection; connections in use close when their
// request ends.
func (p *h1Pool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, conns := range idle {
		for _, pc := range conns {
			pc.timer.Stop()
			pc.c.Close()
		}
	}
}

// stillIdle is whether the upstream left pc open and silent while it was
// idle: neither its end nor unsolicited bytes are waiting to be read.
func (pc *h1Conn) stillIdle() bool {
	if pc.br.Buffered() > 0 {
		return false
	}
	switch c := pc.c.(type) {
	case *streamConn:
		p, ok := c.Stream.(interface{ Pending() bool })
		return ok && !p.Pending()
	case syscall.Conn:
		return socketSilent(c)
	}
	return false
}

// socketSilent peeks at c's socket without waiting: true when nothing,
// not even its end, arrived.
func socketSilent(c syscall.Conn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	silent := false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		silent = rerr == syscall.EAGAIN
		return true
	})
	return err == nil && silent
}

// writeCounter and readCounter count the bytes written to and read from
// the connection.
type (
	writeCounter struct{ pc *h1Conn }
	readCounter  struct{ pc *h1Conn }
)

func (w writeCounter) Write(b []byte) (int, error) {
	n, err := w.pc.c.Write(b)
	w.pc.written += int64(n)
	return n, err
}

func (r readCounter) Read(b []byte) (int, error) {
	pc := r.pc
	left := pc.limit - pc.read
	if left <= 0 {
		return 0, fmt.Errorf("upstream response head larger than %d bytes", maxResponseHeaderBytes)
	}
	if int64(len(b)) > left {
		b = b[:left]
	}
	n, err := pc.c.Read(b)
	pc.read += int64(n)
	return n, err
}

// maxInformational bounds the 1xx responses skipped before the final one
// (the Transport's limit).
const maxInformational = 5

// roundTrip sends out on pc and reads the response head. retry reports
// whether a failure may be retried on another connection: nothing was
// written, or the connection ended before any answer to a request that
// can be replayed.
func (pc *h1Conn) roundTrip(out *http.Request, maxPerConn int) (resp *http.Response, retry bool, err error) {
	stop := context.AfterFunc(out.Context(), func() { pc.c.Close() })
	defer func() {
		if err != nil {
			stop()
		}
	}()
	pc.sent++
	written, read := pc.written, pc.read
	if err := out.Write(pc.bw); err != nil {
		return nil, pc.written == written, err
	}
	if err := pc.bw.Flush(); err != nil {
		return nil, pc.written == written, err
	}
	for range maxInformational + 1 {
		// The head may start in what is buffered already.
		pc.limit = pc.read - int64(pc.br.Buffered()) + maxResponseHeaderBytes
		resp, err = http.ReadResponse(pc.br, out)
		pc.limit = math.MaxInt64
		if err != nil {
			return nil, pc.read == read && replayable(out), err
		}
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			return nil, false, errors.New("101 Switching Protocols to a request that asked for no upgrade")
		case resp.StatusCode >= 200:
			pc.attachBody(resp, out, stop, maxPerConn)
			return resp, false, nil
		}
	}
	return nil, false, errors.New("too many 1xx informational responses")
}

// replayable is net/http's rule for sending a request again after its
// connection died: no body, and idempotent.
func replayable(r *http.Request) bool {
	switch r.Method {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	_, ok := r.Header["Idempotency-Key"]
	_, xok := r.Header["X-Idempotency-Key"]
	return ok || xok
}

// attachBody makes resp's body give pc back to the pool once read to its
// end (now, when there is none), unless pc is to close.
func (pc *h1Conn) attachBody(resp *http.Response, out *http.Request, stop func() bool, maxPerConn int) {
	keep := !resp.Close && !out.Close && (maxPerConn <= 0 || pc.sent < maxPerConn)
	if resp.Body == http.NoBody {
		pc.done(keep, stop)
		return
	}
	resp.Body = &h1Body{ReadCloser: resp.Body, pc: pc, keep: keep, stop: stop}
}

// done ends pc's request: back to the pool when keep, the request's
// context did not close it and nothing unread is left; else closed.
func (pc *h1Conn) done(keep bool, stop func() bool) {
	if stop() && keep && pc.br.Buffered() == 0 {
		pc.pool.put(pc)
		return
	}
	pc.c.Close()
}

// h1Body is a response body that ends its connection's request once.
type h1Body struct {
	io.ReadCloser
	pc   *h1Conn
	keep bool
	stop func() bool
	once sync.Once
}

func (b *h1Body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		// At EOF the connection may serve the next request; after any
		// other error it closes.
		keep := b.keep && err == io.EOF
		b.once.Do(func() { b.pc.done(keep, b.stop) })
	}
	return n, err
}

// Close before EOF closes the connection: what is unread cannot be
// skipped safely.
func (b *h1Body) Close() error {
	b.once.Do(func() { b.pc.done(false, b.stop) })
	return nil
}
