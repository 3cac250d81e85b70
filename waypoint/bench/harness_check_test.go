package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weft-mesh/weft/internal/benchkit"
)

// waypointRequests counts the waypoint's access-log lines for requests it
// routed to the benchmark's cluster and answered 200.
func waypointRequests(t *testing.T, h *harness) int {
	t.Helper()
	f, err := os.Open(h.accessLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e struct {
			Protocol, Authority, Method string
			Code                        int    `json:"response_code"`
			Cluster                     string `json:"upstream_cluster"`
			Upstream                    string `json:"upstream_host"`
			Peer                        string `json:"downstream_peer"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("access log line %q: %v", sc.Text(), err)
		}
		if e.Code == 200 && e.Cluster == cluster && e.Upstream == h.backendAddr && e.Peer == clientID.String() && e.Method == "GET" {
			n++
		}
	}
	return n
}

// TestWaypointHarness proves the benchmark measures what it claims, in a
// second or so and without nginx: the direct path does not touch the
// waypoint, the weft path goes client -> waypoint (its access log counts
// every request, routed to the cluster's HBONE endpoint) -> stand-in node
// agent -> backend, and the proxy's CPU and RSS are readable.
func TestWaypointHarness(t *testing.T) {
	h := newHarness(t, options{})
	const n = 100 // per load generator

	direct := h.direct()
	c := direct.client(4)
	if r := benchkit.AtRate(fixedRate, n, direct.get(c)); r.Err() != nil || len(r.Lat) != n {
		t.Fatalf("direct open loop: %d ok, %v", len(r.Lat), r.Err())
	}
	if r := benchkit.ClosedLoop(4, n, 0, direct.get(c)); r.Err() != nil || len(r.Lat) < n {
		t.Fatalf("direct closed loop: %d ok, %v", len(r.Lat), r.Err())
	}
	c.CloseIdleConnections()
	directHits := h.backendHits.Load()
	if directHits < 2*n {
		t.Fatalf("backend saw %d requests from the direct path, want >= %d", directHits, 2*n)
	}
	if got := waypointRequests(t, h); got != 0 || h.agentStreams.Load() != 0 {
		t.Fatalf("direct path went through the waypoint (%d access log lines, %d tunnels)", got, h.agentStreams.Load())
	}

	before, err := h.waypoint.Stats()
	if err != nil {
		t.Fatal(err)
	}
	weft := h.weft()
	c = weft.client(4)
	defer c.CloseIdleConnections()
	if r := benchkit.AtRate(fixedRate, n, weft.get(c)); r.Err() != nil || len(r.Lat) != n {
		t.Fatalf("weft open loop: %d ok, %v", len(r.Lat), r.Err())
	}
	closed := benchkit.ClosedLoop(4, n, 0, weft.get(c))
	if closed.Err() != nil || len(closed.Lat) < n {
		t.Fatalf("weft closed loop: %d ok, %v", len(closed.Lat), closed.Err())
	}
	want := n + len(closed.Lat)
	// The access log is written as each request ends, possibly after the
	// client got its response, and buffered for up to cli.AccessLogFlushInterval.
	benchkit.Eventually(t, 5*time.Second, "the waypoint's access log to count every weft request", func() bool { return waypointRequests(t, h) == want })
	if got := h.backendHits.Load() - directHits; got != int64(want) {
		t.Fatalf("backend saw %d weft requests, want %d", got, want)
	}
	if h.agentStreams.Load() == 0 {
		t.Fatal("the stand-in node agent accepted no tunnel from the waypoint")
	}
	after, err := h.waypoint.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if after.CPU <= before.CPU || after.RSS <= 0 {
		t.Fatalf("waypoint process stats did not move: before %+v, after %+v", before, after)
	}
	t.Logf("weft: %d requests through the waypoint over %d upstream tunnels; waypoint CPU %v, RSS %.1f MiB",
		want, h.agentStreams.Load(), after.CPU-before.CPU, float64(after.RSS)/(1<<20))
}

// TestNginxHarness checks the generated nginx config proxies to the
// backend and that nginx's workers are measured. Without nginx it skips,
// or fails under WEFT_E2E_REQUIRE=1 (CI installs nginx-light).
func TestNginxHarness(t *testing.T) {
	requireBinary(t, nginxBinary(), "nginx is not installed (apt-get install nginx-light); BenchmarkWaypoint/nginx skips too")
	h := newHarness(t, options{})
	if !h.startNginx(t) {
		t.Fatal("nginx vanished")
	}
	checkPeer(t, h, h.nginxPath(), "nginx-access.log")
	if w := benchkit.Children(h.nginx.Pid()); len(w) == 0 {
		t.Fatal("no nginx worker processes found")
	}
}

// TestHAProxyHarness checks the generated HAProxy config proxies to the
// backend and logs each request, and that HAProxy is one process (its
// threads inside), so its Stats are all of it. Without HAProxy it skips,
// or fails under WEFT_E2E_REQUIRE=1 (CI installs haproxy).
func TestHAProxyHarness(t *testing.T) {
	requireBinary(t, haproxyBinary(), "haproxy is not installed (apt-get install haproxy); BenchmarkWaypoint/haproxy skips too")
	h := newHarness(t, options{})
	if !h.startHAProxy(t) {
		t.Fatal("haproxy vanished")
	}
	checkPeer(t, h, h.haproxyPath(), "haproxy-access.log")
	if c := benchkit.Children(h.haproxy.Pid()); len(c) != 0 {
		t.Fatalf("haproxy forked %v, want one process (-db)", c)
	}
	threads, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", h.haproxy.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("haproxy: one process, %d threads", len(threads))
}

// requireBinary skips the test when bin is "" (not installed), or fails it
// under WEFT_E2E_REQUIRE=1.
func requireBinary(t *testing.T, bin, msg string) {
	t.Helper()
	if bin != "" {
		return
	}
	if os.Getenv("WEFT_E2E_REQUIRE") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// checkPeer sends requests over a peer proxy's path and checks the backend
// got every one of them and only those, the proxy's access log (in h.dir)
// has a line per request, and the proxy's stats are readable.
func checkPeer(t *testing.T, h *harness, p path, accessLog string) {
	t.Helper()
	c := p.client(4)
	defer c.CloseIdleConnections()
	const n = 50
	if r := benchkit.AtRate(fixedRate, n, p.get(c)); r.Err() != nil || len(r.Lat) != n {
		t.Fatalf("%s open loop: %d ok, %v", p.name, len(r.Lat), r.Err())
	}
	if got := h.backendHits.Load(); got != n {
		t.Fatalf("backend saw %d requests through %s, want %d", got, p.name, n)
	}
	benchkit.Eventually(t, 3*time.Second, p.name+"'s access log to count every request", func() bool {
		b, _ := os.ReadFile(filepath.Join(h.dir, accessLog))
		return strings.Count(string(b), "\n") == n
	})
	st, err := p.proxy.Stats()
	if err != nil || st.RSS <= 0 {
		t.Fatalf("%s stats: %+v, %v", p.name, st, err)
	}
}
