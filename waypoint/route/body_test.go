package route

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestBodyBufReplayAndBlocking(t *testing.T) {
	pr, pw := io.Pipe()
	b := newBodyBuf(pr, 16)
	r1 := b.reader()
	got := make(chan string, 1)
	go func() { d, _ := io.ReadAll(r1); got <- string(d) }()
	// r1 is blocked in src.Read: replayable must not wait for it.
	done := make(chan bool, 1)
	go func() { done <- b.replayable() }()
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("not replayable")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("replayable blocked behind a pending body read")
	}
	io.WriteString(pw, "hello ")
	io.WriteString(pw, "world")
	pw.Close()
	if s := <-got; s != "hello world" {
		t.Fatalf("r1 %q", s)
	}
	d, err := io.ReadAll(b.reader())
	if err != nil || string(d) != "hello world" {
		t.Fatalf("replay %q %v", d, err)
	}

	// Over the limit: the head reader streams everything, replays fail.
	b = newBodyBuf(strings.NewReader(strings.Repeat("x", 100)), 16)
	d, err = io.ReadAll(b.reader())
	if err != nil || len(d) != 100 || b.replayable() {
		t.Fatalf("head reader %d %v replayable %v", len(d), err, b.replayable())
	}
	if _, err := io.ReadAll(b.reader()); err != errBodyNotReplayable {
		t.Fatalf("replay err %v", err)
	}
	// After close, readers get the kept bytes and then an error.
	pr, pw = io.Pipe()
	b = newBodyBuf(pr, 16)
	go func() { io.WriteString(pw, "abc") }()
	buf := make([]byte, 3)
	if _, err := io.ReadFull(b.reader(), buf); err != nil {
		t.Fatal(err)
	}
	b.close()
	d, err = io.ReadAll(b.reader())
	if string(d) != "abc" || err != errBodyClosed {
		t.Fatalf("after close %q %v", d, err)
	}
}
