package discovery

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// The tests run in synctest bubbles: Debounce's timers run on the
// bubble's fake clock, time.Sleep advances that clock without taking real
// time, and synctest.Wait returns once Debounce has reacted.

func TestDebounceCoalescesABurst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		in := make(chan struct{})
		var calls atomic.Int32
		go Debounce(ctx, in, 100*time.Millisecond, time.Second, func() { calls.Add(1) })
		// Ten signals 2ms apart: the last at 18ms, so the quiet period
		// ends at 118ms.
		for range 10 {
			in <- struct{}{}
			time.Sleep(2 * time.Millisecond)
		}
		time.Sleep(97 * time.Millisecond)
		synctest.Wait()
		if got := calls.Load(); got != 0 {
			t.Fatalf("%d calls 99ms after the last signal, want none before the 100ms quiet period", got)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if got := calls.Load(); got != 1 {
			t.Fatalf("%d calls once the quiet period ended, want 1", got)
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		if got := calls.Load(); got != 1 {
			t.Fatalf("a burst of 10 signals made %d calls, want 1", got)
		}
	})
}

func TestDebounceMaxDelayPreventsStarvation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		in := make(chan struct{})
		start := time.Now()
		var mu sync.Mutex
		var calls []time.Duration
		go Debounce(ctx, in, 100*time.Millisecond, 300*time.Millisecond, func() {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, time.Since(start))
		})
		// A signal every 7ms never leaves the 100ms quiet period, so only
		// maxDelay fires: 300ms after the first signal of each round
		// (rounds start at 0, 301 and 602ms; 7ms steps never land on a
		// firing instant, which keeps the order of events fixed).
		for time.Since(start) < time.Second {
			in <- struct{}{}
			time.Sleep(7 * time.Millisecond)
		}
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		want := []time.Duration{300 * time.Millisecond, 601 * time.Millisecond, 902 * time.Millisecond}
		if !slices.Equal(calls, want) {
			t.Fatalf("calls at %v during a steady stream of signals, want %v", calls, want)
		}
	})
}

// TestMergeForwardsEverySourceCoalesced: a signal on either input comes
// out; signals while one is pending become that one.
func TestMergeForwardsEverySourceCoalesced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		a, b := make(chan struct{}), make(chan struct{})
		out := Merge(ctx, a, b)
		pending := func() int {
			synctest.Wait()
			n := 0
			for {
				select {
				case <-out:
					n++
				default:
					return n
				}
			}
		}
		if n := pending(); n != 0 {
			t.Fatalf("%d signals before any input", n)
		}
		b <- struct{}{}
		if n := pending(); n != 1 {
			t.Fatalf("%d signals after one on the second input, want 1", n)
		}
		a <- struct{}{}
		b <- struct{}{}
		a <- struct{}{}
		if n := pending(); n != 1 {
			t.Fatalf("three signals while none was taken came out as %d, want 1", n)
		}
	})
}
