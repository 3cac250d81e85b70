package bench

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

func get(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || n != respSize {
		return fmt.Errorf("GET %s: %s, %d bytes", url, resp.Status, n)
	}
	return nil
}

// result is one load phase.
type result struct {
	lat      []time.Duration // successful requests, sorted
	elapsed  time.Duration
	errors   int
	firstErr error
}

func (r result) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[int(float64(len(r.lat)-1)*p)]
}

func (r result) rps() float64 { return float64(len(r.lat)) / r.elapsed.Seconds() }

func (r result) err() error {
	if r.errors == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d requests failed, first: %w", r.errors, r.errors+len(r.lat), r.firstErr)
}

func collect(lat []time.Duration, errs []error, elapsed time.Duration) result {
	r := result{elapsed: elapsed}
	for i, err := range errs {
		if err != nil {
			r.errors++
			if r.firstErr == nil {
				r.firstErr = err
			}
			continue
		}
		r.lat = append(r.lat, lat[i])
	}
	slices.Sort(r.lat)
	if r.errors > 0 && r.firstErr == nil {
		r.firstErr = errors.New("request failed")
	}
	return r
}

// atRate sends n GETs at rate per second, open loop: each request starts
// on its schedule in its own goroutine whether or not earlier ones have
// finished, so a slow path cannot lower the offered load (no coordinated
// omission). Latency is from the actual start of each request to the end
// of its body, as in node-agent/nodebench.
func atRate(c *http.Client, url string, rate, n int) result {
	interval := time.Second / time.Duration(rate)
	lat := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			errs[i] = get(c, url)
			lat[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	return collect(lat, errs, time.Since(start))
}

// closedLoop runs conns clients, each sending its next GET as soon as the
// previous one finished, for d and at least n requests in all.
func closedLoop(c *http.Client, url string, conns, n int, d time.Duration) result {
	type one struct {
		lat []time.Duration
		err []error
	}
	per := make([]one, conns)
	var mu sync.Mutex
	sent := 0
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if time.Since(start) >= d && sent >= n {
					mu.Unlock()
					return
				}
				sent++
				mu.Unlock()
				t0 := time.Now()
				err := get(c, url)
				per[w].lat = append(per[w].lat, time.Since(t0))
				per[w].err = append(per[w].err, err)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var lat []time.Duration
	var errs []error
	for _, o := range per {
		lat = append(lat, o.lat...)
		errs = append(errs, o.err...)
	}
	return collect(lat, errs, elapsed)
}
