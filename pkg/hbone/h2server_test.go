package hbone

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/net/http2/hpack"

	"golang.org/x/net/http2"
)

func dataBytes(fs []rawFrame, id uint32) int {
	n := 0
	for _, f := range fs {
		if f.typ == http2.FrameData && f.stream == id {
			n += len(f.data)
		}
	}
	return n
}

// A client that stops reading stops the server's writes at its stream
// window, and each WINDOW_UPDATE, or a larger SETTINGS_INITIAL_WINDOW_SIZE
// (which applies to open streams), lets exactly that much more through.
func TestFlowControlClientStopsReading(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		written := make(chan int, 1)
		srv := &Server{Handler: func(ctx context.Context, req *Request) error {
			st, err := req.Accept()
			if err != nil {
				return err
			}
			n, _ := st.Write(make([]byte, 1<<20)) // more than the client allows
			written <- n
			return nil
		}}
		const window = 64 << 10
		c := newRawClient(t, srv, http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
		defer c.close()
		c.write(c.fr.WriteWindowUpdate(0, 8<<20)) // the connection window is not the limit
		c.connect(1)
		got := 0
		step := func(name string, want int) {
			t.Helper()
			synctest.Wait()
			got += dataBytes(c.drain(), 1)
			if got != want {
				t.Fatalf("%s: the server sent %d bytes, want %d", name, got, want)
			}
			select {
			case n := <-written:
				t.Fatalf("%s: the server's Write returned (%d bytes) while the window was exhausted", name, n)
			default:
			}
		}
		step("initial window", window)
		c.write(c.fr.WriteWindowUpdate(1, 16<<10))
		step("after WINDOW_UPDATE(16 KiB)", window+16<<10)
		c.write(c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: window + 32<<10}))
		step("after INITIAL_WINDOW_SIZE +32 KiB", window+48<<10)
		c.write(c.fr.WriteWindowUpdate(1, 1<<20))
		synctest.Wait()
		if n := <-written; n != 1<<20 {
			t.Fatalf("Write returned after %d bytes, want all %d", n, 1<<20)
		}
	})
}

// A client that sends beyond the windows we advertised is stopped: beyond
// a stream's window, that stream is reset with FLOW_CONTROL_ERROR; beyond
// the connection's, the connection ends with GOAWAY(FLOW_CONTROL_ERROR).
func TestFlowControlClientExceedsWindow(t *testing.T) {
	const window = 64 << 10
	t.Run("stream", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			srv, _ := blockingServer(Options{StreamWindow: window, ConnWindow: 4 * window, MaxFrameSize: window}, true)
			c := newRawClient(t, srv)
			defer c.close()
			c.connect(1)
			c.write(c.fr.WriteData(1, false, make([]byte, window)))
			c.write(c.fr.WriteData(1, false, []byte{0}))
			if f := c.expect(http2.FrameRSTStream, 1); f.code != http2.ErrCodeFlowControl {
				t.Fatalf("RST_STREAM %v, want FLOW_CONTROL_ERROR", f.code)
			}
		})
	})
	t.Run("connection", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			srv, _ := blockingServer(Options{StreamWindow: window, ConnWindow: window, MaxFrameSize: window}, true)
			c := newRawClient(t, srv)
			defer c.close()
			c.connect(1)
			c.connect(3)
			c.write(c.fr.WriteData(1, false, make([]byte, window)))
			c.write(c.fr.WriteData(3, false, []byte{0}))
			if f := c.expect(http2.FrameGoAway, 0); f.code != http2.ErrCodeFlowControl {
				t.Fatalf("GOAWAY %v, want FLOW_CONTROL_ERROR", f.code)
			}
		})
	})
}

