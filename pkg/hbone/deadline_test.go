package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/weft-mesh/weft/internal/await"
)

// TestServerStreamReadDeadline: a ServerStream's read deadline behaves as
// a TCP connection's, in the ways net/http's HTTP/1.1 server uses it: a
// deadline in the past fails a Read at once, and setting one fails a Read
// that is already waiting (its background read, interrupted after every
// request); the stream goes on and loses nothing; a timer that fires for a
// deadline since moved fails nothing; a future deadline fails a Read when
// it passes.
func TestServerStreamReadDeadline(t *testing.T) {
	e := newEnv(t, Options{})
	steps := make(chan string)
	done := make(chan error, 1)
	addr := e.serveWith(t, func(ctx context.Context, req *Request) error {
		st, err := req.Accept()
		if err != nil {
			done <- err
			return err
		}
		defer st.Close()
		done <- readDeadlineSteps(st, steps)
		return nil
	})
	cs, err := e.dialer.Dial(context.Background(), addr, tlsconfig.AuthorizeID(serverID), "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	stuck := time.After(10 * time.Second)
	for {
		select {
		case <-stuck:
			t.Fatal("the server's Read did not return: deadline not applied")
		case msg := <-steps:
			if _, err := cs.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			return
		}
	}
}

// readDeadlineSteps runs the server side of TestServerStreamReadDeadline;
// sending on steps makes the client write that text.
func readDeadlineSteps(st *ServerStream, steps chan<- string) error {
	buf := make([]byte, 64)
	expectTimeout := func(what string) error {
		if n, err := st.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
			return errors.New(what + ": Read returned " + string(buf[:n]) + ", " + errString(err) + "; want os.ErrDeadlineExceeded")
		}
		return nil
	}
	expect := func(what, want string) error {
		n, err := io.ReadFull(st, buf[:len(want)])
		if err != nil || string(buf[:n]) != want {
			return errors.New(what + ": read " + string(buf[:n]) + ", " + errString(err) + "; want " + want)
		}
		return nil
	}

	st.SetReadDeadline(time.Now().Add(-time.Second))
	if err := expectTimeout("deadline in the past"); err != nil {
		return err
	}

	st.SetReadDeadline(time.Time{})
	waiting := make(chan error, 1)
	go func() { waiting <- expectTimeout("deadline set while a Read waits") }()
	awaitReader(st)
	st.SetReadDeadline(time.Now())
	if err := <-waiting; err != nil {
		return err
	}

	st.SetReadDeadline(time.Time{})
	steps <- "one"
	if err := expect("after the deadline was removed", "one"); err != nil {
		return err
	}

	st.SetReadDeadline(time.Now().Add(time.Hour))
	st.s.wakeReaders() // as a timer armed for an earlier deadline would
	got := make(chan error, 1)
	go func() { got <- expect("after a stale timer", "two") }()
	awaitReader(st)
	st.s.wakeReaders()
	steps <- "two"
	if err := <-got; err != nil {
		return err
	}

	st.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	return expectTimeout("a deadline that passes while the Read waits")
}

// awaitReader returns once a Read is waiting on st.
func awaitReader(st *ServerStream) {
	for {
		st.s.sc.mu.Lock()
		n := st.s.readers
		st.s.sc.mu.Unlock()
		if n > 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// Pending tells, without reading, whether Read has something to return:
// data, the server's END_STREAM, or the end of the stream.
func TestClientStreamPending(t *testing.T) {
	e := newEnv(t, Options{})
	s := e.dial(t, e.echo)
	defer s.Close()
	if s.Pending() {
		t.Fatal("a new stream has something pending")
	}
	if _, err := s.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	await.True(t, "the echo pending", s.Pending)
	if _, err := s.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if s.Pending() {
		t.Fatal("pending after the echo was read")
	}
	s.CloseWrite() // the echo server half-closes in turn
	await.True(t, "the server's END_STREAM pending", s.Pending)
	if _, err := s.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read %v, want EOF", err)
	}
	s2 := e.dial(t, e.echo)
	s2.Close()
	if !s2.Pending() {
		t.Fatal("a closed stream has nothing pending")
	}
}

// Close makes a Read already waiting for the server return at once, with
// net.ErrClosed (a pool closes a stream whose request was cancelled while
// its reader waits for the answer).
func TestClientStreamCloseWakesRead(t *testing.T) {
	e := newEnv(t, Options{})
	s := e.dial(t, e.echo)
	read := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 1))
		read <- err
	}()
	await.True(t, "the Read waiting", func() bool {
		s.s.sc.mu.Lock()
		defer s.s.sc.mu.Unlock()
		return s.s.readers > 0
	})
	s.Close()
	select {
	case err := <-read:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read returned %v, want net.ErrClosed", err)
		}
	case <-time.After(await.Timeout):
		t.Fatal("Read still waiting after Close")
	}
}
