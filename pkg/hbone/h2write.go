package hbone

import (
	"bufio"
	"bytes"
	"strconv"
	"sync"

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
	mu     sync.Mutex // held while writing; guards fr's write side, bw, enc, hbuf, err
	fr     *http2.Framer
	bw     *bufio.Writer
	enc    *hpack.Encoder
	hbuf   bytes.Buffer
	err    error       // first write error; the connection is dead after it
	broken func(error) // called once with err, mu held
	stats  *serverStats

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

func (w *connWriter) lock() { w.mu.Lock() }

// unlock writes the queued frames, flushes and releases the writer. A
// frame queued after the drain finds a kick pending or goes with the next
// writer.
func (w *connWriter) unlock() {
	w.drain()
	if w.err == nil {
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

// writeHeaders writes a response HEADERS frame with :status and the given
// lower-case fields; mu is held. tableSize, unless negative, is a new
// SETTINGS_HEADER_TABLE_SIZE of the peer to honour from this block on.
func (w *connWriter) writeHeaders(id uint32, status int, fields []hpack.HeaderField, end bool, tableSize int64) error {
	if w.err != nil {
		return w.err
	}
	if tableSize >= 0 {
		w.enc.SetMaxDynamicTableSizeLimit(uint32(tableSize))
	}
	w.hbuf.Reset()
	w.enc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	for _, f := range fields {
		w.enc.WriteField(f)
	}
	err := w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: w.hbuf.Bytes(), EndStream: end, EndHeaders: true})
	if err != nil {
		w.fail(err)
	}
	return w.err
}
