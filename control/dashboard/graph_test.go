package dashboard

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weft-mesh/weft/control/server/access"
)

var (
	agentA = Target{Kind: KindNodeAgent, Namespace: "weft-system", Pod: "weft-node-agent-a", Node: "node-0"}
	agentB = Target{Kind: KindNodeAgent, Namespace: "weft-system", Pod: "weft-node-agent-b", Node: "node-1"}
	wp     = Target{Kind: KindWaypoint, Namespace: "default", Pod: "waypoint-abc", Workload: "waypoint"}
	agentC = Target{Kind: KindNodeAgent, Namespace: "weft-system", Pod: "weft-node-agent-c", Node: "node-2"}
)

func scrape(t *testing.T, tg Target, at time.Time, file string) Scrape {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	samples, err := ParseMetrics(f)
	if err != nil {
		t.Fatal(err)
	}
	return Scrape{Target: tg, Time: at, Samples: samples}
}

func TestBuild(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	t1 := t0.Add(5 * time.Second)
	prev := []Scrape{scrape(t, agentA, t0, "agent-a-1.prom"), scrape(t, agentB, t0, "agent-b-1.prom"), scrape(t, wp, t0, "waypoint-1.prom")}
	cur := []Scrape{scrape(t, agentA, t1, "agent-a-2.prom"), scrape(t, agentB, t1, "agent-b-2.prom"), scrape(t, wp, t1, "waypoint-2.prom"),
		{Target: agentC, Time: t1, Err: errors.New("connection refused")}}
	g := Build(prev, cur, t1)

	if g.WindowSeconds != 5 {
		t.Errorf("window = %v, want 5", g.WindowSeconds)
	}
	want := map[string]Edge{
		// Both proxies of the edge reported it: the destination's samples
		// count, once.
		"default/productpage-v1->default/details-v1": {Protocol: "tcp", Reporter: "destination", MTLS: MTLS,
			ConnectionsPerSecond: 2, BytesPerSecond: 1200, OpenConnections: 2, Connections: 20, Bytes: 12000},
		"outside/plain->default/productpage-v1": {Protocol: "tcp", Reporter: "destination", MTLS: Plaintext,
			ConnectionsPerSecond: 1, BytesPerSecond: 400, Connections: 8, Bytes: 3200},
		// No destination proxy: the source's samples; idle in the window,
		// so the mark comes from all its series.
		"default/productpage-v1->unknown": {Protocol: "tcp", Reporter: "source", MTLS: Plaintext, Connections: 1, Bytes: 30},
		// The agent restarted (counters 100 -> 5): counted from zero, and
		// the plaintext series from before the restart is gone.
		"default/reviews-v2->default/ratings-v1": {Protocol: "tcp", Reporter: "destination", MTLS: MTLS,
			ConnectionsPerSecond: 1, BytesPerSecond: 300, OpenConnections: 1, Connections: 5, Bytes: 1500},
		// HTTP from the waypoint: 90 OK and 10 errors in 5 s.
		"default/productpage-v1->default/reviews-v2": {Protocol: "http", MTLS: MTLS,
			RequestsPerSecond: 20, ErrorRate: 0.1, Requests: 200, Errors: 10},
	}
	if len(g.Edges) != len(want) {
		t.Errorf("%d edges, want %d: %+v", len(g.Edges), len(want), g.Edges)
	}
	for _, e := range g.Edges {
		w, ok := want[e.ID]
		if !ok {
			t.Errorf("unexpected edge %+v", e)
			continue
		}
		w.ID, w.Source, w.Destination = e.ID, e.Source, e.Destination
		if !sameEdge(e, w) {
			t.Errorf("edge %s:\n got %+v\nwant %+v", e.ID, e, w)
		}
	}
	for _, e := range g.Edges {
		// The window's 100 requests: 10 under 1 ms, 50 under 5, 90
		// under 10, all under 25 (both series' buckets summed).
		if e.ID == "default/productpage-v1->default/reviews-v2" {
			checkLatency(t, e, 5, 23.5)
		} else if e.LatencyP50 != nil || e.LatencyP99 != nil {
			t.Errorf("TCP edge %s has a request latency", e.ID)
		}
	}
	var ids []string
	for _, n := range g.Nodes {
		ids = append(ids, n.ID)
	}
	wantNodes := []string{"default/details-v1", "default/productpage-v1", "default/ratings-v1", "default/reviews-v2", "outside/plain", "unknown"}
	if len(ids) != len(wantNodes) {
		t.Fatalf("nodes %v, want %v", ids, wantNodes)
	}
	for i := range ids {
		if ids[i] != wantNodes[i] {
			t.Errorf("nodes %v, want %v", ids, wantNodes)
			break
		}
	}
	if len(g.Targets) != 4 {
		t.Fatalf("targets %+v", g.Targets)
	}
	var failed int
	for _, st := range g.Targets {
		if !st.OK {
			failed++
			if st.Pod != agentC.Pod || st.Error == "" {
				t.Errorf("failed target %+v", st)
			}
		}
	}
	if failed != 1 {
		t.Errorf("%d failed targets, want 1", failed)
	}
}