// The server reads everything a client sends within the window once the
// application reads, returning window as it goes: 8 stream windows' worth
// arrive intact.
func TestFlowControlWindowReturned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const window = 64 << 10
		got := make(chan []byte, 1)
		srv := &Server{Options: Options{StreamWindow: window, ConnWindow: window}, Handler: func(ctx context.Context, req *Request) error {
			st, err := req.Accept()
			if err != nil {
				return err
			}
			var buf bytes.Buffer
			_, err = buf.ReadFrom(st)
			got <- buf.Bytes()
			return err
		}}
		c := newRawClient(t, srv)
		defer c.close()
		c.connect(1)
		payload := bytes.Repeat([]byte("0123456789abcdef"), 8*window/16)
		sendWindow := window
		for p := payload; len(p) > 0; {
			for sendWindow == 0 {
				f, ok := c.next(func(f rawFrame) bool { return f.typ == http2.FrameWindowUpdate && f.stream == 1 })
				if !ok {
					t.Fatal("connection closed while waiting for window")
				}
				_ = f
				sendWindow = window / 2 // the server returns half a window at a time
			}
			n := min(len(p), sendWindow, 16<<10)
			c.write(c.fr.WriteData(1, false, p[:n]))
			p, sendWindow = p[n:], sendWindow-n
		}
		c.write(c.fr.WriteData(1, true, nil))
		if b := <-got; !bytes.Equal(b, payload) {
			t.Fatalf("server read %d bytes, want the %d sent", len(b), len(payload))
		}
	})
}

// Streams the client opens and at once resets (CVE-2023-44487) end the
// connection with GOAWAY(ENHANCE_YOUR_CALM) once over budget.
func TestRapidResetIsCutOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, _ := blockingServer(Options{}, false)
		c := newRawClient(t, srv)
		defer c.close()
		go func() {
			for id := uint32(1); id < 2*resetBurst*2; id += 2 {
				c.hbuf.Reset()
				c.enc.WriteField(hpackField(":method", "CONNECT"))
				c.enc.WriteField(hpackField(":authority", "10.0.0.1:80"))
				if c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true}) != nil ||
					c.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
					return
				}
			}
		}()
		if f := c.expect(http2.FrameGoAway, 0); f.code != http2.ErrCodeEnhanceYourCalm {
			t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", f.code)
		}
		if n := srv.stats.resetsReceived.Load(); n < resetBurst || n > resetBurst+1 {
			t.Errorf("server took %d resets before GOAWAY, want the budget of %d", n, resetBurst)
		}
	})
}

// Streams beyond MaxConcurrentStreams are refused (REFUSED_STREAM, which
// clients retry) and a closed stream frees its slot.
func TestTooManyConcurrentStreams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, _ := blockingServer(Options{MaxConcurrentStreams: 2}, true)
		c := newRawClient(t, srv)
		defer c.close()
		for _, id := range []uint32{1, 3} {
			c.connect(id)
			if f := c.expect(http2.FrameHeaders, id); f.status != "200" {
				t.Fatalf("stream %d: status %q, want 200", id, f.status)
			}
		}
		c.connect(5)
		if f := c.expect(http2.FrameRSTStream, 5); f.code != http2.ErrCodeRefusedStream {
			t.Fatalf("third stream: RST_STREAM %v, want REFUSED_STREAM", f.code)
		}
		c.write(c.fr.WriteRSTStream(1, http2.ErrCodeCancel))
		c.connect(7)
		if f := c.expect(http2.FrameHeaders, 7); f.status != "200" {
			t.Fatalf("stream after a reset: status %q, want 200", f.status)
		}
	})
}

func hpackField(name, value string) hpack.HeaderField {
	return hpack.HeaderField{Name: name, Value: value}
}

