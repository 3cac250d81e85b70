package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// box is an element's rectangle on the rendered page (CSS pixels).
type box struct{ X, Y, W, H float64 }

func (a box) overlaps(b box) bool {
	return a.X < b.X+b.W && b.X < a.X+a.W && a.Y < b.Y+b.H && b.Y < a.Y+a.H
}

func (a box) contains(b box) bool {
	return b.X >= a.X && b.Y >= a.Y && b.X+b.W <= a.X+a.W && b.Y+b.H <= a.Y+a.H
}

// rendered is what measureJS reads from the page.
type rendered struct {
	SVG   box
	Nodes []struct {
		ID         string
		Rect, Text box
	}
	Labels []struct {
		Edge, Text string
		Box        box
	}
	Rows []struct{ Edge, P50, P99 string }
}

// measureJS returns, as JSON, the boxes the browser laid out: the graph,
// each node's box and label, each edge's label, and the table's latency
// cells.
const measureJS = `(() => {
  const r = e => { const b = e.getBoundingClientRect(); return { x: b.x, y: b.y, w: b.width, h: b.height }; };
  return JSON.stringify({
    svg: r(document.getElementById("graph")),
    nodes: [...document.querySelectorAll("#graph g.node")].map(g => ({ id: g.dataset.node, rect: r(g.querySelector("rect")), text: r(g.querySelector("text")) })),
    labels: [...document.querySelectorAll("#graph g.edge")].map(g => ({ edge: g.dataset.edge, text: g.querySelector("text").textContent, box: r(g.querySelector("text")) })),
    rows: [...document.querySelectorAll("#edges tbody tr")].map(tr => ({ edge: tr.dataset.edge, p50: tr.cells[6].textContent, p99: tr.cells[7].textContent })),
  });
})()`

// TestPageLayout loads the page in headless Chromium with graphs served
// from a fixture (Bookinfo through an ingress gateway and a waypoint, with
// long names, and a dense graph with back edges and a loop) and checks the
// layout as the browser drew it: no node box overlaps another, every node
// label fits in its box, no edge label overlaps another label or a node,
// everything is inside the graph, and HTTP edges show their latency.
func TestPageLayout(t *testing.T) {
	chromium, err := exec.LookPath("chromium-headless-shell")
	if err != nil {
		msg := "chromium-headless-shell not in PATH (apt-get install chromium-headless-shell): the layout is checked in a real browser"
		if os.Getenv("WEFT_E2E_REQUIRE") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	for name, g := range map[string]Graph{"bookinfo": bookinfoGraph(), "dense": denseGraph(14, 40)} {
		t.Run(name, func(t *testing.T) {
			got := render(t, chromium, g)
			checkLayout(t, g, got)
		})
	}
}

func render(t *testing.T, chromium string, g Graph) rendered {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /dashboard", func(w http.ResponseWriter, _ *http.Request) { w.Write(page) })
	mux.HandleFunc("GET /dashboard/api/graph", func(w http.ResponseWriter, _ *http.Request) { json.NewEncoder(w).Encode(g) })
	srv := httptest.NewServer(mux)
	defer srv.Close()

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.WindowSize(1600, 1000))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	ctx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	ctx, cancelBrowser := chromedp.NewContext(ctx)
	defer cancelBrowser()
	if _, err := chromedp.Run(ctx, chromedp.Navigate(srv.URL+"/dashboard")); err != nil {
		t.Fatalf("load the page in %s: %v", chromium, err)
	}
	if _, err := chromedp.Run(ctx, chromedp.WaitReady(`body[data-loaded="true"]`)); err != nil {
		status, _ := chromedp.Run(context.WithoutCancel(ctx), chromedp.Evaluate[string](`document.getElementById("status").textContent`))
		t.Fatalf("the page never drew the graph: %v; its status line: %q", err, status)
	}
	out, err := chromedp.Run(ctx, chromedp.Evaluate[string](measureJS))
	if err != nil {
		t.Fatalf("measure the page: %v", err)
	}
	var r rendered
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func checkLayout(t *testing.T, g Graph, r rendered) {
	t.Helper()
	if len(r.Nodes) != len(g.Nodes) || len(r.Labels) != len(g.Edges) {
		t.Fatalf("page drew %d nodes and %d edges, want %d and %d", len(r.Nodes), len(r.Labels), len(g.Nodes), len(g.Edges))
	}
	for i, n := range r.Nodes {
		if !n.Rect.contains(n.Text) {
			t.Errorf("node %s: label %+v sticks out of its box %+v", n.ID, n.Text, n.Rect)
		}
		if !r.SVG.contains(n.Rect) {
			t.Errorf("node %s %+v outside the graph %+v", n.ID, n.Rect, r.SVG)
		}
		for _, m := range r.Nodes[i+1:] {
			if n.Rect.overlaps(m.Rect) {
				t.Errorf("nodes %s and %s overlap", n.ID, m.ID)
			}
		}
	}
	for i, l := range r.Labels {
		if !r.SVG.contains(l.Box) {
			t.Errorf("label of %s %+v outside the graph %+v", l.Edge, l.Box, r.SVG)
		}
		for _, n := range r.Nodes {
			if l.Box.overlaps(n.Rect) {
				t.Errorf("label of %s (%q) covers node %s", l.Edge, l.Text, n.ID)
			}
		}
		for _, m := range r.Labels[i+1:] {
			if l.Box.overlaps(m.Box) {
				t.Errorf("labels of %s (%q) and %s (%q) overlap", l.Edge, l.Text, m.Edge, m.Text)
			}
		}
	}
	checkLatencyCells(t, g, r)
}

func checkLatencyCells(t *testing.T, g Graph, r rendered) {
	t.Helper()
	want := map[string][2]string{}
	for _, e := range g.Edges {
		want[e.ID] = [2]string{"-", "-"}
		if e.LatencyP50 != nil {
			want[e.ID] = [2]string{msText(*e.LatencyP50), msText(*e.LatencyP99)}
		}
	}
	for _, row := range r.Rows {
		if w := want[row.Edge]; row.P50 != w[0] || row.P99 != w[1] {
			t.Errorf("table row %s: p50 %q p99 %q, want %q %q", row.Edge, row.P50, row.P99, w[0], w[1])
		}
	}
}

// msText is how the page writes a latency.
func msText(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f ms", v)
	}
	return fmt.Sprintf("%.1f ms", v)
}

