package proxy

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/cespare/xxhash/v2"
)

// pick chooses an endpoint for one request by the cluster's lb_policy, or
// nil when none is available.
func (c *cluster) pick(hash uint64, hashed bool) *endpoint {
	s := c.settings.Load()
	avail := c.candidates(time.Now(), s.localityWeighted)
	switch len(avail) {
	case 0:
		return nil
	case 1:
		return avail[0]
	}
	switch s.lb {
	case lbRandom:
		return avail[rand.IntN(len(avail))]
	case lbLeastRequest:
		// Power of (choice_count) choices among distinct endpoints.
		bi := rand.IntN(len(avail))
		best := avail[bi]
		for range s.choiceCount - 1 {
			j := rand.IntN(len(avail) - 1)
			if j >= bi {
				j++
			}
			if e := avail[j]; e.st.active.Load() < best.st.active.Load() {
				best, bi = e, j
			}
		}
		return best
	case lbRingHash:
		if !hashed {
			return avail[rand.IntN(len(avail))]
		}
		return c.ringFor(avail, s.minRingSize).lookup(hash)
	default:
		return avail[(c.rr.Add(1)-1)%uint64(len(avail))]
	}
}

// ring is a consistent-hash ring over one set of endpoints.
type ring struct {
	members []*endpoint // the set it was built for, in cluster order
	points  []ringPoint // sorted by hash
}

type ringPoint struct {
	hash uint64
	e    *endpoint
}

// ringFor returns the ring for exactly the endpoints in avail, building it
// when that set changed.
func (c *cluster) ringFor(avail []*endpoint, minSize int) *ring {
	if r := c.ring.Load(); r != nil && slices.EqualFunc(r.members, avail, func(a, b *endpoint) bool { return a == b }) {
		return r
	}
	per := (minSize + len(avail) - 1) / len(avail)
	r := &ring{members: avail, points: make([]ringPoint, 0, per*len(avail))}
	for _, e := range avail {
		key := e.addr.String() + "_"
		for i := range per {
			r.points = append(r.points, ringPoint{hash: xxhash.Sum64String(key + strconv.Itoa(i)), e: e})
		}
	}
	slices.SortFunc(r.points, func(a, b ringPoint) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return 0
	})
	c.ring.Store(r)
	return r
}

func (r *ring) lookup(h uint64) *endpoint {
	i, _ := slices.BinarySearchFunc(r.points, h, func(p ringPoint, h uint64) int {
		switch {
		case p.hash < h:
			return -1
		case p.hash > h:
			return 1
		}
		return 0
	})
	if i == len(r.points) {
		i = 0
	}
	return r.points[i].e
}
