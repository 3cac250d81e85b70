package main

import (
	"bytes"
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// chart is a figure docs/benchmarks.md shows: lines of one unit (or
// several) against a parameter that sub-benchmark names carry as
// <vary>=X, drawn from the results by make bench-docs.
type chart struct {
	file                  string // next to the stored results
	title, xLabel, yLabel string
	pkg, bench, vary      string // "control/xds", "BenchmarkPushScale", "nodes"
	lines                 []line
}

// line is one curve: the leaves whose name has every part of need, and the
// unit drawn (median, with min-max bars).
type line struct {
	label, unit string
	need        []string
}

// charts are every chart drawn.
var charts = []chart{
	{file: "push-vs-nodes.svg", title: "One pod change reaching every node agent", xLabel: "node agents (2,000 pods)",
		yLabel: "ms (median, bars min-max)", pkg: "control/xds", bench: "BenchmarkPushScale", vary: "nodes",
		lines: []line{{"p50", "change_p50_ms", []string{"pods=2000"}}, {"p99", "change_p99_ms", []string{"pods=2000"}}}},
	{file: "push-vs-pods.svg", title: "One pod change reaching every node agent", xLabel: "pods (1,000 node agents)",
		yLabel: "ms (median, bars min-max)", pkg: "control/xds", bench: "BenchmarkPushScale", vary: "pods",
		lines: []line{{"p50", "change_p50_ms", []string{"nodes=1000"}}, {"p99", "change_p99_ms", []string{"nodes=1000"}}}},
	{file: "waypoint-latency-vs-load.svg", title: "Latency one L7 hop adds (p50 over direct)", xLabel: "offered load (req/s)",
		yLabel: "us (median, bars min-max)", pkg: "waypoint/bench", bench: "BenchmarkWaypointLoad", vary: "rps",
		lines: proxyLines("added_p50_us")},
	{file: "waypoint-cost-vs-load.svg", title: "CPU of one L7 hop", xLabel: "offered load (req/s)",
		yLabel: "vCPU per 1000 req/s (median, bars min-max)", pkg: "waypoint/bench", bench: "BenchmarkWaypointLoad", vary: "rps",
		lines: proxyLines("vcpu_per_1000rps")},
}

// proxyLines are a line of unit per proxy of BenchmarkWaypointLoad.
func proxyLines(unit string) []line {
	var out []line
	for _, p := range []string{"weft", "nginx", "haproxy"} {
		out = append(out, line{p, unit, []string{p}})
	}
	return out
}

// point is one leaf on a line.
type point struct {
	x    float64
	leaf *Leaf
}

// points are the leaves of l in res that report its unit, by x.
func (c chart) points(res *Results, l line) []point {
	var out []point
	for _, leaf := range res.Leaves {
		parts := strings.Split(leaf.Name, "/")
		if !strings.HasSuffix(leaf.Pkg, "/"+c.pkg) || parts[0] != c.bench || leaf.Figures[l.unit] == nil {
			continue
		}
		x, ok := 0.0, false
		for _, p := range parts[1:] {
			if v, found := strings.CutPrefix(p, c.vary+"="); found {
				f, err := strconv.ParseFloat(v, 64)
				x, ok = f, err == nil
			}
		}
		if ok && len(parts) == len(l.need)+2 && !slices.ContainsFunc(l.need, func(n string) bool { return !slices.Contains(parts[1:], n) }) {
			out = append(out, point{x, leaf})
		}
	}
	slices.SortFunc(out, func(a, b point) int { return cmp.Compare(a.x, b.x) })
	return out
}

// spread is one figure along a sweep: the median, with min and max as
// error bars.
type spread struct {
	pts  []point
	unit string
}

func (s spread) Len() int                    { return len(s.pts) }
func (s spread) XY(i int) (float64, float64) { return s.pts[i].x, s.pts[i].leaf.Figures[s.unit].Median }
func (s spread) YError(i int) (float64, float64) {
	f := s.pts[i].leaf.Figures[s.unit]
	return f.Median - f.Min, f.Max - f.Median
}

// svg draws the chart; nil when no line has two points.
func (c chart) svg(res *Results) ([]byte, error) {
	p := plot.New()
	p.Title.Text = c.title
	p.X.Label.Text = c.xLabel
	p.Y.Label.Text = c.yLabel
	p.Legend.Top, p.Legend.Left = true, true
	var lines []any
	for _, l := range c.lines {
		sp := spread{c.points(res, l), l.unit}
		if len(sp.pts) < 2 {
			continue
		}
		bars, err := plotter.NewYErrorBars(sp)
		if err != nil {
			return nil, err
		}
		xys, err := plotter.CopyXYs(sp)
		if err != nil {
			return nil, err
		}
		p.Add(bars)
		lines = append(lines, l.label, xys)
	}
	if len(lines) == 0 {
		return nil, nil
	}
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return nil, err
	}
	w, err := p.WriterTo(6*vg.Inch, 3.5*vg.Inch, "svg")
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	_, err = w.WriteTo(&b)
	return b.Bytes(), err
}

