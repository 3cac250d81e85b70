package hbone

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// The client side of an h2Conn: Dialer's connections. A stream's Write
// sends DATA from the caller's goroutine, as on the server side, so an open
// stream holds no send buffer and no goroutine of its own.

var (
	// errConnUnusable: the connection takes no new streams (GOAWAY, ours
	// or the server's); nothing was sent.
	errConnUnusable = errors.New("hbone: tunnel connection takes no new streams")
	// errGoneAway fails a stream the server's GOAWAY says it never
	// processed.
	errGoneAway = errors.New("hbone: tunnel server went away before processing the stream")
)

// maxClientStreamID is the last stream ID a client may open (2^31-1).
const maxClientStreamID = 1<<31 - 1

// newClientConn starts HTTP/2 on conn (TLS done, with peer): our preface,
// SETTINGS and connection window go out at once, the read loop runs on its
// own goroutine, and streams may open before the server's SETTINGS arrive.
func newClientConn(conn, raw net.Conn, peer spiffeid.ID, o Options, log *slog.Logger, stats *resetStats) (*h2Conn, error) {
	sc := newH2Conn(conn, raw, peer, o, log, stats)
	sc.client = true
	sc.w.lock()
	_, err := sc.w.bw.WriteString(http2.ClientPreface)
	if err == nil {
		err = sc.fr.WriteSettings(
			http2.Setting{ID: http2.SettingEnablePush, Val: 0},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(o.StreamWindow)},
			http2.Setting{ID: http2.SettingMaxFrameSize, Val: o.MaxFrameSize},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: o.MaxHeaderListSize})
	}
	if err == nil {
		err = sc.raiseConnWindow()
	}
	if err != nil {
		sc.w.fail(err)
	}
	sc.w.unlockFlushed()
	if err := sc.w.err; err != nil {
		close(sc.readDone) // no read loop to wait for
		return nil, err
	}
	go sc.serve()
	return sc, nil
}

// usable reports whether sc takes new streams, and how many the server
// allows at once.
func (sc *h2Conn) usable() (bool, int) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.closeErr == nil && !sc.goingAway, int(sc.peerStreams)
}

// openStream sends a CONNECT for authority with header (checked by
// checkRequestHeader) and returns the stream, its response still to come
// (awaitResponse). Stream IDs must reach the server in order, so the ID is
// taken with the writer held.
func (sc *h2Conn) openStream(authority string, header http.Header) (*stream, error) {
	sc.w.lock()
	defer sc.w.unlock()
	sc.mu.Lock()
	if sc.maxStreamID >= maxClientStreamID-2 && !sc.goingAway {
		// Stream IDs used up: the pool dials a fresh connection, this one
		// closes when its last stream ends.
		sc.goingAway = true
		sc.maybeIdleLocked()
	}
	if err := sc.closeErr; err != nil {
		sc.mu.Unlock()
		return nil, err // why: a server rejecting our certificate, say
	}
	if sc.goingAway {
		sc.mu.Unlock()
		return nil, errConnUnusable
	}
	id := (sc.maxStreamID + 1) | 1
	sc.maxStreamID = id
	st := sc.newStreamLocked(id, false)
	frame, table := sc.peerFrame, sc.tableSize
	sc.tableSize = -1
	sc.mu.Unlock()
	if err := sc.w.writeRequest(id, authority, header, frame, table); err != nil {
		return nil, err // the connection is broken; close fails st
	}
	return st, nil
}

// awaitResponse waits for st's response HEADERS; when ctx ends first the
// stream is reset.
func (st *stream) awaitResponse(ctx context.Context) error {
	sc := st.sc
	stop := context.AfterFunc(ctx, st.wakeReaders)
	defer stop()
	sc.mu.Lock()
	for !st.responded && st.err == nil && ctx.Err() == nil {
		st.cond.Wait()
	}
	err := st.err
	if st.responded {
		err = nil
	} else if err == nil {
		err = ctx.Err()
	}
	sc.mu.Unlock()
	if err != nil {
		st.close(http2.ErrCodeCancel, err)
	}
	return err
}

// readRefusal reads the reason a refusing server sent (the body of its
// non-200 answer, at most 512 bytes, until ctx's deadline) and closes st.
func (st *stream) readRefusal(ctx context.Context) string {
	defer st.close(http2.ErrCodeCancel, net.ErrClosed)
	if d, ok := ctx.Deadline(); ok {
		st.setReadDeadline(d)
	}
	reason := make([]byte, 512)
	n := 0
	for n < len(reason) {
		k, err := st.read(reason[n:])
		n += k
		if err != nil {
			break
		}
	}
	return string(trimNL(reason[:n]))
}

// onResponse takes a HEADERS frame from the server: a stream's response,
// or its trailers.
func (sc *h2Conn) onResponse(f *http2.MetaHeadersFrame) error {
	sc.mu.Lock()
	st := sc.streams[f.StreamID]
	if st == nil {
		idle := sc.idleStream(f.StreamID)
		sc.mu.Unlock()
		if idle {
			return http2.ConnectionError(http2.ErrCodeProtocol) // a server cannot open streams
		}
		return sc.spendCheap() // a stream we reset meanwhile
	}
	if st.responded {
		sc.mu.Unlock()
		return sc.onTrailers(st, f)
	}
	defer sc.mu.Unlock()
	status, err := strconv.Atoi(f.PseudoValue("status"))
	switch {
	case f.Truncated || err != nil || status < 100 || status > 999:
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
	case status < 200:
		if f.StreamEnded() {
			return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
		}
		return sc.spendCheapLocked() // informational: the response is still to come
	}
	st.responded, st.status = true, status
	if f.StreamEnded() {
		st.recvEnded = true
	}
	st.cond.Broadcast()
	return nil
}

// onGoAway: the server takes no new streams, and those above the last one
// it names were never processed (a Dial waiting on one retries).
func (sc *h2Conn) onGoAway(f *http2.GoAwayFrame) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.goingAway = true
	for id, st := range sc.streams {
		if id > f.LastStreamID {
			sc.closeStreamLocked(st, errGoneAway)
		}
	}
	if f.ErrCode != http2.ErrCodeNo {
		sc.log.Debug("hbone tunnel server sent GOAWAY", "remote", sc.raw.RemoteAddr(), "peer", sc.peer, "code", f.ErrCode)
	}
	sc.maybeIdleLocked()
}

// checkRequestHeader refuses what cannot go on a CONNECT: a field name or
// value that is not valid HTTP (a value with a line break, say).
func checkRequestHeader(h http.Header) error {
	for name, values := range h {
		if !httpguts.ValidHeaderFieldName(name) {
			return fmt.Errorf("hbone: invalid request header name %q", name)
		}
		for _, v := range values {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("hbone: invalid value for request header %s", name)
			}
		}
	}
	return nil
}

// requestHeaderDropped: fields a CONNECT does not carry, the Host (the
// :authority says it) and HTTP/1 connection-specific fields, malformed in
// HTTP/2 (RFC 9113 8.2.2).
func requestHeaderDropped(lower string) bool {
	return lower == "host" || connectionHeaders[lower] || lower == "te"
}
