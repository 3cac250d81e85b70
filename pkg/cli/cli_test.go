package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	l, err := Logger(&buf, "warn")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown", "k", "v")
	if out := buf.String(); strings.Contains(out, "hidden") || !strings.Contains(out, `"msg":"shown","k":"v"`) {
		t.Fatalf("log output %q", out)
	}
	if _, err := Logger(&buf, "loud"); err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Fatalf("bad level: %v", err)
	}
}

func TestRunUntilSignal(t *testing.T) {
	if err := RunUntilSignal(func(context.Context) error { return context.Canceled }); err != nil {
		t.Fatalf("a canceled run is a clean exit: %v", err)
	}
	boom := errors.New("boom")
	if err := RunUntilSignal(func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("errors pass through: %v", err)
	}
}

// lockedBuffer is a bytes.Buffer safe for the flusher's goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAccessLogBuffers: a line is held back, goes out once the flush
// interval passed, and stop writes out what is left.
func TestAccessLogBuffers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out lockedBuffer
		w, stop := AccessLog(&out)
		io.WriteString(w, "first\n")
		synctest.Wait()
		if got := out.String(); got != "" {
			t.Fatalf("written at once: %q, want it buffered", got)
		}
		time.Sleep(AccessLogFlushInterval + time.Millisecond)
		synctest.Wait()
		if got := out.String(); got != "first\n" {
			t.Fatalf("after the flush interval: %q, want the line", got)
		}
		io.WriteString(w, "second\n")
		stop()
		if got := out.String(); got != "first\nsecond\n" {
			t.Fatalf("after stop: %q, want both lines", got)
		}
	})
}
