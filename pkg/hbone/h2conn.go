package hbone

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Conn is one HBONE tunnel connection, either end: HTTP/2 carrying
// CONNECT streams only, built on x/net/http2's Framer and hpack. It exists,
// instead of x/net/http2's Server and Transport, so that each direction of
// a stream ends on its own (END_STREAM from one side does not end the
// other's direction) and so that a stream holds no memory beyond what it
// received and not yet read: the server side (newServerConn) runs a handler
// per stream the client opens, the client side (newClientConn) opens
// streams for Dialer.
//
// One goroutine (serve) reads and processes frames; writes go through w,
// from the goroutine that has something to send (a stream's Write, its
// handler's answer) or, for control frames, the writer goroutine. Lock
// order: w.mu, then mu, then w.qmu.
type h2Conn struct {
	srv    *Server // server side only
	client bool
	conn   net.Conn // frames are read from and written to it (TLS)
	raw    net.Conn // the TCP connection, for its addresses
	peer   spiffeid.ID
	opts   Options
	log    *slog.Logger
	stats  *resetStats
	br     *bufio.Reader
	fr     *http2.Framer
	w      connWriter
	ctx    context.Context
	stop   context.CancelFunc
	// readDone is closed when the read loop (serve) has ended, or when it
	// will never run (a client whose preface could not be sent).
	readDone chan struct{}

	mu          sync.Mutex
	connCond    sync.Cond // writers waiting for connection send window
	streams     map[uint32]*stream
	handlers    int      // handler goroutines running (server)
	waiting     []func() // handlers waiting for one of those to end (server)
	maxStreamID uint32   // highest stream the client opened
	sendWindow  int64    // connection-level bytes we may still send
	recvWindow  int32    // connection-level bytes the peer may still send
	recvUnacked int32    // read by applications, not yet returned to the peer
	peerWindow  int32    // peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerFrame   uint32   // peer's SETTINGS_MAX_FRAME_SIZE
	peerStreams uint32   // peer's SETTINGS_MAX_CONCURRENT_STREAMS (client: the streams we may open)
	tableSize   int64    // peer's new SETTINGS_HEADER_TABLE_SIZE, -1 if unchanged
	goingAway   bool
	closeErr    error // why the connection ended (what its streams failed with); nil while open
	cheap       budget
	resets      budget
	windowUps   budget
	idle        *time.Timer // GOAWAY after IdleTimeout without streams
	readIdle    *time.Timer // PING after PingInterval without frames
	pingWait    *time.Timer // close after PingTimeout without the PING's ack
}

// pingData marks our health-check PINGs.
var pingData = [8]byte{'h', 'b', 'o', 'n', 'e', 'p', 'n', 'g'}

var (
	errConnClosed    = errors.New("hbone: tunnel connection closed")
	errPingTimeout   = errors.New("hbone: tunnel peer did not answer PING")
	errHandlerDone   = errors.New("hbone: stream handler returned")
	errWriteAfterEnd = errors.New("hbone: write after CloseWrite")
)

// streamResetError is how a stream the peer reset (RST_STREAM) ends for
// the application: Pipe and the proxies treat any error other than EOF as
// a reset and pass it on as a TCP RST.
type streamResetError struct{ Code http2.ErrCode }

func (e streamResetError) Error() string {
	return fmt.Sprintf("hbone: stream reset by tunnel peer (%v)", e.Code)
}

func newServerConn(s *Server, conn, raw net.Conn, peer spiffeid.ID) *h2Conn {
	sc := newH2Conn(conn, raw, peer, s.Options.withDefaults(), s.Logger, &s.stats)
	sc.srv = s
	return sc
}

// defaultPeerStreams is what a client assumes of the server's
// SETTINGS_MAX_CONCURRENT_STREAMS until they arrive (x/net/http2's value).
const defaultPeerStreams = 100

func newH2Conn(conn, raw net.Conn, peer spiffeid.ID, o Options, log *slog.Logger, stats *resetStats) *h2Conn {
	sc := &h2Conn{conn: conn, raw: raw, peer: peer, opts: o, log: log, stats: stats,
		streams: map[uint32]*stream{}, sendWindow: 65535, recvWindow: o.ConnWindow,
		peerWindow: 65535, peerFrame: 16 << 10, peerStreams: defaultPeerStreams, tableSize: -1,
		cheap: newBudget(cheapBurst, cheapRate), resets: newBudget(resetBurst, resetRate),
		windowUps: newBudget(windowBurst, windowRate)}
	sc.connCond.L = &sc.mu
	sc.ctx, sc.stop = context.WithCancel(context.Background())
	sc.br = bufio.NewReaderSize(conn, 64<<10)
	bw := bufio.NewWriterSize(conn, 32<<10)
	sc.fr = http2.NewFramer(bw, sc.br)
	sc.fr.SetMaxReadFrameSize(o.MaxFrameSize)
	sc.fr.MaxHeaderListSize = o.MaxHeaderListSize
	sc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	sc.fr.SetReuseFrames()
	sc.readDone = make(chan struct{})
	sc.w.init(bw, sc.fr, func(err error) { go sc.writeFailed(err) })
	sc.w.stats = stats
	return sc
}

