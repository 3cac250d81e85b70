package hbone

import (
	"context"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// stream is one CONNECT stream of an h2Conn. Each direction ends on its
// own: recvEnded at the peer's END_STREAM, sendEnded at ours; the stream is
// closed (leaves sc.streams) when both ended or on a reset either way.
type stream struct {
	sc     *h2Conn
	id     uint32
	ctx    context.Context    // server: the handler's; nil on a client
	cancel context.CancelFunc // nil on a client
	cond   sync.Cond          // L is sc.mu; data, END_STREAM, window, reset, close
	wmu    sync.Mutex         // one application write at a time, so DATA stays in order

	// Guarded by sc.mu.
	buf         recvBuffer
	recvWindow  int32 // bytes the client may still send
	recvUnacked int32 // read by the application, not yet returned
	sendWindow  int64
	recvEnded   bool
	sendEnded   bool
	responded   bool  // response HEADERS sent (server) or received (client)
	status      int   // the response's status (client)
	err         error // why the stream failed: reset either way, connection lost
	closed      bool  // protocol state closed, no longer in sc.streams
	appClosed   bool  // ServerStream/ClientStream.Close, or the handler returned
	handlerDone bool
	readBy      time.Time   // read deadline (SetReadDeadline); zero: none
	readTimer   *time.Timer // wakes readers at readBy; made on first use
	readers     int         // Reads waiting (for tests to await)
}

func (sc *h2Conn) newStreamLocked(id uint32, ended bool) *stream {
	st := &stream{sc: sc, id: id, recvWindow: sc.opts.StreamWindow, sendWindow: int64(sc.peerWindow), recvEnded: ended}
	st.cond.L = &sc.mu
	if !sc.client {
		// The handler's context (server). A client stream has none: a
		// context that no failure cancels would stay registered with the
		// connection's after the stream closed cleanly.
		st.ctx, st.cancel = context.WithCancel(sc.ctx)
	}
	sc.streams[id] = st
	if sc.idle != nil {
		sc.idle.Stop()
	}
	return st
}

// closeStreamLocked moves st to closed; err non-nil means it failed, and
// what it had received and not read is dropped (see keepsRecvLocked).
func (sc *h2Conn) closeStreamLocked(st *stream, err error) {
	if err != nil && st.err == nil && !(st.recvEnded && st.sendEnded) {
		st.err = err
		if !st.keepsRecvLocked() {
			sc.returnConnLocked(int32(st.buf.discard()))
		}
		if st.cancel != nil {
			st.cancel()
		}
		sc.connCond.Broadcast() // a writer may wait for connection window
	}
	st.cond.Broadcast()
	if st.closed {
		return
	}
	st.closed = true
	delete(sc.streams, st.id)
	sc.maybeIdleLocked()
}

// keepsRecvLocked reports whether st's received direction outlives a
// failure: on the client, a response that ended (END_STREAM) is complete,
// and a server that resets the stream after it (RST_STREAM(NO_ERROR),
// RFC 9113 8.1: it does not need the rest of the request) must not cut off
// what the application has not read yet; Read returns it, then EOF.
func (st *stream) keepsRecvLocked() bool { return st.sc.client && st.recvEnded }

// resetLocked sends RST_STREAM(code) and fails st with err.
func (sc *h2Conn) resetLocked(st *stream, code http2.ErrCode, err error) {
	if !st.closed {
		sc.w.enqueue(ctlFrame{kind: http2.FrameRSTStream, stream: st.id, code: code})
	}
	sc.closeStreamLocked(st, err)
}

// liveLocked counts what keeps the connection busy: open streams and
// handlers, running or waiting.
func (sc *h2Conn) liveLocked() int {
	return len(sc.streams) + sc.handlers + len(sc.waiting)
}

// maybeIdleLocked runs when a stream or handler ended: with nothing left,
// a draining connection closes and others start their idle timer.
func (sc *h2Conn) maybeIdleLocked() {
	if sc.liveLocked() > 0 || sc.closeErr != nil {
		return
	}
	if sc.goingAway {
		sc.closeGracefully()
	} else if sc.idle != nil {
		sc.idle.Reset(sc.opts.IdleTimeout)
	}
}

// startHandlerLocked runs fn on its own goroutine, or queues it while
// MaxConcurrentStreams handlers run: a stream's slot frees when the stream
// closes, but its handler may still be busy, and resets must not let a
// client start handlers without bound (CVE-2023-44487). A client that
// queues more than four connections' worth is cut off.
func (sc *h2Conn) startHandlerLocked(fn func()) error {
	max := int(sc.opts.MaxConcurrentStreams)
	if sc.handlers < max {
		sc.handlers++
		go fn()
		return nil
	}
	if len(sc.waiting) >= 4*max {
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
	}
	sc.waiting = append(sc.waiting, fn)
	return nil
}

// handlerEndedLocked starts the next waiting handler, if any.
func (sc *h2Conn) handlerEndedLocked() {
	sc.handlers--
	if len(sc.waiting) > 0 && sc.closeErr == nil {
		fn := sc.waiting[0]
		sc.waiting = sc.waiting[1:]
		sc.handlers++
		go fn()
	}
	sc.maybeIdleLocked()
}

func (st *stream) read(p []byte) (int, error) {
	sc := st.sc
	sc.mu.Lock()
	for !st.pendingLocked() && !st.readExpiredLocked() {
		st.readers++
		st.cond.Wait()
		st.readers--
	}
	switch {
	case st.appClosed:
		sc.mu.Unlock()
		return 0, net.ErrClosed
	case st.readExpiredLocked():
		sc.mu.Unlock()
		return 0, os.ErrDeadlineExceeded
	case st.buf.len() > 0:
		n := st.buf.read(p)
		sc.consumedLocked(st, int32(n))
		sc.mu.Unlock()
		sc.w.kick()
		return n, nil
	case st.err != nil && !st.keepsRecvLocked():
		sc.mu.Unlock()
		return 0, st.err
	}
	sc.mu.Unlock()
	return 0, io.EOF
}

// pendingLocked is whether read has something to return other than a
// deadline's expiry.
func (st *stream) pendingLocked() bool {
	return st.buf.len() > 0 || st.recvEnded || st.err != nil || st.appClosed
}

func (st *stream) pending() bool {
	st.sc.mu.Lock()
	defer st.sc.mu.Unlock()
	return st.pendingLocked()
}

// setReadDeadline gives Read net.Conn's deadline: a Read waiting at t, or
// starting after it, returns os.ErrDeadlineExceeded; a zero t removes the
// deadline. One timer per stream, reset on every call: net/http's HTTP/1.1
// server moves the deadline on every request, and a stale firing (the
// deadline moved on since) wakes readers that find it not passed.
func (st *stream) setReadDeadline(t time.Time) {
	sc := st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	st.readBy = t
	if t.IsZero() {
		st.stopReadTimerLocked()
		return
	}
	d := time.Until(t)
	if d <= 0 {
		st.cond.Broadcast()
		return
	}
	if st.readTimer == nil {
		st.readTimer = time.AfterFunc(d, st.wakeReaders)
	} else {
		st.readTimer.Reset(d)
	}
}

func (st *stream) wakeReaders() {
	st.sc.mu.Lock()
	st.cond.Broadcast()
	st.sc.mu.Unlock()
}

// stopReadTimerLocked stops the read deadline's timer: when the deadline
// is removed, and when the application is done with st (a pending timer
// would keep the stream and its connection reachable until it fires).
func (st *stream) stopReadTimerLocked() {
	if st.readTimer != nil {
		st.readTimer.Stop()
	}
}

func (st *stream) readExpiredLocked() bool {
	return !st.readBy.IsZero() && !time.Now().Before(st.readBy)
}

// write sends p, then END_STREAM if end, in frames that fit the peer's
// frame size and the send windows, waiting for window as needed.
func (st *stream) write(p []byte, end bool) (int, error) {
	st.wmu.Lock()
	defer st.wmu.Unlock()
	total := 0
	for {
		n, err := st.reserveSend(len(p), end)
		if err != nil {
			return total, err
		}
		last := end && n == len(p)
		if n > 0 || last {
			if err := st.writeData(p[:n], last); err != nil {
				return total, err
			}
		}
		total += n
		p = p[n:]
		if len(p) == 0 {
			return total, nil
		}
	}
}

// reserveSend takes up to want bytes of send window (connection and
// stream), waiting while either is exhausted; 0 when want is 0.
func (st *stream) reserveSend(want int, end bool) (int, error) {
	sc := st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for {
		if err := st.sendErrLocked(); err != nil {
			return 0, err
		}
		switch {
		case want == 0:
			return 0, nil
		case st.sendWindow <= 0:
			st.cond.Wait()
		case sc.sendWindow <= 0:
			sc.connCond.Wait()
		default:
			n := min(int64(want), st.sendWindow, sc.sendWindow, int64(sc.peerFrame))
			st.sendWindow -= n
			sc.sendWindow -= n
			sc.windowUps.earn(float64(n/windowEarnBytes), windowEarnMax)
			return int(n), nil
		}
	}
}

func (st *stream) sendErrLocked() error {
	switch {
	case st.err != nil:
		return st.err
	case st.appClosed:
		return net.ErrClosed
	case st.sendEnded:
		return errWriteAfterEnd
	}
	return nil
}

// writeData writes one DATA frame unless the stream failed meanwhile (no
// DATA may follow our RST_STREAM).
func (st *stream) writeData(p []byte, end bool) error {
	sc := st.sc
	sc.w.lock()
	defer sc.w.unlock()
	sc.mu.Lock()
	err := st.err
	if err == nil && end {
		st.sendEnded = true
		if st.recvEnded {
			sc.closeStreamLocked(st, nil)
		}
	}
	sc.mu.Unlock()
	if err != nil {
		return err
	}
	return sc.w.writeData(st.id, end, p)
}

// writeHeaders sends the response HEADERS with status and fields.
func (st *stream) writeHeaders(status int, fields []hpack.HeaderField, end bool) error {
	sc := st.sc
	sc.w.lock()
	defer sc.w.unlock()
	sc.mu.Lock()
	err := st.err
	table, frame := int64(-1), uint32(0)
	if err == nil {
		table, sc.tableSize = sc.tableSize, -1
		frame = sc.peerFrame
		st.responded = true
		st.sendEnded = end
		if end && st.recvEnded {
			sc.closeStreamLocked(st, nil)
		}
	}
	sc.mu.Unlock()
	if err != nil {
		return err
	}
	return sc.w.writeResponse(st.id, status, fields, end, frame, table)
}

// close ends the application's use of st: a reset (RST_STREAM(code)) unless
// both directions already ended, and what is unread is dropped.
func (st *stream) close(code http2.ErrCode, why error) {
	sc := st.sc
	sc.mu.Lock()
	if st.appClosed {
		sc.mu.Unlock()
		return
	}
	st.appClosed = true
	st.stopReadTimerLocked()
	if !st.closed {
		sc.resetLocked(st, code, why)
	}
	sc.returnConnLocked(int32(st.buf.discard()))
	st.cond.Broadcast()
	sc.connCond.Broadcast()
	sc.mu.Unlock()
	sc.w.kick()
}
