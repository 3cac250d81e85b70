package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"golang.org/x/perf/benchfmt"
)

// Results is the machine-readable record of one `make bench`: every
// figure every benchmark reported, each with the value of every run.
type Results struct {
	Date   string `json:"date"`
	Commit string `json:"commit"`
	Count  int    `json:"count"` // runs asked for (go test -count)
	// GoFlags is the GOFLAGS the benchmarks were built with (make sets the
	// build tags of what it ships there).
	GoFlags string            `json:"goflags,omitempty"`
	Machine map[string]string `json:"machine"` // goos, goarch, cpu, cores as go test printed them
	Leaves  []*Leaf           `json:"benchmarks"`
}

// Leaf is one benchmark (a full sub-benchmark name, without GOMAXPROCS)
// and its figures by unit.
type Leaf struct {
	Pkg     string             `json:"pkg"`
	Name    string             `json:"name"`
	Figures map[string]*Figure `json:"figures"`
}

// Figure is one unit of one leaf: the value of every run, in run order (the
// i-th values of two leaves of one top-level benchmark come from the same
// run, so ratios between them are taken per run), and their spread.
type Figure struct {
	Values []float64 `json:"values"`
	Min    float64   `json:"min"`
	Median float64   `json:"median"`
	Max    float64   `json:"max"`
}

// parse reads `go test -bench` output. Units are kept as the benchmarks
// reported them (benchfmt would turn ns/op into sec/op).
func parse(r io.Reader) (*Results, error) {
	res := &Results{Machine: map[string]string{}}
	index := map[[2]string]*Leaf{}
	br := benchfmt.NewReader(r, "go test output")
	for br.Scan() {
		switch rec := br.Result().(type) {
		case *benchfmt.SyntaxError:
			return nil, rec
		case *benchfmt.Result:
			leaf := res.leaf(index, rec)
			for _, v := range rec.Values {
				unit, val := v.Unit, v.Value
				if v.OrigUnit != "" {
					unit, val = v.OrigUnit, v.OrigValue
				}
				f := leaf.Figures[unit]
				if f == nil {
					f = &Figure{}
					leaf.Figures[unit] = f
				}
				f.Values = append(f.Values, val)
			}
		}
	}
	if err := br.Err(); err != nil {
		return nil, err
	}
	for _, l := range res.Leaves {
		for _, f := range l.Figures {
			f.summarize()
		}
	}
	return res, nil
}

// leaf finds or adds rec's leaf, and records the machine it ran on.
func (res *Results) leaf(index map[[2]string]*Leaf, rec *benchfmt.Result) *Leaf {
	for _, k := range []string{"goos", "goarch", "cpu"} {
		if v := rec.GetConfig(k); v != "" {
			res.Machine[k] = strings.TrimSpace(v)
		}
	}
	base, parts := rec.Name.Parts()
	name := "Benchmark" + string(base) // benchfmt drops the prefix
	for _, p := range parts {
		if strings.HasPrefix(string(p), "/") {
			name += string(p)
		} else {
			res.Machine["gomaxprocs"] = strings.TrimPrefix(string(p), "-")
		}
	}
	key := [2]string{rec.GetConfig("pkg"), name}
	if l := index[key]; l != nil {
		return l
	}
	l := &Leaf{Pkg: key[0], Name: name, Figures: map[string]*Figure{}}
	res.Leaves = append(res.Leaves, l)
	index[key] = l
	return l
}

func (f *Figure) summarize() {
	s := slices.Sorted(slices.Values(f.Values))
	f.Min, f.Max = s[0], s[len(s)-1]
	if n := len(s); n%2 == 1 {
		f.Median = s[n/2]
	} else {
		f.Median = (s[n/2-1] + s[n/2]) / 2
	}
}

// figure is a leaf's figure: leaf is "pkg-suffix BenchmarkName/sub".
func (res *Results) figure(pkgSuffix, name, unit string) (*Figure, error) {
	for _, l := range res.Leaves {
		if l.Name == name && strings.HasSuffix(l.Pkg, pkgSuffix) {
			if f := l.Figures[unit]; f != nil {
				return f, nil
			}
			return nil, fmt.Errorf("%s reported no %s", name, unit)
		}
	}
	return nil, fmt.Errorf("%s did not run", name)
}
