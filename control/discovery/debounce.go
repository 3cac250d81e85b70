package discovery

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

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
