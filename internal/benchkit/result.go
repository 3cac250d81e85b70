package benchkit

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Result is one load phase.
type Result struct {
	Lat      []time.Duration // successful requests, sorted
	Elapsed  time.Duration   // wall clock of the whole phase
	Errors   int             // failed requests
	FirstErr error           // the first failure (in request order)
}

// Pct is the p quantile (0..1) of the successful requests' latency: the
// sorted sample at index (n-1)*p, rounded down; 0 without samples.
func (r Result) Pct(p float64) time.Duration {
	if len(r.Lat) == 0 {
		return 0
	}
	return r.Lat[int(float64(len(r.Lat)-1)*p)]
}

// Percentile is the p quantile (0..1) of d as Result.Pct takes it; it
// sorts d in place.
func Percentile(d []time.Duration, p float64) time.Duration {
	slices.Sort(d)
	return Result{Lat: d}.Pct(p)
}

// RPS is the successful requests per second of wall clock.
func (r Result) RPS() float64 { return float64(len(r.Lat)) / r.Elapsed.Seconds() }

// MeanNanos is the successful requests' mean latency in nanoseconds (NaN
// without samples).
func (r Result) MeanNanos() float64 {
	var sum time.Duration
	for _, l := range r.Lat {
		sum += l
	}
	return float64(sum) / float64(len(r.Lat))
}

// Err summarises the failures, nil when there were none.
func (r Result) Err() error {
	if r.Errors == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d requests failed, first: %w", r.Errors, r.Errors+len(r.Lat), r.FirstErr)
}

// collect builds a Result from per-request latencies and errors (same
// index, same request): failed requests' latencies are dropped.
func collect(lat []time.Duration, errs []error, elapsed time.Duration) Result {
	r := Result{Elapsed: elapsed}
	for i, err := range errs {
		if err != nil {
			r.Errors++
			if r.FirstErr == nil {
				r.FirstErr = err
			}
			continue
		}
		r.Lat = append(r.Lat, lat[i])
	}
	slices.Sort(r.Lat)
	if r.Errors > 0 && r.FirstErr == nil {
		r.FirstErr = errors.New("request failed")
	}
	return r
}
