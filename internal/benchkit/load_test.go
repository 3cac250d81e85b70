package benchkit

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func server(t *testing.T, delay time.Duration, size int) (*httptest.Server, *atomic.Int64) {
	var hits atomic.Int64
	body := strings.Repeat("x", size)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		if r.URL.Path == "/fail" && n%2 == 0 {
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		time.Sleep(delay) // the server's latency in the scenario
		w.Write([]byte(body))
	}))
	t.Cleanup(s.Close)
	return s, &hits
}

func TestGet(t *testing.T) {
	s, _ := server(t, 0, 1024)
	c := HTTPClient(nil, 4)
	if err := Get(c, s.URL+"/", 1024); err != nil {
		t.Fatal(err)
	}
	if err := Get(c, s.URL+"/", 1000); err == nil || !strings.Contains(err.Error(), "1024 bytes") {
		t.Fatalf("wrong size accepted: %v", err)
	}
}

func TestAtRate(t *testing.T) {
	s, hits := server(t, 0, 1024)
	c := HTTPClient(nil, 16)
	defer c.CloseIdleConnections()
	const rate, n = 200, 40
	r := AtRate(rate, n, func() error { return Get(c, s.URL+"/", 1024) })
	if err := r.Err(); err != nil || len(r.Lat) != n || hits.Load() != n {
		t.Fatalf("%d ok of %d (server saw %d): %v", len(r.Lat), n, hits.Load(), err)
	}
	// The last request starts (n-1)/rate after the first.
	if min := time.Duration(n-1) * time.Second / rate; r.Elapsed < min {
		t.Fatalf("%d requests at %d/s took %v, want at least %v", n, rate, r.Elapsed, min)
	}
	if rps := r.RPS(); rps > rate*1.1 {
		t.Fatalf("%.0f req/s offered at %d/s", rps, rate)
	}
}

// TestAtRateOpenLoop: a slow server does not slow the offered load; the
// requests overlap instead.
func TestAtRateOpenLoop(t *testing.T) {
	s, _ := server(t, 100*time.Millisecond, 16)
	c := HTTPClient(nil, 64)
	defer c.CloseIdleConnections()
	const rate, n = 100, 20 // 200 ms of schedule, 100 ms per request
	r := AtRate(rate, n, func() error { return Get(c, s.URL+"/", 16) })
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if r.Elapsed > time.Second {
		t.Fatalf("closed-loop behaviour: %d requests of 100 ms at %d/s took %v", n, rate, r.Elapsed)
	}
	if r.Pct(0.5) < 100*time.Millisecond {
		t.Fatalf("p50 %v below the server's delay", r.Pct(0.5))
	}
}

func TestAtRateErrors(t *testing.T) {
	s, _ := server(t, 0, 8)
	c := HTTPClient(nil, 4)
	defer c.CloseIdleConnections()
	r := AtRate(1000, 10, func() error { return Get(c, s.URL+"/fail", 8) })
	if r.Errors == 0 || r.Errors+len(r.Lat) != 10 || r.FirstErr == nil || !strings.Contains(r.FirstErr.Error(), "500") {
		t.Fatalf("errors %d, ok %d, first %v", r.Errors, len(r.Lat), r.FirstErr)
	}
}

func TestClosedLoop(t *testing.T) {
	s, hits := server(t, 0, 64)
	c := HTTPClient(nil, 8)
	defer c.CloseIdleConnections()
	get := func() error { return Get(c, s.URL+"/", 64) }

	// At least n requests, no duration.
	r := ClosedLoop(4, 50, 0, get)
	if err := r.Err(); err != nil || len(r.Lat) < 50 || int64(len(r.Lat)) != hits.Load() {
		t.Fatalf("%d ok (server saw %d), want >= 50: %v", len(r.Lat), hits.Load(), err)
	}
	if len(r.Lat) > 50+4 {
		t.Fatalf("%d requests for n=50 with 4 clients", len(r.Lat))
	}
	// For a duration, n = 0.
	r = ClosedLoop(4, 0, 100*time.Millisecond, get)
	if err := r.Err(); err != nil || len(r.Lat) == 0 || r.Elapsed < 100*time.Millisecond {
		t.Fatalf("%d ok in %v: %v", len(r.Lat), r.Elapsed, err)
	}
}

// TestClosedLoopConcurrency: conns clients, each waiting for its answer.
func TestClosedLoopConcurrency(t *testing.T) {
	var inFlight, peak atomic.Int64
	r := ClosedLoop(3, 30, 0, func() error {
		n := inFlight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(time.Millisecond) // work long enough for the workers to overlap
		inFlight.Add(-1)
		return nil
	})
	if len(r.Lat) < 30 || peak.Load() > 3 {
		t.Fatalf("%d requests, %d at once; want >= 30, at most 3", len(r.Lat), peak.Load())
	}
}
