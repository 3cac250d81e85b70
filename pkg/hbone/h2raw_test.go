package hbone

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// servePlain serves HTTP/2 on c as ServeConn does after the TLS handshake,
// with clientID as the peer: tests and fuzzing drive the frame layer
// without TLS.
func (s *Server) servePlain(c net.Conn) {
	s.init()
	if !s.track(nil, c, true) {
		c.Close()
		return
	}
	defer s.track(nil, c, false)
	defer c.Close()
	s.serveHTTP2(c, c, clientID)
}

// rawFrame is a copy of what the server sent (x/net frames are only valid
// until the next read).
type rawFrame struct {
	typ      http2.FrameType
	stream   uint32
	end      bool // END_STREAM
	ack      bool
	code     http2.ErrCode
	data     []byte
	status   string
	fields   []hpack.HeaderField
	settings []http2.Setting
}

// rawClient is a hand-driven HTTP/2 client over net.Pipe.
type rawClient struct {
	t      testing.TB
	c      net.Conn
	fr     *http2.Framer
	enc    *hpack.Encoder
	hbuf   bytes.Buffer
	frames chan rawFrame // closed when the server closes the connection
}

// newRawClient starts srv on one end of a pipe and sends the preface and
// settings on the other.
func newRawClient(t testing.TB, srv *Server, settings ...http2.Setting) *rawClient {
	a, b := net.Pipe()
	go srv.servePlain(b)
	c := &rawClient{t: t, c: a, frames: make(chan rawFrame, 1<<16)}
	c.fr = http2.NewFramer(a, a)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.SetMaxReadFrameSize(1 << 24)
	c.enc = hpack.NewEncoder(&c.hbuf)
	go c.readLoop()
	if _, err := io.WriteString(a, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	c.write(c.fr.WriteSettings(settings...))
	return c
}

func (c *rawClient) readLoop() {
	defer close(c.frames)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return
		}
		c.frames <- copyFrame(f)
	}
}

func copyFrame(f http2.Frame) rawFrame {
	h := f.Header()
	r := rawFrame{typ: h.Type, stream: h.StreamID}
	switch f := f.(type) {
	case *http2.DataFrame:
		r.data, r.end = bytes.Clone(f.Data()), f.StreamEnded()
	case *http2.MetaHeadersFrame:
		r.status, r.fields, r.end = f.PseudoValue("status"), f.Fields, f.StreamEnded()
	case *http2.RSTStreamFrame:
		r.code = f.ErrCode
	case *http2.GoAwayFrame:
		r.code = f.ErrCode
	case *http2.SettingsFrame:
		r.ack = f.IsAck()
		f.ForeachSetting(func(s http2.Setting) error { r.settings = append(r.settings, s); return nil })
	case *http2.PingFrame:
		r.ack = f.IsAck()
	}
	return r
}

func (c *rawClient) write(err error) {
	c.t.Helper()
	if err != nil {
		c.t.Fatalf("writing to the server: %v", err)
	}
}

// headers opens stream id with the given fields (pseudo-headers first).
func (c *rawClient) headers(id uint32, end bool, kv ...string) {
	c.t.Helper()
	c.hbuf.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		c.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	c.write(c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true, EndStream: end}))
}

// connect opens a CONNECT stream to 10.0.0.1:80.
func (c *rawClient) connect(id uint32) {
	c.t.Helper()
	c.headers(id, false, ":method", "CONNECT", ":authority", "10.0.0.1:80")
}

// next returns the next frame the server sent that matches, skipping
// others; ok is false if the connection closed first.
func (c *rawClient) next(match func(rawFrame) bool) (rawFrame, bool) {
	for f := range c.frames {
		if match(f) {
			return f, true
		}
	}
	return rawFrame{}, false
}

// expect is next for frame type typ on stream id, failing the test
// without one.
func (c *rawClient) expect(typ http2.FrameType, id uint32) rawFrame {
	c.t.Helper()
	f, ok := c.next(func(f rawFrame) bool { return f.typ == typ && f.stream == id })
	if !ok {
		c.t.Fatalf("connection closed before a %v on stream %d", typ, id)
	}
	return f
}

// drain returns the frames received so far, without waiting.
func (c *rawClient) drain() []rawFrame {
	var fs []rawFrame
	for {
		select {
		case f, ok := <-c.frames:
			if !ok {
				return fs
			}
			fs = append(fs, f)
		default:
			return fs
		}
	}
}

func (c *rawClient) close() { c.c.Close() }

// blockingServer is a Server whose handler accepts (if accept) and then
// holds the stream until it ends, plus the streams it accepted.
func blockingServer(o Options, accept bool) (*Server, chan *ServerStream) {
	streams := make(chan *ServerStream, 1024)
	return &Server{Options: o, Handler: func(ctx context.Context, req *Request) error {
		if accept {
			st, err := req.Accept()
			if err != nil {
				return err
			}
			streams <- st
		}
		<-ctx.Done()
		return ctx.Err()
	}}, streams
}
