package await

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// LogLine is a log destination (for slog.NewTextHandler, say) that notes
// when the code under test logs a line containing a given text: how a
// test learns that the code got somewhere it has no other signal for.
// Each Write must hold whole lines, as slog's handlers do.
type LogLine struct {
	want []byte
	seen chan struct{}
	once sync.Once
}

// NewLogLine watches for lines containing want.
func NewLogLine(want string) *LogLine {
	return &LogLine{want: []byte(want), seen: make(chan struct{})}
}

// Write implements io.Writer, discarding the log.
func (l *LogLine) Write(p []byte) (int, error) {
	if bytes.Contains(p, l.want) {
		l.once.Do(func() { close(l.seen) })
	}
	return len(p), nil
}

// Wait returns once such a line was logged, or fails tb after Timeout.
func (l *LogLine) Wait(tb testing.TB) {
	tb.Helper()
	select {
	case <-l.seen:
	case <-time.After(Timeout):
		tb.Fatalf("timed out after %s waiting for the log line %q", Timeout, l.want)
	}
}