// serve runs the connection until it ends.
func (sc *h2Conn) serve() {
	defer close(sc.readDone)
	err := sc.handshake()
	if err != nil {
		sc.log.Debug("hbone HTTP/2 handshake failed", "remote", sc.raw.RemoteAddr(), "err", err)
		sc.abandon(err)
		sc.close(err)
		return
	}
	sc.startTimers()
	go sc.w.run(sc.ctx.Done())
	for {
		f, err := sc.fr.ReadFrame()
		if err == nil {
			sc.readIdle.Reset(sc.opts.PingInterval)
			err = sc.process(f)
		}
		if err == nil && sc.w.overflowed() {
			err = http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
		}
		if err != nil && !sc.recover(err) {
			sc.close(err)
			return
		}
		sc.w.kick() // whatever the frame made us queue
	}
}

// connLost is how the streams of a connection that ended with err fail:
// errConnClosed with the cause, never io.EOF, which would read as a clean
// half-close.
func connLost(err error) error {
	switch {
	case err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
		return errConnClosed
	case errors.Is(err, errConnClosed):
		return err
	}
	return fmt.Errorf("%w: %v", errConnClosed, err)
}

// handshake reads the client preface and its SETTINGS and sends ours, with
// the connection-level window raised to Options.ConnWindow. A client sent
// its side when it started (newClientConn) and reads the server's SETTINGS.
func (sc *h2Conn) handshake() error {
	sc.conn.SetReadDeadline(time.Now().Add(prefaceTimeout))
	if sc.client {
		return sc.readPeerSettings()
	}
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(sc.br, preface); err != nil {
		return fmt.Errorf("reading client preface: %w", err)
	}
	if !bytes.Equal(preface, []byte(http2.ClientPreface)) {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	sc.w.lock()
	err := sc.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: sc.opts.MaxFrameSize},
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: sc.opts.MaxConcurrentStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(sc.opts.StreamWindow)},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: sc.opts.MaxHeaderListSize})
	if err == nil {
		err = sc.raiseConnWindow()
	}
	sc.w.unlockFlushed()
	if err != nil {
		return err
	}
	return sc.readPeerSettings()
}

// raiseConnWindow announces Options.ConnWindow (the protocol starts every
// connection at 65535); w is held.
func (sc *h2Conn) raiseConnWindow() error {
	var err error
	if sc.opts.ConnWindow > 65535 {
		err = sc.fr.WriteWindowUpdate(0, uint32(sc.opts.ConnWindow-65535))
	}
	if err != nil {
		sc.w.fail(err)
	}
	return err
}

// readPeerSettings reads the peer's first frame, which must be SETTINGS
// (RFC 9113 3.4), and lifts the handshake's read deadline.
func (sc *h2Conn) readPeerSettings() error {
	f, err := sc.fr.ReadFrame()
	if err != nil {
		return err
	}
	if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if err := sc.process(f); err != nil {
		return err
	}
	return sc.conn.SetReadDeadline(time.Time{})
}

func (sc *h2Conn) startTimers() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.idle = time.AfterFunc(sc.opts.IdleTimeout, sc.onIdle)
	sc.readIdle = time.AfterFunc(sc.opts.PingInterval, sc.onReadIdle)
}

// recover handles an error from reading or processing a frame and reports
// whether the connection goes on: a stream error resets that stream, a
// connection error ends the connection with GOAWAY, anything else (I/O)
// just ends it.
func (sc *h2Conn) recover(err error) bool {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		sc.resetStream(se.StreamID, se.Code)
		if err := sc.spendCheap(); err != nil {
			sc.abandon(err)
			return false
		}
		return true
	case errors.Is(err, http2.ErrFrameTooLarge):
		sc.abandon(http2.ConnectionError(http2.ErrCodeFrameSize))
	case errors.As(err, &ce):
		sc.abandon(ce)
	default:
		if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
			sc.log.Debug("hbone tunnel connection read failed", "remote", sc.raw.RemoteAddr(), "err", err)
		}
	}
	return false
}

