package hbone

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/weft-mesh/weft/internal/await"
)

// failAfter bounds a wait that only a bug makes long.
const failAfter = 10 * time.Second

// TestRequestBodyWrite: write returns once the reader took every byte
// (over several Reads), and after the body ended it says ErrClosedPipe.
func TestRequestBodyWrite(t *testing.T) {
	b := newRequestBody()
	got := make(chan []byte)
	go func() {
		var out []byte
		buf := make([]byte, 3)
		for {
			n, err := b.Read(buf)
			out = append(out, buf[:n]...)
			if err != nil {
				got <- out
				return
			}
		}
	}()
	if n, err := b.write([]byte("hello, tunnel")); n != 13 || err != nil {
		t.Fatalf("write = %d, %v; want 13, nil", n, err)
	}
	b.end(io.EOF)
	if out := <-got; string(out) != "hello, tunnel" {
		t.Fatalf("reader got %q", out)
	}
	if _, err := b.write([]byte("late")); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("write after end: %v, want io.ErrClosedPipe", err)
	}
}

// TestRequestBodyEndDuringWrite: a write whose reader stopped half way
// returns when the body ends, with the bytes taken so far; the reader
// never sees the rest (the caller may reuse the slice at once: -race).
func TestRequestBodyEndDuringWrite(t *testing.T) {
	b := newRequestBody()
	first := make(chan struct{})
	go func() {
		buf := make([]byte, 4)
		b.Read(buf) // takes 4 bytes, then stops reading like a stuck x/net
		close(first)
	}()
	p := []byte("0123456789")
	res := make(chan int)
	go func() { n, _ := b.write(p); res <- n }()
	<-first
	b.Close()
	select {
	case n := <-res:
		if n != 4 {
			t.Fatalf("write returned %d bytes taken, want 4", n)
		}
	case <-time.After(failAfter):
		t.Fatal("write still blocked after the body ended")
	}
	copy(p, "xxxxxxxxxx") // reuse: the reader must not read p any more
	if n, err := b.Read(make([]byte, 10)); n != 0 || err == nil {
		t.Fatalf("Read after end = %d, %v; want 0 and an error", n, err)
	}
}

// TestRequestBodyPull: the reader reads the source itself; pull returns
// at the source's EOF with every byte counted, and the body stays open
// until ended.
func TestRequestBodyPull(t *testing.T) {
	b := newRequestBody()
	payload := make([]byte, 100<<10)
	rand.Read(payload)
	got := make(chan []byte)
	go func() {
		out, _ := io.ReadAll(b)
		got <- out
	}()
	n, err := b.pull(bytes.NewReader(payload))
	if n != int64(len(payload)) || err != nil {
		t.Fatalf("pull = %d, %v; want %d, nil", n, err, len(payload))
	}
	b.end(io.EOF)
	if out := <-got; !bytes.Equal(out, payload) {
		t.Fatalf("reader got %d bytes, not the payload", len(out))
	}
}

// TestRequestBodyCloseInterruptsPull: x/net giving up on the stream while
// its goroutine is blocked reading a pulled connection must unblock that
// read, or the goroutine would wait for a client that may never send.
func TestRequestBodyCloseInterruptsPull(t *testing.T) {
	_, src := tcpPair(t) // the client never sends
	b := newRequestBody()
	readErr := make(chan error)
	go func() {
		_, err := b.Read(make([]byte, 10))
		readErr <- err
	}()
	pullErr := make(chan error)
	go func() { _, err := b.pull(src); pullErr <- err }()
	// Close only once the reader is blocked on src, else this tests less.
	await.True(t, "the reader took the source", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.active != nil })
	b.Close()
	for name, ch := range map[string]chan error{"Read": readErr, "pull": pullErr} {
		select {
		case err := <-ch:
			if err == nil {
				t.Errorf("%s returned no error after Close", name)
			}
		case <-time.After(failAfter):
			t.Fatalf("%s still blocked on the source after Close", name)
		}
	}
}

// TestPipeIntoTunnelPulls: Pipe from a TCP connection into a ClientStream
// (the path that pulls): 1 MiB each way through the echo target,
// half-close passed on, counts right, no error.
func TestPipeIntoTunnelPulls(t *testing.T) {
	e := newEnv(t, Options{})
	st, err := e.dialer.Dial(context.Background(), e.addr, tlsconfig.AuthorizeID(serverID), e.echo, nil)
	if err != nil {
		t.Fatal(err)
	}
	app, captured := tcpPair(t)
	type result struct {
		up, down int64
		err      error
	}
	done := make(chan result, 1)
	go func() {
		up, down, err := Pipe(captured, st)
		done <- result{up, down, err}
	}()
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	go func() {
		app.Write(payload)
		app.CloseWrite()
	}()
	echoed, err := io.ReadAll(app)
	if err != nil || !bytes.Equal(echoed, payload) {
		t.Fatalf("echo: %d bytes, %v; want the 1 MiB payload and EOF", len(echoed), err)
	}
	select {
	case r := <-done:
		if r.up != 1<<20 || r.down != 1<<20 || r.err != nil {
			t.Fatalf("Pipe = %d up, %d down, %v; want 1 MiB each way, nil", r.up, r.down, r.err)
		}
	case <-time.After(failAfter):
		t.Fatal("Pipe did not return after both directions ended")
	}
}