func checkLatency(t *testing.T, e Edge, p50, p99 float64) {
	t.Helper()
	if e.LatencyP50 == nil || e.LatencyP99 == nil || math.Abs(*e.LatencyP50-p50) > 1e-9 || math.Abs(*e.LatencyP99-p99) > 1e-9 {
		t.Errorf("edge %s: latency p50 %v p99 %v, want %v and %v", e.ID, deref(e.LatencyP50), deref(e.LatencyP99), p50, p99)
	}
}

func deref(p *float64) any {
	if p == nil {
		return "none"
	}
	return *p
}

// TestQuantile: Prometheus's histogram_quantile on cumulative buckets.
func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	for _, c := range []struct {
		name    string
		q       float64
		buckets map[float64]float64
		want    float64
		ok      bool
	}{
		{"interpolated in the bucket", 0.5, map[float64]float64{1: 10, 5: 50, 10: 90, inf: 100}, 5, true},
		{"the lowest bucket starts at 0", 0.5, map[float64]float64{10: 10, inf: 10}, 5, true},
		{"in +Inf: the highest finite bound", 0.99, map[float64]float64{1: 10, 5: 50, inf: 100}, 5, true},
		{"empty buckets before are skipped", 0.5, map[float64]float64{1: 0, 5: 0, 10: 4, inf: 4}, 7.5, true},
		{"no observations", 0.5, map[float64]float64{1: 0, inf: 0}, 0, false},
		{"only +Inf", 0.5, map[float64]float64{inf: 3}, 0, false},
		{"no +Inf", 0.5, map[float64]float64{1: 3}, 0, false},
	} {
		got, ok := quantile(c.q, c.buckets)
		if ok != c.ok || math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s: quantile(%v) = %v, %v; want %v, %v", c.name, c.q, got, ok, c.want, c.ok)
		}
	}
}

func sameEdge(a, b Edge) bool {
	eq := func(x, y float64) bool { return math.Abs(x-y) < 1e-9 }
	return a.ID == b.ID && a.Protocol == b.Protocol && a.Reporter == b.Reporter && a.MTLS == b.MTLS &&
		eq(a.RequestsPerSecond, b.RequestsPerSecond) && eq(a.ErrorRate, b.ErrorRate) &&
		eq(a.ConnectionsPerSecond, b.ConnectionsPerSecond) && eq(a.BytesPerSecond, b.BytesPerSecond) &&
		eq(a.OpenConnections, b.OpenConnections) && eq(a.Requests, b.Requests) && eq(a.Errors, b.Errors) &&
		eq(a.Connections, b.Connections) && eq(a.Bytes, b.Bytes)
}

func TestBuildFirstScrapeHasTotalsButNoRates(t *testing.T) {
	t0 := time.Now()
	g := Build(nil, []Scrape{scrape(t, agentA, t0, "agent-a-2.prom")}, t0)
	if g.WindowSeconds != 0 {
		t.Errorf("window = %v, want 0", g.WindowSeconds)
	}
	for _, e := range g.Edges {
		if e.ConnectionsPerSecond != 0 || e.BytesPerSecond != 0 {
			t.Errorf("edge %s has rates without a previous scrape: %+v", e.ID, e)
		}
		if e.ID == "default/productpage-v1->default/details-v1" && e.Connections != 20 {
			t.Errorf("total connections = %v, want 20", e.Connections)
		}
	}
}

