package discovery

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func TestDebounceCoalescesABurst(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := make(chan struct{})
	var calls atomic.Int32
	go Debounce(ctx, in, 100*time.Millisecond, time.Second, func() { calls.Add(1) })
	for range 10 {
		in <- struct{}{}
		time.Sleep(2 * time.Millisecond)
	}
	deadline := time.Now().Add(2 * time.Second)
	for calls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // room for a wrong second call
	if got := calls.Load(); got != 1 {
		t.Fatalf("a burst of 10 signals made %d calls, want 1", got)
	}
}

func TestDebounceMaxDelayPreventsStarvation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := make(chan struct{})
	var calls atomic.Int32
	go Debounce(ctx, in, 200*time.Millisecond, 50*time.Millisecond, func() { calls.Add(1) })
	// Signals never pause for the quiet period; only maxDelay can fire.
	for start := time.Now(); time.Since(start) < 600*time.Millisecond; {
		in <- struct{}{}
		time.Sleep(5 * time.Millisecond)
	}
	if got := calls.Load(); got < 2 {
		t.Fatalf("steady signals starved the callback: %d calls", got)
	}
}
