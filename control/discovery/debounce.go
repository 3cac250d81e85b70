package discovery

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Merge forwards the signals of every channel in ins to the returned one,
// coalesced (it holds at most one), until ctx ends.
func Merge(ctx context.Context, ins ...<-chan struct{}) <-chan struct{} {
	out := make(chan struct{}, 1)
	for _, in := range ins {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-in:
					select {
					case out <- struct{}{}:
					default:
					}
				}
			}
		}()
	}
	return out
}

// Debounce calls fn after signals on in have been quiet for `quiet`, but at
// least every `maxDelay` while signals keep coming, so a burst of changes
// (a Deployment scaling by 100) becomes one push and a steady trickle
// cannot starve pushes. It returns when ctx ends.
func Debounce(ctx context.Context, in <-chan struct{}, quiet, maxDelay time.Duration, fn func()) {
	var timer *time.Timer
	var fire <-chan time.Time
	var first time.Time
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case <-in:
			now := time.Now()
			if fire == nil {
				first = now
				timer = time.NewTimer(quiet)
				fire = timer.C
				continue
			}
			wait := min(quiet, maxDelay-now.Sub(first))
			timer.Reset(max(wait, 0))
		case <-fire:
			fire = nil
			fn()
		}
	}
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }
