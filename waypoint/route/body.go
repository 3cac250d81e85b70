package route

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
)

var errBodyNotReplayable = errors.New("request body exceeded the retry/mirror buffer limit")
var errBodyClosed = errors.New("request body read after the request finished")

// bodyBuf streams the downstream request body to any number of readers
// (attempts, mirrors) while keeping up to limit bytes, like Envoy's retry
// buffer: the first attempt is not delayed until the body is complete
// (gRPC streaming works), and a retry or mirror replays what was kept.
// Once more than limit bytes were read, the body is no longer replayable:
// only the reader at the head can continue.
type bodyBuf struct {
	mu       sync.Mutex // guards the fields below
	pullMu   sync.Mutex // serializes reads from src
	src      io.Reader
	buf      []byte
	limit    int
	head     int64 // bytes pulled from src
	overflow bool
	srcErr   error // io.EOF at the end
	closed   bool
}

func newBodyBuf(src io.Reader, limit int) *bodyBuf {
	return &bodyBuf{src: src, limit: limit}
}

// replayable reports whether a new reader can read the whole body.
func (b *bodyBuf) replayable() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.overflow
}

// close stops pulling from src (the handler returned; net/http forbids
// reading the body afterwards).
func (b *bodyBuf) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

func (b *bodyBuf) reader() *bodyReader { return &bodyReader{b: b} }

type bodyReader struct {
	b    *bodyBuf
	off  int64
	done atomic.Bool
}

func (r *bodyReader) Read(p []byte) (int, error) {
	if r.done.Load() {
		return 0, io.ErrClosedPipe
	}
	if len(p) == 0 {
		return 0, nil
	}
	b := r.b
	if n, ok, err := r.fromBuf(p); ok {
		return n, err
	}
	// Pull from src holding only pullMu, never mu: src.Read may block for
	// as long as the client takes, and replayable()/other readers of the
	// kept bytes must not wait for it.
	b.pullMu.Lock()
	defer b.pullMu.Unlock()
	if n, ok, err := r.fromBuf(p); ok { // another reader pulled meanwhile
		return n, err
	}
	n, err := b.src.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	if n > 0 {
		if !b.overflow && len(b.buf)+n <= b.limit {
			b.buf = append(b.buf, p[:n]...)
		} else {
			b.overflow = true
		}
		b.head += int64(n)
		r.off += int64(n)
	}
	if err != nil {
		b.srcErr = err
		if n > 0 {
			return n, nil
		}
	}
	return n, err
}

// fromBuf serves p from the kept bytes or reports the reader's state; ok
// false means the reader is at the head and must pull from src.
func (r *bodyReader) fromBuf(p []byte) (int, bool, error) {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case r.off < int64(len(b.buf)):
		n := copy(p, b.buf[r.off:])
		r.off += int64(n)
		return n, true, nil
	case r.off < b.head:
		return 0, true, errBodyNotReplayable
	case b.srcErr != nil:
		return 0, true, b.srcErr
	case b.closed:
		return 0, true, errBodyClosed
	}
	return 0, false, nil
}

func (r *bodyReader) Close() error {
	r.done.Store(true)
	return nil
}
