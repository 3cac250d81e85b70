package dashboard

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// sideKind is whose samples of an edge a side holds.
type sideKind uint8

const (
	sideTCPDestination sideKind = iota // node agent of the destination
	sideTCPSource                      // node agent of the source
	sideHTTP                           // waypoint
)

// sideKey names one side of an edge in one proxy's scrape: the edge, the
// reporter and whether the samples were mutual TLS.
type sideKey struct {
	edge   [2]string
	kind   sideKind
	secure bool
}

// totals are a side's counters summed over its series. buckets are the
// cumulative counts of the request duration histogram by upper bound
// (milliseconds; +Inf included).
type totals struct {
	opened, closed, bytes, reqs, errs float64
	buckets                           map[float64]float64
}

// reading is one target's scrape reduced to its sides' totals: what the
// scraper keeps of past rounds, a few numbers per edge and proxy instead of
// every series with its labels.
type reading struct {
	Target  Target
	Time    time.Time
	Err     error
	sides   map[sideKey]*totals
	dropped int // samples about destinations the target does not speak for
}

func reduceAll(scrapes []Scrape) []reading {
	out := make([]reading, len(scrapes))
	for i, s := range scrapes {
		out[i] = reduce(s)
	}
	return out
}

// reduce sums s's samples by side; samples of no side (HTTP from other
// reporters, metrics the graph does not use) are dropped.
func reduce(s Scrape) reading {
	r := reading{Target: s.Target, Time: s.Time, Err: s.Err, sides: map[sideKey]*totals{}}
	for _, smp := range s.Samples {
		k, ok := sideOf(smp)
		if !ok {
			continue
		}
		// An unidentified destination names no one: still shown.
		if s.Target.Speaks != nil && k.edge[1] != unknown && !s.Target.Speaks[smp.Labels["destination_workload_namespace"]] {
			r.dropped++
			continue
		}
		t := r.sides[k]
		if t == nil {
			t = &totals{}
			r.sides[k] = t
		}
		t.add(smp)
	}
	return r
}

func sideOf(s Sample) (sideKey, bool) {
	k := sideKey{
		edge: [2]string{
			nodeID(s.Labels["source_workload_namespace"], s.Labels["source_workload"]),
			nodeID(s.Labels["destination_workload_namespace"], s.Labels["destination_workload"]),
		},
		secure: s.Labels["connection_security_policy"] == securityMutualTLS,
	}
	reporter := s.Labels["reporter"]
	switch {
	case s.Metric == metricRequests || s.Metric == metricDurationBucket:
		k.kind = sideHTTP
		return k, reporter == reporterWaypoint
	case reporter == reporterDestination:
		k.kind = sideTCPDestination
	case reporter == reporterSource:
		k.kind = sideTCPSource
	default:
		return k, false
	}
	return k, true
}

func (t *totals) add(s Sample) {
	switch s.Metric {
	case metricTCPOpened:
		t.opened += s.Value
	case metricTCPClosed:
		t.closed += s.Value
	case metricTCPSent, metricTCPReceived:
		t.bytes += s.Value
	case metricRequests:
		t.reqs += s.Value
		if strings.HasPrefix(s.Labels["response_code"], "5") {
			t.errs += s.Value
		}
	case metricDurationBucket:
		le, err := strconv.ParseFloat(s.Labels["le"], 64)
		if err != nil {
			return
		}
		if t.buckets == nil {
			t.buckets = map[float64]float64{}
		}
		t.buckets[le] += s.Value
	}
}

// since is t's growth since old (nil: a side new in this scrape, grown
// from zero). A counter that went down was reset (the proxy restarted) and
// counts from zero.
func (t *totals) since(old *totals) totals {
	if old == nil {
		old = &totals{}
	}
	d := totals{
		opened: increase(old.opened, t.opened), closed: increase(old.closed, t.closed),
		bytes: increase(old.bytes, t.bytes), reqs: increase(old.reqs, t.reqs), errs: increase(old.errs, t.errs),
	}
	if len(t.buckets) > 0 {
		d.buckets = make(map[float64]float64, len(t.buckets))
		for le, v := range t.buckets {
			d.buckets[le] = increase(old.buckets[le], v)
		}
	}
	return d
}

func (t *totals) plus(o totals) {
	t.opened += o.opened
	t.closed += o.closed
	t.bytes += o.bytes
	t.reqs += o.reqs
	t.errs += o.errs
	for le, v := range o.buckets {
		if t.buckets == nil {
			t.buckets = map[float64]float64{}
		}
		t.buckets[le] += v
	}
}

func (t totals) active() bool { return t.opened+t.bytes+t.reqs > 0 }

func increase(old, cur float64) float64 {
	if cur < old {
		return cur
	}
	return cur - old
}

// quantile is Prometheus's histogram_quantile over cumulative buckets:
// linear within the bucket the rank falls in, the lowest bucket starting
// at 0, and the highest finite bound when the rank is in the +Inf bucket.
// False without observations.
func quantile(q float64, buckets map[float64]float64) (float64, bool) {
	total, ok := buckets[math.Inf(1)]
	if !ok || total <= 0 {
		return 0, false
	}
	bounds := make([]float64, 0, len(buckets))
	for le := range buckets {
		bounds = append(bounds, le)
	}
	if len(bounds) < 2 {
		return 0, false // no finite bound to interpolate to
	}
	slices.Sort(bounds)
	rank := q * total
	lower, below := 0.0, 0.0
	for _, le := range bounds {
		count := buckets[le]
		if count >= rank && count > below {
			if math.IsInf(le, 1) {
				return lower, true
			}
			return lower + (le-lower)*(rank-below)/(count-below), true
		}
		lower, below = le, count
	}
	return lower, true
}
