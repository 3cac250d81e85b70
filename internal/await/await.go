// Package await waits, in tests, for a condition that real sockets,
// processes or the kernel bring about, failing the test with what it
// waited for when the condition does not come. Code driven only by its own
// timers and goroutines is better tested in a testing/synctest bubble,
// where synctest.Wait needs no polling at all.
package await

import (
	"errors"
	"testing"
	"time"
)

// Timeout bounds every wait: long enough for a loaded CI machine, short
// enough to fail well before the test binary's own timeout.
const Timeout = 10 * time.Second

// pollInterval between two checks of a condition.
const pollInterval = 5 * time.Millisecond

// errNotYet is what True's condition reports while it does not hold.
var errNotYet = errors.New("not yet")

// True polls cond until it holds. After Timeout it fails tb with
// "timed out after 10s waiting for <what>".
func True(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	poll(tb, Timeout, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

// NoError polls check until it returns nil. After Timeout it fails tb
// with what it waited for and check's last error.
func NoError(tb testing.TB, what string, check func() error) {
	tb.Helper()
	poll(tb, Timeout, what, check)
}

// NoErrorWithin is NoError with a timeout of its own, for a condition
// known to take longer than Timeout (a client's reconnect back-off).
func NoErrorWithin(tb testing.TB, timeout time.Duration, what string, check func() error) {
	tb.Helper()
	poll(tb, timeout, what, check)
}

func poll(tb testing.TB, timeout time.Duration, what string, check func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		switch {
		case err == nil:
			return
		case time.Now().Before(deadline):
			time.Sleep(pollInterval)
		case errors.Is(err, errNotYet):
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
			return
		default:
			tb.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
			return
		}
	}
}