// Requests that are not a plain CONNECT to host:port: well-formed ones get
// the status the server always gave, malformed ones are reset with
// PROTOCOL_ERROR. Either way the connection goes on serving.
func TestRequestValidation(t *testing.T) {
	// 20 fields of 4 KiB: over the 64 KiB list, each under the string limit.
	big := []string{":method", "CONNECT", ":authority", "10.0.0.1:80"}
	for i := range 20 {
		big = append(big, fmt.Sprintf("x-big-%d", i), strings.Repeat("x", 4<<10))
	}
	cases := []struct {
		name   string
		kv     []string
		status string        // the answer, or
		code   http2.ErrCode // the reset
	}{
		{"GET", []string{":method", "GET", ":scheme", "https", ":path", "/", ":authority", "10.0.0.1:80"}, "405", 0},
		{"authority without port", []string{":method", "CONNECT", ":authority", "10.0.0.1"}, "400", 0},
		{"header list too large", big, "431", 0},
		{"CONNECT with :path", []string{":method", "CONNECT", ":authority", "10.0.0.1:80", ":path", "/"}, "", http2.ErrCodeProtocol},
		{"CONNECT with :protocol", []string{":method", "CONNECT", ":authority", "10.0.0.1:80", ":protocol", "websocket"}, "", http2.ErrCodeProtocol},
		{"CONNECT without :authority", []string{":method", "CONNECT"}, "", http2.ErrCodeProtocol},
		{"no :method", []string{":authority", "10.0.0.1:80"}, "", http2.ErrCodeProtocol},
		{"unknown pseudo-header", []string{":method", "CONNECT", ":authority", "10.0.0.1:80", ":foo", "bar"}, "", http2.ErrCodeProtocol},
		{"duplicate :authority", []string{":method", "CONNECT", ":authority", "10.0.0.1:80", ":authority", "10.0.0.2:80"}, "", http2.ErrCodeProtocol},
		{"pseudo after regular", []string{":method", "CONNECT", "x-a", "b", ":authority", "10.0.0.1:80"}, "", http2.ErrCodeProtocol},
		{"upper-case name", []string{":method", "CONNECT", ":authority", "10.0.0.1:80", "X-Upper", "v"}, "", http2.ErrCodeProtocol},
		{"connection header", []string{":method", "CONNECT", ":authority", "10.0.0.1:80", "connection", "close"}, "", http2.ErrCodeProtocol},
		{"response pseudo-header", []string{":status", "200"}, "", http2.ErrCodeProtocol},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, _ := blockingServer(oneFrameHeaders, true)
				c := newRawClient(t, srv)
				defer c.close()
				c.headers(1, false, tc.kv...)
				f, ok := c.next(func(f rawFrame) bool {
					return f.stream == 1 && (f.typ == http2.FrameHeaders || f.typ == http2.FrameRSTStream)
				})
				switch {
				case !ok:
					t.Fatal("connection closed")
				case tc.status != "" && f.status != tc.status:
					t.Fatalf("got %v status %q code %v, want status %s", f.typ, f.status, f.code, tc.status)
				case tc.status == "" && (f.typ != http2.FrameRSTStream || f.code != tc.code):
					t.Fatalf("got %v status %q code %v, want RST_STREAM %v", f.typ, f.status, f.code, tc.code)
				}
				if tc.status == "405" && !hasField(f, "allow", http.MethodConnect) {
					t.Errorf("405 without Allow: CONNECT: %v", f.fields)
				}
				c.connect(3)
				if f := c.expect(http2.FrameHeaders, 3); f.status != "200" {
					t.Fatalf("next CONNECT: status %q, want 200", f.status)
				}
			})
		})
	}
}

func hasField(f rawFrame, name, value string) bool {
	for _, hf := range f.fields {
		if hf.Name == name && hf.Value == value {
			return true
		}
	}
	return false
}

// Frames that abuse the connection end it with GOAWAY and the right code.
func TestConnectionAbuse(t *testing.T) {
	block := make([]byte, 16<<10)
	cases := []struct {
		name string
		send func(c *rawClient) error // called until it fails
		code http2.ErrCode
	}{
		{"PING flood", func(c *rawClient) error { return c.fr.WritePing(false, [8]byte{}) }, http2.ErrCodeEnhanceYourCalm},
		{"SETTINGS flood", func(c *rawClient) error { return c.fr.WriteSettings() }, http2.ErrCodeEnhanceYourCalm},
		{"PRIORITY flood", func(c *rawClient) error {
			return c.fr.WritePriority(1, http2.PriorityParam{Weight: 1})
		}, http2.ErrCodeEnhanceYourCalm},
		{"empty DATA flood", func(c *rawClient) error { return c.fr.WriteData(1, false, nil) }, http2.ErrCodeEnhanceYourCalm},
		{"WINDOW_UPDATE flood", func(c *rawClient) error { return c.fr.WriteWindowUpdate(0, 1) }, http2.ErrCodeEnhanceYourCalm},
		{"unknown frame flood", func(c *rawClient) error { return c.fr.WriteRawFrame(0xfa, 0, 0, nil) }, http2.ErrCodeEnhanceYourCalm},
		{"PUSH_PROMISE", func(c *rawClient) error {
			return c.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: []byte{0x82}, EndHeaders: true})
		}, http2.ErrCodeProtocol},
		{"CONTINUATION flood", func(c *rawClient) error {
			return c.fr.WriteContinuation(1, false, block)
		}, http2.ErrCodeProtocol},
		{"DATA on an idle stream", func(c *rawClient) error { return c.fr.WriteData(99, false, []byte("x")) }, http2.ErrCodeProtocol},
		{"stream ID going down", func(c *rawClient) error {
			return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: []byte{0x82}, EndHeaders: true})
		}, http2.ErrCodeProtocol},
		{"header value over the list size", func(c *rawClient) error {
			c.hbuf.Reset()
			c.enc.WriteField(hpack.HeaderField{Name: "x-big", Value: strings.Repeat("x", DefaultMaxHeaderListSize+1)})
			return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 0x7ffd, BlockFragment: c.hbuf.Bytes(), EndHeaders: true})
		}, http2.ErrCodeCompression},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, _ := blockingServer(oneFrameHeaders, true)
				c := newRawClient(t, srv)
				defer c.close()
				c.connect(1)
				switch tc.name {
				case "CONTINUATION flood":
					c.write(c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block}))
				case "stream ID going down":
					c.connect(0x7fff)
				}
				go func() {
					for tc.send(c) == nil {
					}
				}()
				if f := c.expect(http2.FrameGoAway, 0); f.code != tc.code {
					t.Fatalf("GOAWAY %v, want %v", f.code, tc.code)
				}
				if _, ok := c.next(func(rawFrame) bool { return false }); ok {
					t.Fatal("connection still open after GOAWAY")
				}
			})
		})
	}
}

