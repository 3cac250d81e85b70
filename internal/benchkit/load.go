package benchkit

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// HTTPClient is the benchmarks' HTTP/1.1 keep-alive client: a 10 s
// timeout per request, no compression, up to idle idle connections per
// host, connections from dial (nil: plain TCP to the URL's host).
func HTTPClient(dial func(ctx context.Context, network, addr string) (net.Conn, error), idle int) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:         dial,
			MaxIdleConnsPerHost: idle,
			DisableCompression:  true,
		},
	}
}

// Get sends one GET for url with c and reads the whole body: anything but
// a 200 with size bytes of body is an error.
func Get(c *http.Client, url string, size int64) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || n != size {
		return fmt.Errorf("GET %s: %s, %d bytes", url, resp.Status, n)
	}
	return nil
}

// AtRate sends n requests (calls of do) at rate per second, open loop:
// each request starts on its schedule in its own goroutine whether or not
// earlier ones have finished, so a slow path cannot lower the offered load
// (no coordinated omission). Latency is from the actual start of each
// request to its end (for Get, the end of the body).
func AtRate(rate, n int, do func() error) Result {
	interval := time.Second / time.Duration(rate)
	lat := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			errs[i] = do()
			lat[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	return collect(lat, errs, time.Since(start))
}

// ClosedLoop runs conns clients, each sending its next request (call of
// do) as soon as the previous one finished, for d and at least n requests
// in all.
func ClosedLoop(conns, n int, d time.Duration, do func() error) Result {
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
				err := do()
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
