package main

import "fmt"

// A target is one figure of the performance issue: a limit on a measured
// value or on a ratio taken per run between two figures of the same run.
type target struct {
	Area   string
	What   string
	Op     string // "<=" or ">="
	Limit  float64
	Unit   string // of the value: "x" for a ratio
	Anchor string // a published or peer figure to read it against
	// measure returns the value of every run; nil with NotMeasured set
	// when no benchmark measures it yet.
	measure     func(*Results) ([]float64, error)
	NotMeasured string
	// Part says what the benchmark leaves out of what ships, when it
	// measures a part of it: within the limit, such a target is "met by a
	// part" (with Part as why), which does not count as met.
	Part string
}

// ref names one figure: the package (a suffix of its import path), the
// leaf and the unit.
type ref struct{ pkg, leaf, unit string }

func (r ref) values(res *Results) ([]float64, error) {
	f, err := res.figure(r.pkg, r.leaf, r.unit)
	if err != nil {
		return nil, err
	}
	return f.Values, nil
}

// value is a figure as measured.
func value(r ref) func(*Results) ([]float64, error) { return scaled(r, 1) }

// scaled is a figure times k (per proxy: a sum over two proxies halved).
func scaled(r ref, k float64) func(*Results) ([]float64, error) {
	return func(res *Results) ([]float64, error) {
		v, err := r.values(res)
		if err != nil {
			return nil, err
		}
		out := make([]float64, len(v))
		for i := range v {
			out[i] = v[i] * k
		}
		return out, nil
	}
}

// ratio is a/b per run: both figures come from the same top-level
// benchmark, whose i-th run measured both.
func ratio(a, b ref) func(*Results) ([]float64, error) {
	return func(res *Results) ([]float64, error) {
		va, err := a.values(res)
		if err != nil {
			return nil, err
		}
		vb, err := b.values(res)
		if err != nil {
			return nil, err
		}
		if len(va) != len(vb) {
			return nil, fmt.Errorf("%s ran %d times, %s %d: not paired", a.leaf, len(va), b.leaf, len(vb))
		}
		out := make([]float64, len(va))
		for i := range va {
			if vb[i] <= 0 {
				// An added latency at or below zero (the peer was as fast
				// as direct, within noise) gives no meaningful ratio.
				return nil, fmt.Errorf("%s %s was %s in run %d: no ratio", b.leaf, b.unit, num(vb[i]), i+1)
			}
			out[i] = va[i] / vb[i]
		}
		return out, nil
	}
}

// outcome is a target evaluated against one Results.
type outcome struct {
	target
	Values []float64
	Median float64
	Min    float64
	Max    float64
	Status string // met, met by a part, NOT MET, shown (no limit), not measured
	Why    string
}

// evaluate judges every target by the median of its runs.
func evaluate(res *Results) []outcome {
	var out []outcome
	for _, t := range targets() {
		o := outcome{target: t, Status: "not measured", Why: t.NotMeasured}
		if t.measure != nil {
			if v, err := t.measure(res); err != nil {
				o.Why = err.Error()
			} else {
				f := Figure{Values: v}
				f.summarize()
				o.Values, o.Median, o.Min, o.Max = v, f.Median, f.Min, f.Max
				o.Status = "NOT MET"
				within := (t.Op == "<=" && f.Median <= t.Limit) || (t.Op == ">=" && f.Median >= t.Limit)
				switch {
				case t.Op == "": // a figure the issue asks to show, with no limit
					o.Status = "shown"
				case within && t.Part != "":
					o.Status, o.Why = "met by a part", t.Part
				case within:
					o.Status = "met"
				}
			}
		}
		out = append(out, o)
	}
	return out
}

// met counts the targets met and measured.
func met(outs []outcome) (met, measured, targets int) {
	for _, o := range outs {
		if o.Op == "" { // a figure shown, not a target
			continue
		}
		targets++
		if o.Status != "not measured" {
			measured++
		}
		if o.Status == "met" {
			met++
		}
	}
	return met, measured, targets
}