func TestBuildMTLSMarks(t *testing.T) {
	lbl := func(sec string) map[string]string {
		return map[string]string{"reporter": "destination", "source_workload": "a", "source_workload_namespace": "default",
			"destination_workload": "waypoint", "destination_workload_namespace": "default", "connection_security_policy": sec}
	}
	t0 := time.Now()
	t1 := t0.Add(time.Second)
	for _, tc := range []struct {
		name      string
		prev, cur []Sample
		want      string
	}{
		{"all mutual TLS", nil, []Sample{{metricTCPOpened, lbl("mutual_tls"), 1}}, MTLS},
		{"none", nil, []Sample{{metricTCPOpened, lbl("none"), 1}}, Plaintext},
		{"both active", nil, []Sample{{metricTCPOpened, lbl("none"), 1}, {metricTCPOpened, lbl("mutual_tls"), 1}}, Mixed},
		{"plaintext in the past, mTLS now",
			[]Sample{{metricTCPOpened, lbl("none"), 4}, {metricTCPOpened, lbl("mutual_tls"), 1}},
			[]Sample{{metricTCPOpened, lbl("none"), 4}, {metricTCPOpened, lbl("mutual_tls"), 3}}, MTLS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := Build([]Scrape{{Target: wp, Time: t0, Samples: tc.prev}}, []Scrape{{Target: wp, Time: t1, Samples: tc.cur}}, t1)
			if len(g.Edges) != 1 || g.Edges[0].MTLS != tc.want {
				t.Fatalf("edges %+v, want one marked %s", g.Edges, tc.want)
			}
			for _, n := range g.Nodes {
				if n.Waypoint != (n.ID == "default/waypoint") {
					t.Errorf("node %+v: waypoint mark wrong", n)
				}
			}
		})
	}
}

func TestParseMetricsRejectsGarbage(t *testing.T) {
	if _, err := ParseMetrics(strings.NewReader("istio_tcp_connections_opened_total{a=\"b\" 1\n")); err == nil {
		t.Fatal("want a parse error")
	}
}

// TestBuildRealScrapes uses two node agents' /metrics as scraped from the
// e2e cluster (TestDashboard) with Bookinfo enrolled and a client outside
// the mesh.
func TestBuildRealScrapes(t *testing.T) {
	now := time.Now()
	g := Build(nil, []Scrape{scrape(t, agentA, now, "real-node-agent-a.prom"), scrape(t, agentB, now, "real-node-agent-b.prom")}, now)
	got := map[string]Edge{}
	for _, e := range g.Edges {
		got[e.ID] = e
	}
	for _, w := range []Edge{
		// curl and productpage are on different nodes: both agents report
		// (source 8, destination 16 when scraped); the destination counts.
		{ID: "default/curl->default/productpage-v1", Reporter: "destination", MTLS: MTLS, Connections: 16},
		{ID: "default/productpage-v1->default/details-v1", Reporter: "destination", MTLS: MTLS, Connections: 2},
		// Only the source had reported this edge when scraped.
		{ID: "default/reviews-v2->default/ratings-v1", Reporter: "source", MTLS: MTLS, Connections: 1},
		{ID: "outside/plain->default/productpage-v1", Reporter: "destination", MTLS: Plaintext, Connections: 2},
	} {
		e, ok := got[w.ID]
		if !ok {
			t.Errorf("no edge %s in %v", w.ID, g.Edges)
			continue
		}
		if e.Reporter != w.Reporter || e.MTLS != w.MTLS || e.Connections != w.Connections || e.Protocol != "tcp" {
			t.Errorf("edge %s: got reporter %s, %s, %v connections, %s; want %s, %s, %v, tcp",
				w.ID, e.Reporter, e.MTLS, e.Connections, e.Protocol, w.Reporter, w.MTLS, w.Connections)
		}
	}
}

