package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const sample = `goos: linux
goarch: amd64
pkg: github.com/weft-mesh/weft/waypoint/bench
cpu: Test CPU
BenchmarkWaypoint/direct/fixed-1000rps-2    3000   100000 ns/op   100.0 p50_us
BenchmarkWaypoint/weft/fixed-1000rps-2      3000   500000 ns/op   500.0 p50_us   400.0 added_p50_us   0.30 vcpu_per_1000rps   40.0 rss_MB
BenchmarkWaypoint/nginx/fixed-1000rps-2     3000   200000 ns/op   200.0 p50_us   100.0 added_p50_us   0.10 vcpu_per_1000rps
BenchmarkWaypoint/direct/fixed-1000rps-2    3000   100000 ns/op   100.0 p50_us
BenchmarkWaypoint/weft/fixed-1000rps-2      3000   500000 ns/op   500.0 p50_us   150.0 added_p50_us   0.20 vcpu_per_1000rps   20.0 rss_MB
BenchmarkWaypoint/nginx/fixed-1000rps-2     3000   200000 ns/op   200.0 p50_us   100.0 added_p50_us   0.10 vcpu_per_1000rps
BenchmarkWaypoint/weft/fixed-1000rps-2      3000   500000 ns/op   500.0 p50_us   300.0 added_p50_us   0.25 vcpu_per_1000rps   25.0 rss_MB
BenchmarkWaypoint/nginx/fixed-1000rps-2     3000   200000 ns/op   200.0 p50_us   200.0 added_p50_us   0.10 vcpu_per_1000rps
PASS
`

func parsed(t *testing.T) *Results {
	t.Helper()
	res, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestParseKeepsUnitsAndRuns: figures keep the benchmarks' own units (ns/op
// stays ns/op) and every run's value, and the GOMAXPROCS suffix is not part
// of a leaf's name.
func TestParseKeepsUnitsAndRuns(t *testing.T) {
	res := parsed(t)
	f, err := res.figure("waypoint/bench", "BenchmarkWaypoint/weft/fixed-1000rps", "added_p50_us")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Values) != 3 || f.Min != 150 || f.Median != 300 || f.Max != 400 {
		t.Errorf("added_p50_us %+v, want 3 runs, 150/300/400", f)
	}
	if _, err := res.figure("waypoint/bench", "BenchmarkWaypoint/direct/fixed-1000rps", "ns/op"); err != nil {
		t.Error(err)
	}
	if res.Machine["cpu"] != "Test CPU" || res.Machine["gomaxprocs"] != "2" {
		t.Errorf("machine %v", res.Machine)
	}
}

// TestRatiosArePerRun: a ratio between two leaves is taken run by run
// (400/100, 150/100, 300/200), not between their medians (300/100).
func TestRatiosArePerRun(t *testing.T) {
	var got *outcome
	for _, o := range evaluate(parsed(t)) {
		if o.What == "added p50 at 1000 req/s vs nginx's" {
			got = &o
		}
	}
	if got == nil || got.Min != 1.5 || got.Median != 1.5 || got.Max != 4 || got.Status != "met" {
		t.Fatalf("%+v, want min 1.5, median 1.5, max 4, met", got)
	}
}

// TestMissingFiguresAreNotJudged: a target whose benchmark did not run, or
// ran fewer times than its peer, is "not measured" and says why; it is
// never met.
func TestMissingFiguresAreNotJudged(t *testing.T) {
	for _, o := range evaluate(parsed(t)) {
		switch o.What {
		case "max req/s (16 clients) vs nginx's", "added p50 at 1000 req/s vs haproxy's":
			if o.Status != "not measured" || !strings.Contains(o.Why, "did not run") {
				t.Errorf("%s: %s (%s), want not measured: did not run", o.What, o.Status, o.Why)
			}
		case "RSS at 1000 req/s":
			if o.Status != "met by a part" || o.Median != 25 { // within its limit; measured without the xDS connection
				t.Errorf("RSS: %+v", o)
			}
		}
	}
	short := strings.Replace(sample, "BenchmarkWaypoint/nginx/fixed-1000rps-2     3000   200000 ns/op   200.0 p50_us   200.0 added_p50_us   0.10 vcpu_per_1000rps\n", "", 1)
	res, err := parse(strings.NewReader(short))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range evaluate(res) {
		if o.What == "added p50 at 1000 req/s vs nginx's" && (o.Status != "not measured" || !strings.Contains(o.Why, "not paired")) {
			t.Errorf("unpaired runs: %s (%s)", o.Status, o.Why)
		}
	}
	// A peer's added latency at or below zero in any run: no ratio.
	res = parsed(t)
	f, _ := res.figure("waypoint/bench", "BenchmarkWaypoint/nginx/fixed-1000rps", "added_p50_us")
	f.Values[1] = -3
	for _, o := range evaluate(res) {
		if o.What == "added p50 at 1000 req/s vs nginx's" && (o.Status != "not measured" || !strings.Contains(o.Why, "no ratio")) {
			t.Errorf("negative denominator: %s (%s)", o.Status, o.Why)
		}
	}
}

