package proxy

import (
	"math/rand/v2"
	"slices"
	"time"
)

// overprovisioning is Envoy's default overprovisioning factor (1.4), which
// Istio leaves as is: a priority (or locality) keeps all of its load while
// at least 1/1.4 (~71%) of its endpoints are available, and hands the
// rest to the next priority (or the other localities) below that.
const overprovisioning = 1.4

// priorityLevel is the endpoints of one priority, by locality.
type priorityLevel struct {
	priority   uint32
	localities []localityGroup
}

// localityGroup is the endpoints of one LocalityLbEndpoints.
type localityGroup struct {
	weight uint32
	eps    []*endpoint
}

// groupLevels sorts endpoints into priorities (ascending) and localities
// (in CLA order).
func groupLevels(eps []*endpoint) []priorityLevel {
	var levels []priorityLevel
	for _, e := range eps {
		i, found := slices.BinarySearchFunc(levels, e.priority, func(l priorityLevel, p uint32) int { return int(int64(l.priority) - int64(p)) })
		if !found {
			levels = slices.Insert(levels, i, priorityLevel{priority: e.priority})
		}
		lv := &levels[i]
		j := slices.IndexFunc(lv.localities, func(g localityGroup) bool { return g.eps[0].locality == e.locality })
		if j < 0 {
			lv.localities = append(lv.localities, localityGroup{weight: e.localityWeight})
			j = len(lv.localities) - 1
		}
		lv.localities[j].eps = append(lv.localities[j].eps, e)
	}
	return levels
}

// availability is Envoy's health of a set of endpoints: the available
// share times the overprovisioning factor, at most 1.
func availability(avail, total int) float64 {
	if total == 0 {
		return 0
	}
	return min(1, overprovisioning*float64(avail)/float64(total))
}

func availableOf(eps []*endpoint, now time.Time) []*endpoint {
	out := make([]*endpoint, 0, len(eps))
	for _, e := range eps {
		if e.healthy && !e.ejected(now) {
			out = append(out, e)
		}
	}
	return out
}

// candidates returns the available endpoints the cluster's lb_policy picks
// from for one request, as Envoy chooses them: a priority by the priority
// load (each priority takes its availability's share of what the higher
// ones leave, normalised when the total is below 100%), then, with
// locality weights, a locality by weight times availability. Envoy's panic
// mode (balancing over unhealthy endpoints too) is not implemented.
func (c *cluster) candidates(now time.Time, weighted bool) []*endpoint {
	levels := *c.levels.Load()
	if len(levels) <= 1 && (!weighted || len(levels) == 0 || len(levels[0].localities) <= 1) {
		return c.available(now)
	}
	avail := make([][][]*endpoint, len(levels))
	health := make([]float64, len(levels))
	total := 0.0
	for i, lv := range levels {
		n, size := 0, 0
		avail[i] = make([][]*endpoint, len(lv.localities))
		for j, g := range lv.localities {
			avail[i][j] = availableOf(g.eps, now)
			n += len(avail[i][j])
			size += len(g.eps)
		}
		health[i] = availability(n, size)
		total += health[i]
	}
	if total == 0 {
		return nil
	}
	i := pickLevel(health, min(total, 1), rand.Float64())
	if !weighted {
		return slices.Concat(avail[i]...)
	}
	return pickLocality(levels[i].localities, avail[i], rand.Float64())
}

// pickLevel chooses the priority for the uniform draw r in [0,1): level i
// gets min(left, health[i]/norm) of the load.
func pickLevel(health []float64, norm, r float64) int {
	left := 1.0
	last := 0
	for i, h := range health {
		load := min(left, h/norm)
		if load <= 0 {
			continue
		}
		last = i
		if r < load {
			return i
		}
		r -= load
		left -= load
	}
	return last // rounding: the last level with load
}

// pickLocality chooses a locality for the uniform draw r in [0,1) by its
// effective weight (weight times availability) and returns its available
// endpoints; none when every effective weight is 0.
func pickLocality(groups []localityGroup, avail [][]*endpoint, r float64) []*endpoint {
	eff := make([]float64, len(groups))
	sum := 0.0
	for j, g := range groups {
		eff[j] = float64(g.weight) * availability(len(avail[j]), len(g.eps))
		sum += eff[j]
	}
	if sum == 0 {
		return nil
	}
	r *= sum
	last := -1
	for j, w := range eff {
		if w == 0 {
			continue
		}
		last = j
		if r < w {
			return avail[j]
		}
		r -= w
	}
	return avail[last]
}
