package daemon

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestDrainAfterStop: told to stop, the waypoint is draining (not ready)
// and keeps serving for the drain duration, then stops serving; if serving
// ends first, nothing waits.
func TestDrainAfterStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stop, stopNow := context.WithCancel(context.Background())
		serving, cancel := context.WithCancel(context.Background())
		var draining atomic.Bool
		go drainAfter(stop, serving, cancel, 5*time.Second, func() { draining.Store(true) }, slog.New(slog.DiscardHandler))
		synctest.Wait()
		if draining.Load() || serving.Err() != nil {
			t.Fatal("draining or stopped before being told to stop")
		}
		stopNow()
		time.Sleep(5*time.Second - time.Nanosecond)
		synctest.Wait()
		if !draining.Load() || serving.Err() != nil {
			t.Fatalf("during the drain: draining %v, serving ended %v; want draining and serving", draining.Load(), serving.Err())
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if serving.Err() == nil {
			t.Fatal("still serving after the drain")
		}
	})
	synctest.Test(t, func(t *testing.T) {
		serving, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		start := time.Now()
		go func() {
			drainAfter(context.Background(), serving, cancel, time.Hour, func() {}, slog.New(slog.DiscardHandler))
			close(done)
		}()
		cancel()
		<-done
		if waited := time.Since(start); waited != 0 {
			t.Fatalf("serving ended on its own, yet drainAfter returned after %v", waited)
		}
	})
}
