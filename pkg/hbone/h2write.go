package hbone

import (
	"bufio"
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// ctlFrame is a small frame queued for the connection's writer. The read
// loop and stream readers queue instead of writing so that they never wait
// for a writer stuck on a peer that does not read: waiting would stop us
// reading, and a peer doing the same would deadlock both.
type ctlFrame struct {
	kind   http2.FrameType
	stream uint32
	code   http2.ErrCode // RST_STREAM, GOAWAY
	val    uint32        // WINDOW_UPDATE increment, GOAWAY last stream ID
	ack    bool          // SETTINGS, PING
	ping   [8]byte
}

// connWriter owns the write side of the Framer: one writer at a time, small
// frames coalesced in bw and flushed when the writer is released, so the
// acknowledgements of a burst of frames leave in one TLS record.
type connWriter struct {
	mu sync.Mutex // held while writing; guards fr's write side, bw, enc, hbuf, err
	// waiting counts goroutines in lock (see unlock).
	waiting atomic.Int32
	fr      *http2.Framer
	bw      *bufio.Writer
	enc     *hpack.Encoder
	hbuf    bytes.Buffer
	err     error       // first write error; the connection is dead after it
	broken  func(error) // called once with err, mu held
	stats   *resetStats

	kickc    chan struct{}
	qmu      sync.Mutex
	queue    []ctlFrame
	spare    []ctlFrame
	overflow bool // the queue hit maxQueuedControl; the connection must end
}

func (w *connWriter) init(bw *bufio.Writer, fr *http2.Framer, broken func(error)) {
	w.bw, w.fr, w.broken = bw, fr, broken
	w.kickc = make(chan struct{}, 1)
	w.enc = hpack.NewEncoder(&w.hbuf)
}

// enqueue queues f without writing it; see kick. Beyond maxQueuedControl
// frames other than GOAWAY are dropped and overflowed reports true from
// then on.
func (w *connWriter) enqueue(f ctlFrame) {
	w.qmu.Lock()
	if len(w.queue) >= maxQueuedControl && f.kind != http2.FrameGoAway { // GOAWAY says why we hang up
		w.overflow = true
	} else {
		w.queue = append(w.queue, f)
	}
	w.qmu.Unlock()
}

func (w *connWriter) overflowed() bool {
	w.qmu.Lock()
	defer w.qmu.Unlock()
	return w.overflow
}

func (w *connWriter) pending() bool {
	w.qmu.Lock()
	defer w.qmu.Unlock()
	return len(w.queue) > 0
}

// kick has the queued frames written, by whichever writer holds the
// connection or else by the flusher goroutine (run): the read loop must never
// block on a socket write, or two peers each writing to the other while
// their read loops wait on the write would deadlock.
func (w *connWriter) kick() {
	if w.pending() {
		select {
		case w.kickc <- struct{}{}:
		default: // a kick is already pending
		}
	}
}

// run writes queued frames when kicked, until done closes.
func (w *connWriter) run(done <-chan struct{}) {
	for {
		select {
		case <-w.kickc:
			w.lock()
			w.unlock()
		case <-done:
			return
		}
	}
}

func (w *connWriter) lock() {
	w.waiting.Add(1)
	w.mu.Lock()
	w.waiting.Add(-1)
}

// unlock writes the queued frames, flushes and releases the writer. A
// frame queued after the drain finds a kick pending or goes with the next
// writer. While another writer waits for the connection, the flush is
// left to it: it will hold the writer next and flush in turn (or leave it
// to the one after), so the frames of concurrent streams leave in one TLS
// record and one syscall.
func (w *connWriter) unlock() { w.release(w.waiting.Load() == 0) }

// unlockFlushed is unlock that always flushes: before the connection
// closes, when nobody would flush after.
func (w *connWriter) unlockFlushed() { w.release(true) }

func (w *connWriter) release(flush bool) {
	w.drain()
	if flush && w.err == nil {
		if err := w.bw.Flush(); err != nil {
			w.fail(err)
		}
	}
	w.mu.Unlock()
}

func (w *connWriter) drain() {
	w.qmu.Lock()
	q := w.queue
	w.queue, w.spare = w.spare[:0], q
	w.qmu.Unlock()
	for i := range q {
		if w.err != nil {
			return
		}
		if err := w.writeCtl(&q[i]); err != nil {
			w.fail(err)
		}
	}
}

func (w *connWriter) writeCtl(f *ctlFrame) error {
	switch f.kind {
	case http2.FrameWindowUpdate:
		return w.fr.WriteWindowUpdate(f.stream, f.val)
	case http2.FrameRSTStream:
		w.stats.resetsSent.Add(1)
		return w.fr.WriteRSTStream(f.stream, f.code)
	case http2.FramePing:
		return w.fr.WritePing(f.ack, f.ping)
	case http2.FrameSettings:
		return w.fr.WriteSettingsAck()
	case http2.FrameGoAway:
		return w.fr.WriteGoAway(f.val, f.code, nil)
	}
	return nil
}

func (w *connWriter) fail(err error) {
	if w.err == nil {
		w.err = err
		w.broken(err)
	}
}

// writeData writes one DATA frame; mu is held.
func (w *connWriter) writeData(id uint32, end bool, p []byte) error {
	if w.err != nil {
		return w.err
	}
	if err := w.fr.WriteData(id, end, p); err != nil {
		w.fail(err)
	}
	return w.err
}

// writeResponse writes a response's header block: :status and the given
// lower-case fields; mu is held. frame is the peer's largest frame size.
// tableSize, unless negative, is a new SETTINGS_HEADER_TABLE_SIZE of the
// peer to honour from this block on.
func (w *connWriter) writeResponse(id uint32, status int, fields []hpack.HeaderField, end bool, frame uint32, tableSize int64) error {
	w.startBlock(tableSize)
	w.enc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	for _, f := range fields {
		w.enc.WriteField(f)
	}
	return w.writeBlock(id, end, frame)
}

// writeRequest writes a CONNECT's header block; mu is held. header must
// have passed checkRequestHeader: a block encoded and then not sent would
// leave the peer's HPACK table behind ours.
func (w *connWriter) writeRequest(id uint32, authority string, header http.Header, frame uint32, tableSize int64) error {
	w.startBlock(tableSize)
	w.enc.WriteField(hpack.HeaderField{Name: ":method", Value: http.MethodConnect})
	w.enc.WriteField(hpack.HeaderField{Name: ":authority", Value: authority})
	for name, values := range header {
		name = strings.ToLower(name)
		if requestHeaderDropped(name) {
			continue
		}
		for _, v := range values {
			w.enc.WriteField(hpack.HeaderField{Name: name, Value: v})
		}
	}
	return w.writeBlock(id, false, frame)
}

func (w *connWriter) startBlock(tableSize int64) {
	if tableSize >= 0 {
		w.enc.SetMaxDynamicTableSizeLimit(uint32(tableSize))
	}
	w.hbuf.Reset()
}

// writeBlock writes the encoded header block in hbuf as HEADERS and, when
// it exceeds the peer's frame size, CONTINUATION frames.
func (w *connWriter) writeBlock(id uint32, end bool, frame uint32) error {
	if w.err != nil {
		return w.err
	}
	block, n := w.hbuf.Bytes(), int(frame)
	chunk, block := block[:min(n, len(block))], block[min(n, len(block)):]
	err := w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: chunk, EndStream: end, EndHeaders: len(block) == 0})
	for err == nil && len(block) > 0 {
		chunk, block = block[:min(n, len(block))], block[min(n, len(block)):]
		err = w.fr.WriteContinuation(id, len(block) == 0, chunk)
	}
	if err != nil {
		w.fail(err)
	}
	return w.err
}
