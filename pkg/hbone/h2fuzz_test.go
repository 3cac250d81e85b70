package hbone

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/weft-mesh/weft/internal/await"
)

// fuzzSeeds are frame sequences a client might send after its preface.
func fuzzSeeds() [][]byte {
	var seeds [][]byte
	var buf, hbuf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	enc := hpack.NewEncoder(&hbuf)
	headers := func(id uint32, kv ...string) {
		hbuf.Reset()
		for i := 0; i+1 < len(kv); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true})
	}
	flush := func() { seeds = append(seeds, bytes.Clone(buf.Bytes())); buf.Reset() }

	headers(1, ":method", "CONNECT", ":authority", "10.0.0.1:80", "forwarded", "for=10.0.0.2")
	fr.WriteData(1, false, []byte("hello"))
	fr.WriteWindowUpdate(1, 1000)
	fr.WriteData(1, true, nil)
	flush()
	headers(1, ":method", "GET", ":scheme", "https", ":path", "/", ":authority", "x")
	headers(3, ":method", "CONNECT", ":authority", "10.0.0.1:80")
	fr.WriteRSTStream(3, http2.ErrCodeCancel)
	fr.WritePing(false, [8]byte{1})
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
	fr.WritePriority(5, http2.PriorityParam{StreamDep: 1})
	flush()
	hbuf.Reset()
	enc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hbuf.Bytes()})
	fr.WriteContinuation(1, true, []byte{0x41, 0x0b})
	fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	flush()
	return seeds
}

// FuzzServerConn feeds arbitrary bytes, after a valid preface and
// SETTINGS, to a server connection over net.Pipe and checks that it
// neither panics nor holds more than its limits allow: received data within
// the connection window, handlers within MaxConcurrentStreams (and the
// queue behind them), control frames within their queue. synctest fails
// the run if any goroutine is left behind once the client hangs up.
func FuzzServerConn(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	o := Options{MaxConcurrentStreams: 4, StreamWindow: 16 << 10, ConnWindow: 64 << 10, MaxHeaderListSize: 4 << 10}
	f.Fuzz(func(t *testing.T, in []byte) {
		synctest.Test(t, func(t *testing.T) {
			var sc *h2Conn
			srv := &Server{Options: o, testConn: func(c *h2Conn) { sc = c }, Handler: func(ctx context.Context, req *Request) error {
				st, err := req.Accept()
				if err != nil {
					return err
				}
				_, _, err = Pipe(st, sinkStream{})
				return err
			}}
			a, b := net.Pipe()
			go srv.servePlain(b)
			go io.Copy(io.Discard, a)
			var pre bytes.Buffer
			pre.WriteString(http2.ClientPreface)
			http2.NewFramer(&pre, nil).WriteSettings()
			a.Write(append(pre.Bytes(), in...))
			synctest.Wait()
			if sc != nil {
				checkBounds(t, sc, o.withDefaults())
			}
			a.Close()
		})
	})
}

func checkBounds(t *testing.T, sc *h2Conn, o Options) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	held := 0
	for _, st := range sc.streams {
		held += st.buf.len()
	}
	if held > int(o.ConnWindow) {
		t.Errorf("streams hold %d received bytes, more than the %d connection window", held, o.ConnWindow)
	}
	if sc.handlers > int(o.MaxConcurrentStreams) || len(sc.waiting) > 4*int(o.MaxConcurrentStreams) {
		t.Errorf("%d handlers running and %d waiting, limit %d", sc.handlers, len(sc.waiting), o.MaxConcurrentStreams)
	}
	if n := len(sc.streams); n > int(o.MaxConcurrentStreams) {
		t.Errorf("%d open streams, limit %d", n, o.MaxConcurrentStreams)
	}
	sc.w.qmu.Lock()
	if n := len(sc.w.queue); n > maxQueuedControl+1 {
		t.Errorf("%d control frames queued", n)
	}
	sc.w.qmu.Unlock()
}

// sinkStream is a Stream like a local server that half-closes at once and
// reads whatever it is sent: a server-first half-close for every stream.
type sinkStream struct{}

func (sinkStream) Write(p []byte) (int, error) { return len(p), nil }
func (sinkStream) Read([]byte) (int, error)    { return 0, io.EOF }
func (sinkStream) CloseWrite() error           { return nil }
func (sinkStream) Close() error                { return nil }

// clientFuzzSeeds are frame sequences a server might send to a client
// that opened streams 1 and 3.
func clientFuzzSeeds() [][]byte {
	var seeds [][]byte
	var buf, hbuf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	enc := hpack.NewEncoder(&hbuf)
	headers := func(id uint32, end bool, kv ...string) {
		hbuf.Reset()
		for i := 0; i+1 < len(kv); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndStream: end, EndHeaders: true})
	}
	flush := func() { seeds = append(seeds, bytes.Clone(buf.Bytes())); buf.Reset() }

	headers(1, false, ":status", "200")
	fr.WriteData(1, false, []byte("hello"))
	fr.WriteWindowUpdate(1, 1000)
	fr.WriteData(1, true, nil)
	headers(3, false, ":status", "403", "content-length", "7")
	fr.WriteData(3, true, []byte("denied\n"))
	fr.WriteRSTStream(3, http2.ErrCodeNo)
	flush()
	headers(1, false, ":status", "100")
	fr.WriteData(3, false, []byte("before headers"))
	headers(2, false, ":status", "200")
	fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, EndHeaders: true})
	flush()
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1}, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
	fr.WritePing(false, [8]byte{1})
	fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	headers(1, true, ":status", "200")
	flush()
	return seeds
}