// TestGraphFor: a reader scoped to a namespace sees the edges with an end
// in it, their nodes and its own proxies; nothing of other namespaces.
func TestGraphFor(t *testing.T) {
	node := func(id string) Node { return newNode(id, false) }
	g := Graph{
		Nodes: []Node{node("a/web"), node("a/db"), node("b/app"), node("b/db"), node(unknown)},
		Edges: []Edge{
			{ID: "a/web->a/db", Source: "a/web", Destination: "a/db"},
			{ID: "b/app->a/db", Source: "b/app", Destination: "a/db"},
			{ID: "b/app->b/db", Source: "b/app", Destination: "b/db"},
			{ID: "unknown->b/app", Source: unknown, Destination: "b/app"},
		},
		Targets: []TargetStatus{
			{Target: Target{Kind: KindNodeAgent, Namespace: "weft-system", Pod: "agent"}},
			{Target: Target{Kind: KindWaypoint, Namespace: "a", Pod: "waypoint-a"}},
			{Target: Target{Kind: KindWaypoint, Namespace: "b", Pod: "waypoint-b"}},
		},
	}
	ids := func(g Graph) (nodes, edges, targets []string) {
		for _, n := range g.Nodes {
			nodes = append(nodes, n.ID)
		}
		for _, e := range g.Edges {
			edges = append(edges, e.ID)
		}
		for _, t := range g.Targets {
			targets = append(targets, t.Pod)
		}
		return nodes, edges, targets
	}
	for _, tc := range []struct {
		scope                 access.Scope
		nodes, edges, targets []string
	}{
		{access.Namespace("a"), []string{"a/web", "a/db", "b/app"}, []string{"a/web->a/db", "b/app->a/db"}, []string{"waypoint-a"}},
		{access.Namespace("b"), []string{"a/db", "b/app", "b/db", unknown}, []string{"b/app->a/db", "b/app->b/db", "unknown->b/app"}, []string{"waypoint-b"}},
		{access.Namespace("c"), nil, nil, nil},
		{access.Scope{}, nil, nil, nil},
		{access.Everything(), []string{"a/web", "a/db", "b/app", "b/db", unknown},
			[]string{"a/web->a/db", "b/app->a/db", "b/app->b/db", "unknown->b/app"}, []string{"agent", "waypoint-a", "waypoint-b"}},
	} {
		nodes, edges, targets := ids(g.For(tc.scope))
		if !slices.Equal(nodes, tc.nodes) || !slices.Equal(edges, tc.edges) || !slices.Equal(targets, tc.targets) {
			t.Errorf("%v: nodes %v edges %v targets %v\nwant %v %v %v", tc.scope, nodes, edges, targets, tc.nodes, tc.edges, tc.targets)
		}
	}
}

// TestWaypointSpeaksOnlyForWhatItServes is the attack of a tenant that
// tampered with its own namespace's waypoint: it reports requests between
// other namespaces. The graph keeps what the waypoint reports about
// destinations it serves (its namespace, and shop, which the control
// plane sends through it) and unidentified ones, and drops the rest,
// counting it on the target.
func TestWaypointSpeaksOnlyForWhatItServes(t *testing.T) {
	req := func(src, dstNS, dst string) Sample {
		return Sample{metricRequests, map[string]string{"reporter": "waypoint", "source_workload": src, "source_workload_namespace": "default",
			"destination_workload": dst, "destination_workload_namespace": dstNS, "response_code": "200"}, 5}
	}
	tampered := wp
	tampered.Speaks = map[string]bool{"default": true, "shop": true}
	now := time.Now()
	g := Build(nil, []Scrape{{Target: tampered, Time: now, Samples: []Sample{
		req("a", "default", "b"), req("a", "shop", "cart"), req("a", "bank", "ledger"), req("a", "kube-system", "coredns"),
		req("a", "", ""), // a destination it could not identify names no one
	}}}, now)
	var got []string
	for _, e := range g.Edges {
		got = append(got, e.ID)
	}
	slices.Sort(got)
	if want := []string{"default/a->default/b", "default/a->shop/cart", "default/a->unknown"}; !slices.Equal(got, want) {
		t.Errorf("edges %v, want %v", got, want)
	}
	if len(g.Targets) != 1 || g.Targets[0].Dropped != 2 {
		t.Errorf("targets %+v, want the waypoint with 2 dropped samples", g.Targets)
	}
}
