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

// sweep is a family of sub-benchmarks named <bench>/<vary>=X/<fixed>: how
// some figures change with X while the rest stays fixed.
type sweep struct {
	pkg, bench   string // "control/xds", "BenchmarkPushScale"
	vary, fixed  string // "nodes", "pods=2000"
	xLabel, file string // axis label; the chart's file, next to the stored results
	title        string
}

// sweeps are the curves docs/benchmarks.md draws: how one change's
// delivery grows with the number of node agents, and with pods.
var sweeps = []sweep{
	{pkg: "control/xds", bench: "BenchmarkPushScale", vary: "nodes", fixed: "pods=2000",
		xLabel: "node agents (2,000 pods)", file: "push-vs-nodes.svg", title: "One pod change reaching every node agent"},
	{pkg: "control/xds", bench: "BenchmarkPushScale", vary: "pods", fixed: "nodes=1000",
		xLabel: "pods (1,000 node agents)", file: "push-vs-pods.svg", title: "One pod change reaching every node agent"},
}

// pushUnits are the figures each chart draws, median with min-max bars.
var pushUnits = []string{"change_p50_ms", "change_p99_ms"}

// point is one leaf of a sweep.
type point struct {
	x    float64
	leaf *Leaf
}

// points are the sweep's leaves in res, by x.
func (s sweep) points(res *Results) []point {
	var out []point
	for _, l := range res.Leaves {
		if !strings.HasSuffix(l.Pkg, "/"+s.pkg) {
			continue
		}
		parts := strings.Split(l.Name, "/")
		if len(parts) != 3 || parts[0] != s.bench || !slices.Contains(parts[1:], s.fixed) {
			continue
		}
		for _, p := range parts[1:] {
			if v, ok := strings.CutPrefix(p, s.vary+"="); ok {
				if x, err := strconv.ParseFloat(v, 64); err == nil {
					out = append(out, point{x, l})
				}
			}
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

// svg draws the sweep; nil when res has fewer than two of its points.
func (s sweep) svg(res *Results) ([]byte, error) {
	pts := s.points(res)
	if len(pts) < 2 {
		return nil, nil
	}
	p := plot.New()
	p.Title.Text = s.title
	p.X.Label.Text = s.xLabel
	p.Y.Label.Text = "ms (median, bars min-max)"
	p.Legend.Top, p.Legend.Left = true, true
	var lines []any
	for _, unit := range pushUnits {
		sp := spread{unit: unit}
		for _, pt := range pts {
			if pt.leaf.Figures[unit] != nil {
				sp.pts = append(sp.pts, pt)
			}
		}
		if len(sp.pts) < 2 {
			continue
		}
		bars, err := plotter.NewYErrorBars(sp)
		if err != nil {
			return nil, err
		}
		p.Add(bars)
		lines = append(lines, strings.TrimSuffix(strings.TrimPrefix(unit, "change_"), "_ms"), plotter.XYs(toXYs(sp)))
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

func toXYs(s spread) plotter.XYs {
	out := make(plotter.XYs, s.Len())
	for i := range out {
		out[i].X, out[i].Y = s.XY(i)
	}
	return out
}

// writeCharts writes every sweep's chart into dir; a sweep the results do
// not hold has its chart removed, not left stale.
func writeCharts(dir string, res *Results) error {
	for _, s := range sweeps {
		svg, err := s.svg(res)
		if err != nil {
			return fmt.Errorf("%s: %w", s.file, err)
		}
		path := filepath.Join(dir, s.file)
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

// scaleMarkdown is the doc's table of the push sweeps, with their charts.
func scaleMarkdown(res *Results) string {
	var b strings.Builder
	drawn := map[string]bool{} // leaf names: a leaf can be on two sweeps
	for _, s := range sweeps {
		for _, p := range s.points(res) {
			if drawn[p.leaf.Name] {
				continue
			}
			if len(drawn) == 0 {
				b.WriteString("| node agents | pods | change p50 ms | change p99 ms | heap per node agent KB | all connected s |\n|---|---|---|---|---|---|\n")
			}
			drawn[p.leaf.Name] = true
			nodes, pods := p.x, fixedValue(s.fixed)
			if s.vary == "pods" {
				nodes, pods = pods, p.x
			}
			fig := func(unit string) string {
				if f := p.leaf.Figures[unit]; f != nil {
					return fmt.Sprintf("%s (%s-%s)", num(f.Median), num(f.Min), num(f.Max))
				}
				return "-"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", num(nodes), num(pods),
				fig("change_p50_ms"), fig("change_p99_ms"), fig("heap_per_subscriber_KB"), fig("connect_all_s"))
		}
	}
	if len(drawn) == 0 {
		return "Not in these results (`BenchmarkPushScale` did not run).\n"
	}
	b.WriteString("\n")
	for _, s := range sweeps {
		if len(s.points(res)) >= 2 {
			fmt.Fprintf(&b, "![%s, by %s](benchmarks/%s)\n", s.title, s.xLabel, s.file)
		}
	}
	return b.String()
}

// fixedValue is the number in "name=N".
func fixedValue(kv string) float64 {
	_, v, _ := strings.Cut(kv, "=")
	f, _ := strconv.ParseFloat(v, 64)
	return f
}
