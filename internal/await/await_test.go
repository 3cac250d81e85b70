package await

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

func TestTrueReturnsOnceTheConditionHolds(t *testing.T) {
	var checks atomic.Int32
	True(t, "the third check", func() bool { return checks.Add(1) == 3 })
	if n := checks.Load(); n != 3 {
		t.Fatalf("%d checks, want 3: True must stop polling once the condition holds", n)
	}
}

// fatalRecorder is a testing.TB that records Fatalf instead of ending the
// test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
}

func TestTimeoutNamesWhatWasAwaited(t *testing.T) {
	for _, tc := range []struct {
		name  string
		check func() error
		want  string
	}{
		{"condition", func() error { return errNotYet }, "timed out after 20ms waiting for the pool to drain"},
		{"error", func() error { return errors.New("2 connections left") }, "timed out after 20ms waiting for the pool to drain: 2 connections left"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &fatalRecorder{TB: t}
			start := time.Now()
			poll(r, 20*time.Millisecond, "the pool to drain", tc.check)
			if r.msg != tc.want {
				t.Fatalf("failure message %q, want %q", r.msg, tc.want)
			}
			if time.Since(start) < 20*time.Millisecond {
				t.Fatal("gave up before the timeout")
			}
		})
	}
}

func TestLogLineWaitsForTheLine(t *testing.T) {
	l := NewLogLine("stream ended")
	logged := make(chan struct{})
	go func() {
		l.Write([]byte("level=INFO msg=connected\n"))
		close(logged)
		l.Write([]byte("level=WARN msg=\"stream ended; reconnecting\"\n"))
		l.Write([]byte("level=WARN msg=\"stream ended; reconnecting\"\n"))
	}()
	<-logged
	l.Wait(t)
	select {
	case <-l.seen:
	default:
		t.Fatal("Wait returned before the line was logged")
	}
}

func TestLogLineIgnoresOtherLines(t *testing.T) {
	l := NewLogLine("stream ended")
	l.Write([]byte("level=INFO msg=connected\n"))
	select {
	case <-l.seen:
		t.Fatal("an unrelated line counted as the awaited one")
	default:
	}
}