// abandon ends the connection after a protocol error: GOAWAY with the
// error's code (flushed within goAwayWriteTimeout, a stuck writer gives up
// meanwhile), then close.
func (sc *h2Conn) abandon(err error) {
	var ce http2.ConnectionError
	if !errors.As(err, &ce) {
		return
	}
	sc.log.Debug("hbone tunnel protocol error", "remote", sc.raw.RemoteAddr(), "peer", sc.peer, "code", http2.ErrCode(ce))
	sc.mu.Lock()
	sc.goingAway = true
	last := sc.lastPeerStreamLocked()
	sc.mu.Unlock()
	sc.conn.SetWriteDeadline(time.Now().Add(goAwayWriteTimeout))
	sc.w.enqueue(ctlFrame{kind: http2.FrameGoAway, val: last, code: http2.ErrCode(ce)})
	sc.w.lock()
	sc.w.unlockFlushed()
	sc.close(err)
}

// peerReasonWait bounds how long a connection whose write failed waits for
// its read loop to find out why.
const peerReasonWait = time.Second

// writeFailed closes the connection after a write failed with err. A peer
// that closed first usually said why before it did (a TLS alert: our
// certificate was refused) or sent what the read loop refuses (a protocol
// error), and what it sent is still ours to read: the read loop closes
// with that reason, which is what the streams should fail with, not
// "broken pipe". The write error is the reason only when the read loop has
// not ended within peerReasonWait (a write deadline passed while the peer
// stays connected, say).
func (sc *h2Conn) writeFailed(err error) {
	t := time.NewTimer(peerReasonWait)
	defer t.Stop()
	select {
	case <-sc.readDone:
	case <-t.C:
	}
	sc.close(err)
}

// close ends the connection: every stream still open fails with
// connLost(err), waiting readers and writers wake up.
func (sc *h2Conn) close(err error) {
	err = connLost(err)
	sc.mu.Lock()
	if sc.closeErr != nil {
		sc.mu.Unlock()
		return
	}
	sc.closeErr = err
	sc.goingAway = true
	for _, st := range sc.streams {
		sc.closeStreamLocked(st, err)
	}
	for _, t := range []*time.Timer{sc.idle, sc.readIdle, sc.pingWait} {
		if t != nil {
			t.Stop()
		}
	}
	sc.connCond.Broadcast()
	sc.mu.Unlock()
	sc.stop()
	sc.conn.Close()
}

// lastPeerStreamLocked is the last stream ID a GOAWAY names: the highest
// the peer opened; a server never opens any.
func (sc *h2Conn) lastPeerStreamLocked() uint32 {
	if sc.client {
		return 0
	}
	return sc.maxStreamID
}

// goAway starts a graceful shutdown: GOAWAY(NO_ERROR) naming the last
// stream we took, streams in flight run to their end, the connection closes
// when none is left.
func (sc *h2Conn) goAway() {
	sc.mu.Lock()
	if sc.goingAway {
		sc.mu.Unlock()
		return
	}
	sc.goingAway = true
	sc.w.enqueue(ctlFrame{kind: http2.FrameGoAway, val: sc.lastPeerStreamLocked(), code: http2.ErrCodeNo})
	done := sc.liveLocked() == 0
	sc.mu.Unlock()
	if done {
		sc.closeGracefully()
	} else {
		sc.w.kick()
	}
}

// closeGracefully flushes what is queued (the GOAWAY) and closes.
func (sc *h2Conn) closeGracefully() {
	go func() {
		sc.conn.SetWriteDeadline(time.Now().Add(goAwayWriteTimeout))
		sc.w.lock()
		sc.w.unlockFlushed()
		sc.close(nil)
	}()
}

func (sc *h2Conn) onIdle() {
	sc.mu.Lock()
	idle := sc.liveLocked() == 0
	sc.mu.Unlock()
	if idle {
		sc.goAway()
	}
}

// onReadIdle sends a health-check PING after PingInterval of silence and
// closes the connection if its ack does not come within PingTimeout.
func (sc *h2Conn) onReadIdle() {
	sc.mu.Lock()
	if sc.closeErr != nil || sc.pingWait != nil {
		sc.mu.Unlock()
		return
	}
	sc.pingWait = time.AfterFunc(sc.opts.PingTimeout, func() { sc.close(errPingTimeout) })
	sc.mu.Unlock()
	sc.w.enqueue(ctlFrame{kind: http2.FramePing, ping: pingData})
	sc.w.kick()
}
