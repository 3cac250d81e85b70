package benchkit

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestResultPercentiles(t *testing.T) {
	var lat []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		lat = append(lat, ms(i))
	}
	r := collect(lat, make([]error, len(lat)), 2*time.Second)
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{0, ms(1)}, {0.50, ms(50)}, {0.99, ms(99)}, {1, ms(100)}} {
		if got := r.Pct(c.p); got != c.want {
			t.Errorf("Pct(%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if got := r.RPS(); got != 50 {
		t.Errorf("RPS = %v, want 50", got)
	}
	if got, want := r.MeanNanos(), float64(ms(101))/2; got != want {
		t.Errorf("MeanNanos = %v, want %v", got, want)
	}
	if r.Err() != nil || r.Errors != 0 {
		t.Errorf("no failures, got %d, %v", r.Errors, r.Err())
	}
}

func TestResultEmpty(t *testing.T) {
	var r Result
	if r.Pct(0.5) != 0 || r.Pct(0.99) != 0 {
		t.Errorf("percentiles of no samples: %v %v", r.Pct(0.5), r.Pct(0.99))
	}
	if !math.IsNaN(r.MeanNanos()) {
		t.Errorf("MeanNanos of no samples = %v, want NaN", r.MeanNanos())
	}
}

func TestCollectErrors(t *testing.T) {
	first, second := errors.New("first"), errors.New("second")
	r := collect([]time.Duration{ms(3), ms(99), ms(1), ms(98)}, []error{nil, first, nil, second}, time.Second)
	if r.Errors != 2 || r.FirstErr != first {
		t.Fatalf("errors %d, first %v; want 2, first", r.Errors, r.FirstErr)
	}
	if len(r.Lat) != 2 || r.Lat[0] != ms(1) || r.Lat[1] != ms(3) {
		t.Fatalf("latencies of failed requests kept or not sorted: %v", r.Lat)
	}
	err := r.Err()
	if !errors.Is(err, first) || !strings.HasPrefix(err.Error(), "2 of 4 requests failed") {
		t.Fatalf("Err() = %v", err)
	}
}
