package proxy

import (
	"net"
	"os"
	"sync"
	"time"
)

// readAheadConn gives a connection without read deadlines (an HBONE
// stream) the ones net/http's HTTP/1.1 server relies on: after every
// request, and to hijack a connection for an upgrade, it interrupts its own
// background read by setting a read deadline in the past, waits for that
// read to return, then reads on. Without working deadlines that wait lasts
// until the client sends again, so a client that waits for the server to
// close (Connection: close, HTTP/1.0), pipelines its requests, or awaits a
// 101 hangs.
//
// A goroutine reads one chunk ahead; Read takes the chunk or gives up at
// the deadline, so an abandoned Read loses nothing: the chunk goes to the
// next Read. Reads must not be concurrent (net/http's are not). Write
// deadlines stay those of the wrapped connection.
type readAheadConn struct {
	net.Conn
	start   sync.Once
	chunks  chan chunk
	closing chan struct{}
	stop    sync.Once

	cur  chunk // being consumed by Read
	off  int
	dead deadline
}

// chunkBufs hold the chunks read ahead: one in flight and one being
// consumed per connection at most.
var chunkBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

type chunk struct {
	buf *[]byte
	n   int
	err error
}

func newReadAheadConn(c net.Conn) *readAheadConn {
	return &readAheadConn{Conn: c, chunks: make(chan chunk), closing: make(chan struct{}), dead: newDeadline()}
}

func (c *readAheadConn) pump() {
	for {
		bp := chunkBufs.Get().(*[]byte)
		n, err := c.Conn.Read(*bp)
		select {
		case c.chunks <- chunk{buf: bp, n: n, err: err}:
		case <-c.closing:
			chunkBufs.Put(bp)
			return
		}
		if err != nil {
			return
		}
	}
}

func (c *readAheadConn) Read(p []byte) (int, error) {
	c.start.Do(func() { go c.pump() })
	if c.cur.buf == nil {
		select {
		case c.cur = <-c.chunks:
			c.off = 0
		case <-c.dead.wait():
			return 0, os.ErrDeadlineExceeded
		}
	}
	n := copy(p, (*c.cur.buf)[c.off:c.cur.n])
	c.off += n
	if c.off < c.cur.n {
		return n, nil
	}
	err := c.cur.err
	if err == nil {
		chunkBufs.Put(c.cur.buf)
		c.cur = chunk{}
	} // else keep returning the stream's error
	return n, err
}

func (c *readAheadConn) Close() error {
	c.stop.Do(func() { close(c.closing) })
	return c.Conn.Close()
}

// CloseWrite half-closes the wrapped connection (an upgraded stream's
// end of request).
func (c *readAheadConn) CloseWrite() error { return closeWrite(c.Conn) }

func (c *readAheadConn) SetReadDeadline(t time.Time) error {
	c.dead.set(t)
	return nil
}

func (c *readAheadConn) SetDeadline(t time.Time) error {
	c.dead.set(t)
	return c.Conn.SetWriteDeadline(t)
}

// deadline is a channel closed once its time has passed, reset by set.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	passed chan struct{}
}

func newDeadline() deadline { return deadline{passed: make(chan struct{})} }

// set moves the deadline to t (zero: none), waking waiters if t is past.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.passed // the timer fired: wait for it to close the channel
	}
	d.timer = nil
	select {
	case <-d.passed:
		d.passed = make(chan struct{})
	default:
	}
	if t.IsZero() {
		return
	}
	if dur := time.Until(t); dur > 0 {
		passed := d.passed
		d.timer = time.AfterFunc(dur, func() { close(passed) })
		return
	}
	close(d.passed)
}

func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.passed
}

// closeWrite half-closes c when it can (a TCP connection, an HBONE
// stream, a TLS connection), else closes it.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}
