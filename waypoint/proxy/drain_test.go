package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// drainClient is an HTTP/1.1 (or, h2, prior-knowledge h2) client through
// the waypoint that counts the connections it opens.
func (e *env) drainClient(h2 bool, dials *atomic.Int64) *http.Client {
	tr := &http.Transport{DisableCompression: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			dials.Add(1)
			return e.dialConn(ctx, vipAuthority())
		}}
	if h2 {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testTimeout}
}

// drainGet sends one GET and reports whether the response asked to close
// the connection; any failure fails the test.
func drainGet(t *testing.T, c *http.Client) (closes bool) {
	t.Helper()
	resp, err := c.Get("http://" + svcHostPort + "/")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
	return resp.Close
}

// TestDrainMovesKeepAliveClients: after Drain, HTTP/1.1 keep-alive and h2
// clients finish what they sent on their connection (a request in flight
// is answered) and send what comes next on a new one, which a node agent
// would steer to the proxy's replacement; no request fails.
func TestDrainMovesKeepAliveClients(t *testing.T) {
	start := func(t *testing.T) *env {
		e := newEnv(t)
		e.simple(nil, startBackend(t, "v1", nil))
		return e
	}
	t.Run("HTTP/1.1", func(t *testing.T) {
		e := start(t)
		var dials atomic.Int64
		c := e.drainClient(false, &dials)
		for range 2 {
			if drainGet(t, c) {
				t.Fatal("a response before the drain asked to close its connection")
			}
		}
		if dials.Load() != 1 {
			t.Fatalf("before the drain: %d connections for two requests", dials.Load())
		}
		e.wp.Drain()
		if !drainGet(t, c) {
			t.Error("a response during the drain did not ask to close its connection")
		}
		drainGet(t, c)
		if dials.Load() != 2 {
			t.Errorf("the request after the drain's first response went on connection %d, want a new one (2)", dials.Load())
		}
	})
	t.Run("h2", func(t *testing.T) {
		e := start(t)
		var dials atomic.Int64
		c := e.drainClient(true, &dials)
		drainGet(t, c)
		drainGet(t, c)
		if dials.Load() != 1 {
			t.Fatalf("before the drain: %d connections for two requests", dials.Load())
		}
		e.wp.Drain()
		deadline := time.Now().Add(testTimeout)
		for dials.Load() == 1 { // GOAWAY arrives asynchronously
			if time.Now().After(deadline) {
				t.Fatal("h2 requests after the drain still go on the first connection (no GOAWAY)")
			}
			drainGet(t, c)
		}
	})
}

// TestDrainAnswersTheRequestInFlight: a request waiting for its backend
// when the drain starts gets its response, which closes the connection.
func TestDrainAnswersTheRequestInFlight(t *testing.T) {
	hold := make(chan struct{})
	e := newEnv(t)
	b := startBackend(t, "v1", hold)
	e.simple(nil, b)
	var dials atomic.Int64
	c := e.drainClient(false, &dials)
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := c.Get("http://" + svcHostPort + "/")
		done <- result{resp, err}
	}()
	deadline := time.Now().Add(testTimeout)
	for b.hits.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the backend")
		}
		time.Sleep(time.Millisecond)
	}
	e.wp.Drain()
	close(hold)
	r := <-done
	if r.err != nil {
		t.Fatalf("the request in flight when the drain started: %v", r.err)
	}
	r.resp.Body.Close()
	if r.resp.StatusCode != http.StatusOK || !r.resp.Close {
		t.Errorf("the request in flight: %d, asks to close the connection %v; want 200 and true", r.resp.StatusCode, r.resp.Close)
	}
}
