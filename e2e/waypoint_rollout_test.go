package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-mesh/weft/pkg/netns"
)

// detailsDelayYAML delays every details request 300 ms at the waypoint
// (Istio's fault injection), so that a client sending back to back on one
// connection nearly always has a request in flight in the waypoint.
const detailsDelayYAML = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details, namespace: default}
spec:
  hosts: [details]
  http:
  - fault:
      delay: {percentage: {value: 100}, fixedDelay: 300ms}
    route:
    - destination: {host: details, subset: v1}
`

// testWaypointRollout restarts the waypoint Deployment while a client pod
// sends requests (POSTs, never retried) back to back on one kept-alive
// connection through it, each held 300 ms in the waypoint: the old pod
// drains (its responses ask the client to close, so the client's next
// request opens a connection that reaches a ready pod) and no request
// fails, though the old pod exits with the client's connection busy
// nearly all the time.
func testWaypointRollout(t *testing.T, e *env) {
	e.applyYAML(t, detailsDelayYAML)
	defer e.mustKubectl(t, "delete", "virtualservice", "details", "--ignore-not-found")
	url := "http://" + net.JoinHostPort(e.serviceIP(t, "default", "details"), "9080") + "/details/0"
	from := e.podNetns(t, "default", "app=curl")
	var dials atomic.Int32
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			dials.Add(1)
			return netns.Dial(ctx, from, addr)
		},
		MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1,
	}}
	// A POST, which details answers 405 (only GET is routed in the app):
	// the client does not retry it, as it would a GET cut before its
	// response began, so a request lost in the old waypoint shows.
	post := func() (time.Duration, error) {
		start := time.Now()
		resp, err := client.Post(url, "text/plain", strings.NewReader("rollout"))
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusMethodNotAllowed {
			return 0, fmt.Errorf("HTTP %d, want details' 405", resp.StatusCode)
		}
		return time.Since(start), nil
	}
	eventually(t, "details delayed 300 ms at the waypoint", 60*time.Second, func() error {
		if took, err := post(); err != nil || took < 300*time.Millisecond {
			return fmt.Errorf("took %s, %v", took, err)
		}
		return nil
	})
	const waypointPods = "gateway.networking.k8s.io/gateway-name=waypoint"
	old := e.podUIDs(t, "default", waypointPods)
	oldAlive := func() bool {
		now := e.podUIDs(t, "default", waypointPods)
		for uid := range old {
			if _, ok := now[uid]; ok {
				return true
			}
		}
		return false
	}
	dialsBefore := dials.Load()
	e.mustKubectl(t, "rollout", "restart", "deployment/waypoint")
	var failures []string
	sent, start := 0, time.Now()
	for oldAlive() {
		if time.Since(start) > 3*time.Minute {
			t.Fatalf("the old waypoint pods %v were not gone 3 minutes after the restart", old)
		}
		if _, err := post(); err != nil {
			failures = append(failures, fmt.Sprintf("%s into the rollout: %v", time.Since(start).Round(time.Millisecond), err))
		}
		sent++
	}
	t.Logf("old waypoint gone %s after the restart; %d requests, %d new connections", time.Since(start).Round(100*time.Millisecond), sent, dials.Load()-dialsBefore)
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed while the waypoint rolled:\n%s", len(failures), sent, strings.Join(failures, "\n"))
	}
	if dials.Load() == dialsBefore {
		t.Error("the client never opened a new connection: its requests never went to the new waypoint")
	}
}