// PING and SETTINGS are answered; a connection without streams closes
// with GOAWAY(NO_ERROR) after IdleTimeout; a peer that stops answering our
// PINGs is dropped after PingInterval + PingTimeout.
func TestConnectionLifecycle(t *testing.T) {
	t.Run("acks", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			srv, _ := blockingServer(Options{}, true)
			c := newRawClient(t, srv)
			defer c.close()
			if f, _ := c.next(func(f rawFrame) bool { return f.typ == http2.FrameSettings && f.ack }); !f.ack {
				t.Fatal("no SETTINGS ack")
			}
			c.write(c.fr.WritePing(false, [8]byte{1, 2, 3}))
			if f, _ := c.next(func(f rawFrame) bool { return f.typ == http2.FramePing && f.ack }); !f.ack {
				t.Fatal("no PING ack")
			}
		})
	})
	t.Run("idle", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			srv, _ := blockingServer(Options{IdleTimeout: time.Minute, PingInterval: time.Hour}, true)
			c := newRawClient(t, srv)
			defer c.close()
			start := time.Now()
			if f := c.expect(http2.FrameGoAway, 0); f.code != http2.ErrCodeNo {
				t.Fatalf("GOAWAY %v, want NO_ERROR", f.code)
			}
			if d := time.Since(start); d != time.Minute {
				t.Errorf("GOAWAY after %v, want the idle timeout (1m)", d)
			}
			if _, ok := c.next(func(rawFrame) bool { return false }); ok {
				t.Fatal("connection still open")
			}
		})
	})
	t.Run("ping timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			srv, _ := blockingServer(Options{PingInterval: 10 * time.Second, PingTimeout: 5 * time.Second}, true)
			c := newRawClient(t, srv)
			defer c.close()
			start := time.Now()
			if f, _ := c.next(func(f rawFrame) bool { return f.typ == http2.FramePing }); f.ack {
				t.Fatal("want a PING from the server")
			}
			c.next(func(rawFrame) bool { return false })
			if d := time.Since(start); d != 15*time.Second {
				t.Errorf("closed after %v, want PingInterval+PingTimeout (15s)", d)
			}
		})
	})
}

// oneFrameHeaders lets a raw client send a header block larger than
// DefaultMaxHeaderListSize in a single frame, so the header limits, not
// the frame size, are what the tests meet.
var oneFrameHeaders = Options{MaxFrameSize: 1 << 20}

// TestFrameLargerThanAdvertised: a peer that sends a frame beyond the
// SETTINGS_MAX_FRAME_SIZE we advertised (DefaultMaxFrameSize) loses the
// connection with GOAWAY(FRAME_SIZE_ERROR), judged on the frame header,
// before its payload is read.
func TestFrameLargerThanAdvertised(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, _ := blockingServer(Options{}, true)
		c := newRawClient(t, srv)
		defer c.close()
		c.connect(1)
		go c.fr.WriteData(1, false, make([]byte, DefaultMaxFrameSize+1)) // fails once the server hangs up
		if f := c.expect(http2.FrameGoAway, 0); f.code != http2.ErrCodeFrameSize {
			t.Fatalf("GOAWAY %v, want FRAME_SIZE_ERROR", f.code)
		}
	})
}