// TestFigureWithoutLimitIsShown: a target with no limit (the 5,000-node
// simulation) is "shown" when measured, never met, and not measured
// without its leaf.
func TestFigureWithoutLimitIsShown(t *testing.T) {
	const what = "5,000-node simulation"
	res := &Results{Leaves: []*Leaf{{Pkg: "github.com/weft-mesh/weft/control/xds", Name: "BenchmarkPushScale/nodes=5000/pods=2000",
		Figures: map[string]*Figure{"change_p99_ms": {Values: []float64{500, 600}}}}}}
	for _, r := range []*Results{res, {}} {
		for _, o := range evaluate(r) {
			if !strings.HasPrefix(o.What, what) {
				continue
			}
			want := "shown"
			if len(r.Leaves) == 0 {
				want = "not measured"
			}
			if o.Status != want || (want == "shown" && o.Median != 550) {
				t.Errorf("%d leaves: %s, median %v; want %s", len(r.Leaves), o.Status, o.Median, want)
			}
		}
	}
}

// TestDocMatchesStoredResults: docs/benchmarks.md's generated sections are
// what make bench-docs writes from docs/benchmarks/results.json.
func TestDocMatchesStoredResults(t *testing.T) {
	res, err := load("../../docs/benchmarks/results.json")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/benchmarks.md")
	if err != nil {
		t.Fatal(err)
	}
	want, err := generate(doc, res)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(doc, want) {
		t.Error("docs/benchmarks.md differs from its results: run make bench-docs (or go run ./hack/bench docs -in docs/benchmarks/results.json)")
	}
}

// TestChartsMatchStoredResults: the charts next to the stored results are
// what those results draw (make bench-docs), not edited by hand, and a
// chart the results cannot draw is not there.
func TestChartsMatchStoredResults(t *testing.T) {
	res, err := load("../../docs/benchmarks/results.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range charts {
		want, err := c.svg(res)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join("../../docs/benchmarks", c.file))
		switch {
		case want == nil && !os.IsNotExist(err):
			t.Errorf("%s: the results cannot draw it, yet the chart is there (err %v)", c.file, err)
		case want != nil && !bytes.Equal(got, want):
			t.Errorf("%s differs from its results (err %v): run make bench-docs", c.file, err)
		}
	}
}

// TestChartPoints: a chart's line takes its leaves by name, in x order,
// only those with every part it needs, and draws once it has two.
func TestChartPoints(t *testing.T) {
	leaf := func(name string, p50 float64) *Leaf {
		return &Leaf{Pkg: "github.com/weft-mesh/weft/control/xds", Name: name,
			Figures: map[string]*Figure{"change_p50_ms": {Values: []float64{p50}, Min: p50, Median: p50, Max: p50}}}
	}
	res := &Results{Leaves: []*Leaf{
		leaf("BenchmarkPushScale/nodes=5000/pods=2000", 3),
		leaf("BenchmarkPushScale/nodes=500/pods=2000", 1),
		leaf("BenchmarkPushScale/nodes=1000/pods=10000", 9),
		leaf("BenchmarkPushTo1000Subscribers", 7),
	}}
	byNodes := charts[0]
	var xs []float64
	for _, p := range byNodes.points(res, byNodes.lines[0]) {
		xs = append(xs, p.x)
	}
	if !slices.Equal(xs, []float64{500, 5000}) {
		t.Fatalf("p50 by nodes at pods=2000: %v, want [500 5000]", xs)
	}
	if pts := byNodes.points(res, byNodes.lines[1]); len(pts) != 0 {
		t.Fatalf("p99 has no figures, yet %d points", len(pts))
	}
	if svg, err := byNodes.svg(res); err != nil || !bytes.Contains(svg, []byte("<svg")) {
		t.Fatalf("chart: %v, %.40q", err, svg)
	}
	if svg, _ := charts[1].svg(res); svg != nil {
		t.Fatal("a one-point line drew a chart")
	}
	md := scaleMarkdown(res)
	if strings.Count(md, "\n| ") != 3 || !strings.Contains(md, "push-vs-nodes.svg") || strings.Contains(md, "push-vs-pods.svg") {
		t.Fatalf("scale section:\n%s", md)
	}
}

// TestPartIsNotMet: a target measured on a part of what ships (the node
// agent's memory, measured without traffic) is "met by a part" within its limit,
// says what was left out, and does not count as met; over its limit it is
// not met.
func TestPartIsNotMet(t *testing.T) {
	const what = "RSS with 1,000 workloads known"
	for _, rss := range []float64{14, 16} {
		res := &Results{Leaves: []*Leaf{{Pkg: "github.com/weft-mesh/weft/node-agent/nodebench/shipped", Name: "BenchmarkShippedNodeAgent/workloads=1000/idle",
			Figures: map[string]*Figure{"rss_after_dump_MB": {Values: []float64{rss}}}}}}
		outs := evaluate(res)
		for _, o := range outs {
			if !strings.HasPrefix(o.What, what) {
				continue
			}
			want := "met by a part"
			if rss > 15 {
				want = "NOT MET"
			}
			if o.Status != want || (want == "met by a part" && !strings.Contains(o.Why, "no traffic")) {
				t.Errorf("RSS %v: %s (%s); want %s, saying what was left out", rss, o.Status, o.Why, want)
			}
		}
		if m, _, _ := met(outs); m != 0 {
			t.Errorf("RSS %v: %d targets counted met, want none", rss, m)
		}
	}
}