func bookinfoGraph() Graph {
	g := Graph{GeneratedAt: time.Now(), WindowSeconds: 5, Targets: []TargetStatus{}}
	ms := func(v float64) *float64 { return &v }
	add := func(src, dst, proto, mtls string, p50, p99 float64) {
		e := Edge{ID: src + "->" + dst, Source: src, Destination: dst, Protocol: proto, MTLS: mtls,
			RequestsPerSecond: 12.5, ErrorRate: 0.02, ConnectionsPerSecond: 3.25, BytesPerSecond: 123456}
		if proto == "http" {
			e.LatencyP50, e.LatencyP99 = ms(p50), ms(p99)
		}
		g.Edges = append(g.Edges, e)
	}
	gw, pp, wp := "istio-system/istio-ingressgateway", "default/productpage-v1", "default/waypoint"
	add(gw, pp, "tcp", MTLS, 0, 0)
	add("outside/plain", pp, "tcp", Plaintext, 0, 0)
	add("unknown", gw, "tcp", Plaintext, 0, 0)
	add(pp, "default/details-v1", "http", MTLS, 2.5, 9.9)
	add(pp, wp, "tcp", MTLS, 0, 0)
	for _, v := range []string{"v1", "v2", "v3"} {
		add(pp, "default/reviews-"+v, "http", MTLS, 4.1, 23.5)
		add(wp, "default/reviews-"+v, "tcp", MTLS, 0, 0)
	}
	add("default/reviews-v2", "default/ratings-v1", "http", Mixed, 1.2, 3.4)
	add("default/reviews-v3", "default/ratings-v1", "http", MTLS, 1.1, 3.3)
	return withNodes(g, wp)
}

// denseGraph has n nodes and m edges between them, forward and back, and
// a loop.
func denseGraph(n, m int) Graph {
	g := Graph{GeneratedAt: time.Now(), WindowSeconds: 60, Targets: []TargetStatus{}}
	id := func(i int) string { return fmt.Sprintf("team-%d/service-with-a-long-name-%d", i%3, i) }
	seen := map[string]bool{}
	for k := 0; len(g.Edges) < m; k++ {
		src, dst := id(k%n), id((k*7+k/n+3)%n)
		if len(g.Edges) == m-1 {
			dst = src
		}
		if seen[src+dst] {
			continue
		}
		seen[src+dst] = true
		p50, p99 := float64(k), float64(10*k)
		g.Edges = append(g.Edges, Edge{ID: src + "->" + dst, Source: src, Destination: dst, Protocol: "http", MTLS: MTLS,
			RequestsPerSecond: float64(k), LatencyP50: &p50, LatencyP99: &p99})
	}
	return withNodes(g)
}

func withNodes(g Graph, waypoints ...string) Graph {
	seen := map[string]bool{}
	for _, e := range g.Edges {
		for _, id := range []string{e.Source, e.Destination} {
			if !seen[id] {
				seen[id] = true
				n := newNode(id, false)
				for _, w := range waypoints {
					n.Waypoint = n.Waypoint || w == id
				}
				g.Nodes = append(g.Nodes, n)
			}
		}
	}
	return g
}
