package proxy

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// errStreamIdle cancels a request that saw no byte for the stream idle
// timeout.
var errStreamIdle = errors.New("stream idle timeout")

// idleWatch cancels a request's context once it saw no activity (a read of
// the request body, a write or flush of the response) for d, Envoy's
// stream_idle_timeout: waiting for the upstream's answer counts as idle,
// as it does in Envoy.
type idleWatch struct {
	d      time.Duration
	last   atomic.Int64 // unix nanos of the last activity
	t      *time.Timer
	cancel context.CancelCauseFunc

	mu      sync.Mutex // orders firing against stop: no deadline after the request
	stopped bool
}

// watchIdle arms a watch on ctx; nil (a no-op) when d <= 0. When it
// fires it cancels the context and ends a pending read of the request body
// through rc (a read deadline now), which the context alone cannot.
func watchIdle(ctx context.Context, d time.Duration, rc *http.ResponseController) (context.Context, *idleWatch) {
	if d <= 0 {
		return ctx, nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	w := &idleWatch{d: d, cancel: func(err error) {
		cancel(err)
		if err != nil {
			_ = rc.SetReadDeadline(time.Now())
		}
	}}
	w.touch()
	w.t = time.AfterFunc(d, w.check)
	return ctx, w
}

func (w *idleWatch) touch() {
	if w != nil {
		w.last.Store(time.Now().UnixNano())
	}
}

func (w *idleWatch) check() {
	idle := time.Since(time.Unix(0, w.last.Load()))
	if idle < w.d {
		w.t.Reset(w.d - idle)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.cancel(errStreamIdle)
	}
}

// stop disarms the watch and reports whether it had ended the request.
func (w *idleWatch) stop(ctx context.Context) (fired bool) {
	if w == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.t.Stop()
	fired = context.Cause(ctx) == errStreamIdle
	w.cancel(nil)
	return fired
}