// FuzzClientConn feeds arbitrary bytes, after the server's SETTINGS, to a
// client connection over net.Pipe while two streams await their answers
// and then write, half-close and read as Pipe would. The tunnel server is
// authenticated but not trusted with our memory: the client must neither
// panic nor hold more received data than its connection window or more
// control frames than their queue, and synctest fails the run if any
// goroutine is left behind once the server hangs up.
func FuzzClientConn(f *testing.F) {
	for _, s := range clientFuzzSeeds() {
		f.Add(s)
	}
	o := Options{StreamWindow: 16 << 10, ConnWindow: 64 << 10, MaxHeaderListSize: 4 << 10}.withDefaults()
	f.Fuzz(func(t *testing.T, in []byte) {
		synctest.Test(t, func(t *testing.T) {
			a, b := net.Pipe()
			go io.Copy(io.Discard, b)
			sc, err := newClientConn(a, a, serverID, o, slog.New(slog.DiscardHandler), &resetStats{})
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				st, err := sc.openStream("10.0.0.1:80", nil)
				if err != nil {
					t.Fatal(err)
				}
				go useStream(st)
			}
			var settings bytes.Buffer
			http2.NewFramer(&settings, nil).WriteSettings()
			b.Write(append(settings.Bytes(), in...))
			synctest.Wait()
			checkBounds(t, sc, o)
			b.Close()
		})
	})
}

// useStream is a Dial and a Pipe direction each way, on a stream opened.
func useStream(st *stream) {
	defer st.close(http2.ErrCodeCancel, net.ErrClosed)
	if st.awaitResponse(context.Background()) != nil || st.status != 200 {
		return
	}
	go func() {
		st.write([]byte("request"), false)
		st.write(nil, true)
	}()
	buf := make([]byte, 1024)
	for {
		if _, err := st.read(buf); err != nil {
			return
		}
	}
}

// TestOpenOnDeadConnectionSaysWhy: a stream opened on a connection that
// has just ended fails with why it ended (here: a server whose first frame
// is not SETTINGS), not only that the connection takes no streams: with
// TLS 1.3 a server rejecting our certificate is first seen this way.
func TestOpenOnDeadConnectionSaysWhy(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	go io.Copy(io.Discard, b)
	sc, err := newClientConn(a, a, serverID, Options{}.withDefaults(), slog.New(slog.DiscardHandler), &resetStats{})
	if err != nil {
		t.Fatal(err)
	}
	http2.NewFramer(b, nil).WritePing(false, [8]byte{})
	await.True(t, "the connection to end", func() bool {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		return sc.closeErr != nil
	})
	_, err = sc.openStream("10.0.0.1:80", nil)
	if !errors.Is(err, errConnClosed) || !strings.Contains(err.Error(), "PROTOCOL_ERROR") {
		t.Errorf("openStream on the dead connection: %v; want it closed by a PROTOCOL_ERROR", err)
	}
}

// failingWrites is a conn whose writes fail once broken is set.
type failingWrites struct {
	net.Conn
	broken atomic.Bool
}

var errWriteBroken = errors.New("test: write failed")

func (c *failingWrites) Write(p []byte) (int, error) {
	if c.broken.Load() {
		return 0, errWriteBroken
	}
	return c.Conn.Write(p)
}

// TestWriteFailureWaitsForPeersReason: a write that fails closes the
// connection with the reason the read loop finds when it finds one (the
// peer said why before it hung up: here a first frame that is not
// SETTINGS, a PROTOCOL_ERROR), and with the write's own error after
// peerReasonWait when the peer says nothing.
func TestWriteFailureWaitsForPeersReason(t *testing.T) {
	for _, peerSpeaks := range []bool{true, false} {
		synctest.Test(t, func(t *testing.T) {
			a, b := net.Pipe()
			defer b.Close()
			go io.Copy(io.Discard, b)
			conn := &failingWrites{Conn: a}
			sc, err := newClientConn(conn, conn, serverID, Options{}.withDefaults(), slog.New(slog.DiscardHandler), &resetStats{})
			if err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
			conn.broken.Store(true)
			start := time.Now()
			st, err := sc.openStream("10.0.0.1:80", nil) // its flush fails
			if err != nil {
				t.Fatal(err)
			}
			if peerSpeaks { // a first frame that is not SETTINGS
				http2.NewFramer(b, nil).WritePing(false, [8]byte{})
			}
			err = st.awaitResponse(context.Background())
			waited := time.Since(start)
			switch {
			case peerSpeaks && (!strings.Contains(err.Error(), "PROTOCOL_ERROR") || waited >= peerReasonWait):
				t.Errorf("peer said why: stream failed with %v after %v; want the PROTOCOL_ERROR at once", err, waited)
			case !peerSpeaks && (!errors.Is(err, errConnClosed) || !strings.Contains(err.Error(), errWriteBroken.Error()) || waited != peerReasonWait):
				t.Errorf("silent peer: stream failed with %v after %v; want the write's error after %v", err, waited, peerReasonWait)
			}
		})
	}
}
