package hbone

import (
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// halfCloseServer serves streams whose handler either half-closes first
// (x-first: server: greeting, CloseWrite, then read to EOF) or reads to EOF
// first and then answers and half-closes; it reports what it read.
type halfCloseResult struct {
	n   int64
	sum [32]byte
	err error
}

func startHalfCloseServer(t *testing.T, e *env) (*Server, string, chan halfCloseResult) {
	t.Helper()
	results := make(chan halfCloseResult, 2)
	srv := &Server{TLS: e.srv.TLS, Handler: func(ctx context.Context, req *Request) error {
		st, err := req.Accept()
		if err != nil {
			return err
		}
		defer st.Close()
		serverFirst := req.Header.Get("X-First") == "server"
		if serverFirst {
			if _, err := st.Write([]byte("greeting")); err != nil {
				results <- halfCloseResult{err: err}
				return nil
			}
			if err := st.CloseWrite(); err != nil {
				results <- halfCloseResult{err: err}
				return nil
			}
		}
		h := sha256.New()
		n, err := io.Copy(h, st)
		r := halfCloseResult{n: n, err: err}
		copy(r.sum[:], h.Sum(nil))
		if !serverFirst && err == nil {
			if _, err := st.Write([]byte("reply")); err == nil {
				r.err = st.CloseWrite()
			} else {
				r.err = err
			}
		}
		results <- r
		return nil
	}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return srv, l.Addr().String(), results
}

// TestServerFirstHalfClose: through the real Dialer and Server, the server
// application writes a greeting and half-closes; the client reads it and
// EOF, then sends 1 MiB and half-closes; the server reads every byte
// (checksum) and EOF. Then the mirror, client first, on the same
// connection. Neither stream is reset by either side.
func TestServerFirstHalfClose(t *testing.T) {
	e := newEnv(t, Options{})
	srv, addr, results := startHalfCloseServer(t, e)
	payload := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{1}).Read(payload)
	want := sha256.Sum256(payload)
	dial := func(first string) *ClientStream {
		s, err := e.dialer.Dial(context.Background(), addr, tlsconfig.AuthorizeID(serverID), "10.0.0.1:80",
			map[string][]string{"X-First": {first}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	check := func(r halfCloseResult) {
		t.Helper()
		if r.err != nil || r.n != int64(len(payload)) || r.sum != want {
			t.Fatalf("server read %d bytes (checksum match %v), err %v; want %d bytes, EOF", r.n, r.sum == want, r.err, len(payload))
		}
	}

	s := dial("server")
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "greeting" {
		t.Fatalf("client read %q, %v; want the greeting then EOF", got, err)
	}
	if _, err := s.Write(payload); err != nil {
		t.Fatalf("client write after the server's half-close: %v", err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	check(<-results)
	s.Close()

	s = dial("client")
	if _, err := s.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(s)
	if err != nil || string(got) != "reply" {
		t.Fatalf("client read %q, %v; want the reply then EOF", got, err)
	}
	check(<-results)
	s.Close()

	// A third stream on the same connection: frames are ordered, so a reset
	// of the first two would have reached the server before its answer.
	s = dial("client")
	s.CloseWrite()
	io.ReadAll(s)
	<-results
	s.Close()
	if sent, recv := srv.stats.resetsSent.Load(), srv.stats.resetsReceived.Load(); sent != 0 || recv != 0 {
		t.Errorf("server sent %d and received %d RST_STREAMs, want none", sent, recv)
	}
	if sent, recv := e.dialer.stats.resetsSent.Load(), e.dialer.stats.resetsReceived.Load(); sent != 0 || recv != 0 {
		t.Errorf("client sent %d and received %d RST_STREAMs, want none", sent, recv)
	}
}

// TestServerResetAfterResponseEndsClientWithEOF: a server that answers and
// then closes its stream without reading the client's direction (a
// waypoint answering "Connection: close") resets the stream. Through Pipe
// the client's TCP connection must still read the whole answer and then
// EOF, as it would from a TCP server that closed: a reset there would cut
// off a complete response (the data-path matrix's connection-close row).
func TestServerResetAfterResponseEndsClientWithEOF(t *testing.T) {
	e := newEnv(t, Options{})
	addr := e.serveWith(t, func(ctx context.Context, req *Request) error {
		st, err := req.Accept()
		if err != nil {
			return err
		}
		st.Write([]byte("complete response"))
		st.CloseWrite()
		return st.Close() // the client's direction never read: RST_STREAM
	})
	st, err := e.dialer.Dial(context.Background(), addr, tlsconfig.AuthorizeID(serverID), "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	app, captured := tcpPair(t)
	done := make(chan error, 1)
	go func() { _, _, err := Pipe(captured, st); done <- err }()
	got, err := io.ReadAll(app) // the client sends nothing and keeps its side open
	if err != nil || string(got) != "complete response" {
		t.Fatalf("client read %q, %v; want the whole response, then EOF", got, err)
	}
	app.Close()
	<-done
}
