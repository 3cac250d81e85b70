package nodebench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/weft-mesh/weft/pkg/netns"
)

// startServers listens inside the pod netns nsPath on the bulk, echo and
// HTTP ports.
func startServers(tb testing.TB, nsPath string) *servers {
	tb.Helper()
	s := &servers{peers: map[netip.Addr]int{}}
	listen := func(port int) net.Listener {
		var ln net.Listener
		err := netns.Do(nsPath, func() error {
			var err error
			ln, err = net.Listen("tcp", ":"+strconv.Itoa(port))
			return err
		})
		if err != nil {
			tb.Fatalf("listen :%d in %s: %v", port, nsPath, err)
		}
		tb.Cleanup(func() { ln.Close() })
		return ln
	}
	accept := func(ln net.Listener, handle func(net.Conn)) {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				s.saw(c.RemoteAddr())
				go func() {
					defer c.Close()
					handle(c)
				}()
			}
		}()
	}
	accept(listen(bulkPort), func(c net.Conn) {
		if _, err := io.Copy(io.Discard, c); err == nil {
			c.Write([]byte{1})
		}
	})
	accept(listen(echoPort), func(c net.Conn) { io.Copy(c, c) })

	body := bytes.Repeat([]byte("x"), 1024)
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1024")
			w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateNew {
				s.saw(c.RemoteAddr())
			}
		},
	}
	ln := listen(httpPort)
	go hs.Serve(ln)
	tb.Cleanup(func() { hs.Close() })
	return s
}

// bulk sends n MiB from the client pod to ip's sink on one connection and
// waits for the sink to have read it all.
func bulk(ctx context.Context, clientNS string, ip netip.Addr, n int) error {
	c, err := netns.Dial(ctx, clientNS, netip.AddrPortFrom(ip, bulkPort).String())
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	buf := make([]byte, 1<<20)
	for range n {
		if _, err := c.Write(buf); err != nil {
			return err
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	ack := make([]byte, 1)
	if _, err := io.ReadFull(c, ack); err != nil {
		return fmt.Errorf("sink did not confirm %d MiB: %w", n, err)
	}
	return nil
}

// pinger is a connection to ip's echo server for 1-byte round trips.
type pinger struct {
	c   net.Conn
	buf [1]byte
}

func dialPinger(ctx context.Context, clientNS string, ip netip.Addr) (*pinger, error) {
	c, err := netns.Dial(ctx, clientNS, netip.AddrPortFrom(ip, echoPort).String())
	if err != nil {
		return nil, err
	}
	c.(*net.TCPConn).SetNoDelay(true)
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	return &pinger{c: c}, nil
}

func (p *pinger) ping() error {
	p.buf[0] = 'p'
	if _, err := p.c.Write(p.buf[:]); err != nil {
		return err
	}
	_, err := io.ReadFull(p.c, p.buf[:])
	return err
}

func (p *pinger) rounds(n int) error {
	for range n {
		if err := p.ping(); err != nil {
			return err
		}
	}
	return nil
}

// httpClient makes HTTP requests from the client pod (keep-alive).
func httpClient(clientNS string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:         dialer(clientNS),
			MaxIdleConnsPerHost: 256,
			DisableCompression:  true,
		},
	}
}

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
	if resp.StatusCode != http.StatusOK || n != 1024 {
		return fmt.Errorf("GET %s: %s, %d bytes", url, resp.Status, n)
	}
	return nil
}

// rateResult is one fixed-rate HTTP phase.
type rateResult struct {
	lat      []time.Duration // sorted
	elapsed  time.Duration
	errors   int
	firstErr error
}

func (r rateResult) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(float64(len(r.lat)-1) * p)
	return r.lat[i]
}

func (r rateResult) rps() float64 { return float64(len(r.lat)) / r.elapsed.Seconds() }

// atRate sends n GETs at rate per second, open loop: each request starts
// on its schedule in its own goroutine whether or not earlier ones have
// finished, so a slow path cannot lower the offered load. Latency is from
// the actual start of each request to the end of its body.
func atRate(c *http.Client, url string, rate, n int) rateResult {
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
			errs[i] = get(c, url)
			lat[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	r := rateResult{elapsed: time.Since(start)}
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
