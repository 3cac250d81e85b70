package bench

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
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

// eventually polls cond for up to 3 s (the access log is written as each
// request ends, possibly after the client got its response).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
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
	if r := atRate(c, direct.url, fixedRate, n); r.err() != nil || len(r.lat) != n {
		t.Fatalf("direct open loop: %d ok, %v", len(r.lat), r.err())
	}
	if r := closedLoop(c, direct.url, 4, n, 0); r.err() != nil || len(r.lat) < n {
		t.Fatalf("direct closed loop: %d ok, %v", len(r.lat), r.err())
	}
	c.CloseIdleConnections()
	directHits := h.backendHits.Load()
	if directHits < 2*n {
		t.Fatalf("backend saw %d requests from the direct path, want >= %d", directHits, 2*n)
	}
	if got := waypointRequests(t, h); got != 0 || h.agentStreams.Load() != 0 {
		t.Fatalf("direct path went through the waypoint (%d access log lines, %d tunnels)", got, h.agentStreams.Load())
	}

	before, err := h.waypoint.stats()
	if err != nil {
		t.Fatal(err)
	}
	weft := h.weft()
	c = weft.client(4)
	defer c.CloseIdleConnections()
	if r := atRate(c, weft.url, fixedRate, n); r.err() != nil || len(r.lat) != n {
		t.Fatalf("weft open loop: %d ok, %v", len(r.lat), r.err())
	}
	closed := closedLoop(c, weft.url, 4, n, 0)
	if closed.err() != nil || len(closed.lat) < n {
		t.Fatalf("weft closed loop: %d ok, %v", len(closed.lat), closed.err())
	}
	want := n + len(closed.lat)
	eventually(t, "the waypoint's access log to count every weft request", func() bool { return waypointRequests(t, h) == want })
	if got := h.backendHits.Load() - directHits; got != int64(want) {
		t.Fatalf("backend saw %d weft requests, want %d", got, want)
	}
	if h.agentStreams.Load() == 0 {
		t.Fatal("the stand-in node agent accepted no tunnel from the waypoint")
	}
	after, err := h.waypoint.stats()
	if err != nil {
		t.Fatal(err)
	}
	if after.cpu <= before.cpu || after.rss <= 0 {
		t.Fatalf("waypoint process stats did not move: before %+v, after %+v", before, after)
	}
	t.Logf("weft: %d requests through the waypoint over %d upstream tunnels; waypoint CPU %v, RSS %.1f MiB",
		want, h.agentStreams.Load(), after.cpu-before.cpu, float64(after.rss)/(1<<20))
}

// TestNginxHarness checks the generated nginx config proxies to the
// backend and that nginx's workers are measured; it skips without nginx.
func TestNginxHarness(t *testing.T) {
	if nginxBinary() == "" {
		t.Skip("nginx is not installed (apt-get install nginx-light); BenchmarkWaypoint/nginx skips too")
	}
	h := newHarness(t, options{})
	if !h.startNginx(t) {
		t.Fatal("nginx vanished")
	}
	p := h.nginxPath()
	c := p.client(4)
	defer c.CloseIdleConnections()
	const n = 50
	if r := atRate(c, p.url, fixedRate, n); r.err() != nil || len(r.lat) != n {
		t.Fatalf("nginx open loop: %d ok, %v", len(r.lat), r.err())
	}
	if got := h.backendHits.Load(); got != n {
		t.Fatalf("backend saw %d requests through nginx, want %d", got, n)
	}
	eventually(t, "nginx's access log to count every request", func() bool {
		b, _ := os.ReadFile(h.dir + "/nginx-access.log")
		return strings.Count(string(b), "\n") == n
	})
	if w := children(h.nginx.cmd.Process.Pid); len(w) == 0 {
		t.Fatal("no nginx worker processes found")
	}
	st, err := h.nginx.stats()
	if err != nil || st.rss <= 0 {
		t.Fatalf("nginx stats: %+v, %v", st, err)
	}
}