// writeCharts writes every chart into dir; a chart the results cannot
// draw is removed, not left stale.
func writeCharts(dir string, res *Results) error {
	for _, c := range charts {
		svg, err := c.svg(res)
		if err != nil {
			return fmt.Errorf("%s: %w", c.file, err)
		}
		path := filepath.Join(dir, c.file)
		if svg == nil {
			if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
				return err
			}
			continue
		}
		if err := os.WriteFile(path, svg, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// scaleMarkdown is the doc's table of BenchmarkPushScale, with its charts.
func scaleMarkdown(res *Results) string {
	rows := sweepRows(res, "control/xds", "BenchmarkPushScale", []string{"node agents", "pods"},
		"change_p50_ms", "change_p99_ms", "heap_per_subscriber_KB", "connect_all_s")
	if rows == "" {
		return "Not in these results (`BenchmarkPushScale` did not run).\n"
	}
	return rows + "\n" + chartLinks(res, "push-")
}

// loadMarkdown is the doc's table of BenchmarkWaypointLoad, with its
// charts.
func loadMarkdown(res *Results) string {
	rows := sweepRows(res, "waypoint/bench", "BenchmarkWaypointLoad", []string{"path", "offered req/s"},
		"p50_us", "added_p50_us", "added_p99_us", "vcpu_per_1000rps", "rss_MB", "failed_pct")
	if rows == "" {
		return "Not in these results (`BenchmarkWaypointLoad` did not run).\n"
	}
	return rows + "\n" + chartLinks(res, "waypoint-")
}

// sweepRows is a table of bench's leaves <bench>/<a>/<b> (a row each, in
// run order): the values of the two name parts (without "name="), then
// each unit's "median (min-max)". "" when there is none.
func sweepRows(res *Results, pkg, bench string, params []string, units ...string) string {
	var b strings.Builder
	rows := 0
	for _, l := range res.Leaves {
		parts := strings.Split(l.Name, "/")
		if !strings.HasSuffix(l.Pkg, "/"+pkg) || parts[0] != bench || len(parts) != 3 {
			continue
		}
		if rows == 0 {
			head := append(slices.Clone(params), units...)
			fmt.Fprintf(&b, "| %s |\n|%s\n", strings.Join(head, " | "), strings.Repeat("---|", len(head)))
		}
		rows++
		cells := []string{afterEq(parts[1]), afterEq(parts[2])}
		for _, unit := range units {
			cell := "-"
			if f := l.Figures[unit]; f != nil {
				cell = fmt.Sprintf("%s (%s-%s)", num(f.Median), num(f.Min), num(f.Max))
			}
			cells = append(cells, cell)
		}
		fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
	}
	return b.String()
}

// afterEq is what follows "=" in a name part, or the part.
func afterEq(part string) string {
	if _, v, ok := strings.Cut(part, "="); ok {
		return v
	}
	return part
}

// chartLinks are the doc's images of the drawable charts whose file
// starts with prefix.
func chartLinks(res *Results, prefix string) string {
	var b strings.Builder
	for _, c := range charts {
		if svg, err := c.svg(res); err == nil && svg != nil && strings.HasPrefix(c.file, prefix) {
			fmt.Fprintf(&b, "![%s, by %s](benchmarks/%s)\n", c.title, c.xLabel, c.file)
		}
	}
	return b.String()
}
