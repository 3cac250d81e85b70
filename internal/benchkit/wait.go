package benchkit

import (
	"os"
	"testing"
	"time"
)

// Eventually polls cond every 10 ms and fails tb when it has not held
// within d.
func Eventually(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
	}
}

// FileText is the content of the file at path, "" when it cannot be read
// (for failure messages: a child's log).
func FileText(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
