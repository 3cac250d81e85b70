package hbone

import (
	"io"
	"sync"
	"time"
)

// requestBody is a client stream's sending direction as x/net's writer
// goroutine reads it (the CONNECT request's body). It is fed in one of two
// ways:
//
//   - write hands it one slice and waits until x/net has copied all of it,
//     as io.Pipe does;
//   - pull hands it a whole source (the proxied TCP connection), which
//     x/net's goroutine then reads directly until the source ends.
//
// pull is why this is not an io.Pipe: with a pipe every chunk crosses from
// the goroutine reading the source to x/net's, a wake-up per chunk that on a
// virtual machine costs more than the round trip it carries.
type requestBody struct {
	feed   chan io.Reader // a write's chunk or pull's source, taken by Read
	result chan fedResult // how the taken reader ended (buffered: the feeder may be gone)
	done   chan struct{}  // closed by end or Close: Read returns doneErr from then on
	sent   chan struct{}  // closed by x/net's Close: it is done sending

	mu      sync.Mutex
	doneErr error      // io.EOF after CloseWrite, else why the direction was aborted
	active  io.Reader  // the source Read is on, to interrupt when the body ends
	chunk   writeChunk // write's slice; Read copies from it under mu
	ended   bool
	closed  bool

	cur  io.Reader // what Read is draining; x/net's goroutine only
	curN int64     // bytes read from cur
}

type fedResult struct {
	n   int64
	err error // io.EOF: the chunk was taken or the source ended
}

// writeChunk is write's slice. Its bytes are read under requestBody.mu, so that a
// write that gives up (the body ended) can take its slice back before it
// returns and the caller reuses it.
type writeChunk struct{ p []byte }

func (c *writeChunk) Read(p []byte) (int, error) {
	if len(c.p) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.p)
	c.p = c.p[n:]
	return n, nil
}

func newRequestBody() *requestBody {
	return &requestBody{
		feed:   make(chan io.Reader),
		result: make(chan fedResult, 1),
		done:   make(chan struct{}),
		sent:   make(chan struct{}),
	}
}

// Read is called by x/net's writer goroutine only.
func (b *requestBody) Read(p []byte) (int, error) {
	for {
		if b.cur == nil {
			if b.isDone() { // a feeder may be waiting too: ending wins
				return 0, b.err()
			}
			select {
			case r := <-b.feed:
				b.take(r)
			case <-b.done:
				return 0, b.err()
			}
		}
		n, err := b.readCur(p)
		b.curN += int64(n)
		if err != nil {
			b.finish(err)
		}
		if n > 0 {
			return n, nil
		}
	}
}

func (b *requestBody) take(r io.Reader) {
	b.cur, b.curN = r, 0
	if r != io.Reader(&b.chunk) {
		b.mu.Lock()
		b.active = r
		ended := b.ended
		b.mu.Unlock()
		if ended { // ended before it could see the source
			interrupt(r)
		}
	}
}

func (b *requestBody) readCur(p []byte) (int, error) {
	if b.cur != io.Reader(&b.chunk) {
		return b.cur.Read(p) // a source: may block, never under mu
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.chunk.Read(p)
	if err == nil && len(b.chunk.p) == 0 {
		err = io.EOF // all taken: release the writer now, not on the next Read
	}
	return n, err
}

func (b *requestBody) finish(err error) {
	b.mu.Lock()
	b.active = nil
	b.mu.Unlock()
	// At most one result is never collected (its feeder returned when the
	// body ended, and nothing is fed after that): the buffer holds it.
	select {
	case b.result <- fedResult{b.curN, err}:
	default:
	}
	b.cur = nil
}

func (b *requestBody) isDone() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// write hands p to x/net and returns once x/net copied all of it, or the
// body ended (io.ErrClosedPipe, as a closed io.Pipe says).
func (b *requestBody) write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	b.mu.Lock()
	b.chunk.p = p
	b.mu.Unlock()
	r, err := b.run(&b.chunk)
	b.mu.Lock()
	left := len(b.chunk.p)
	b.chunk.p = nil // x/net must not read p once we return
	b.mu.Unlock()
	if err != nil {
		return len(p) - left, io.ErrClosedPipe
	}
	return int(r.n), nil
}

// pull has x/net read src directly until src ends, and returns the bytes
// read and src's error (nil for EOF). The body stays open: the caller ends
// it (CloseWrite), as after a write.
func (b *requestBody) pull(src io.Reader) (int64, error) {
	r, err := b.run(src)
	if err != nil {
		return r.n, err
	}
	if r.err == io.EOF {
		return r.n, nil
	}
	return r.n, r.err
}

// run feeds r and waits for Read to be done with it. err is set when the
// body ended first.
func (b *requestBody) run(r io.Reader) (fedResult, error) {
	if b.isDone() {
		return fedResult{}, b.err()
	}
	select {
	case b.feed <- r:
	case <-b.done:
		return fedResult{}, b.err()
	}
	select {
	case res := <-b.result:
		return res, nil
	case <-b.done:
		// Read may still be on r; write takes its chunk back, and pull's
		// source has been interrupted (end).
		return fedResult{}, b.err()
	}
}

// end ends the direction: Read returns err from then on (io.EOF sends
// END_STREAM; anything else makes x/net reset the stream). Only the first
// end counts. A source being pulled is interrupted.
func (b *requestBody) end(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ended {
		return
	}
	b.ended, b.doneErr = true, err
	close(b.done)
	if b.active != nil {
		interrupt(b.active)
	}
}

func (b *requestBody) err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.doneErr
}

// Close is x/net's: it is done with the body, having sent all of it or
// given up on the stream.
func (b *requestBody) Close() error {
	b.end(io.ErrClosedPipe)
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.sent)
	}
	b.mu.Unlock()
	return nil
}

// deadliner is a source whose blocked Read can be interrupted.
type deadliner interface {
	SetReadDeadline(time.Time) error
}

// interrupt makes a source's blocked Read return. Only sources that can be
// interrupted are pulled (ClientStream.pull).
func interrupt(r io.Reader) {
	if d, ok := r.(deadliner); ok {
		d.SetReadDeadline(time.Now())
	}
}
