package dnsresolve

import "github.com/prometheus/client_golang/prometheus"

// Counts are names by state: with a current answer, with a kept answer
// while lookups fail, and without an address (never resolved, or kept past
// KeepStale): connections to those fail.
type Counts struct {
	Resolved, Stale, Unresolved int
}

// Add counts st.
func (c *Counts) Add(st State) {
	switch {
	case len(st.Addrs) == 0:
		c.Unresolved++
	case st.Stale:
		c.Stale++
	default:
		c.Resolved++
	}
}

// Counts counts the Set's names by state.
func (s *Set) Counts() Counts {
	s.mu.Lock()
	ws := make([]*Watcher, 0, len(s.watchers))
	for _, w := range s.watchers {
		ws = append(ws, w)
	}
	s.mu.Unlock()
	var c Counts
	for _, w := range ws {
		c.Add(w.State())
	}
	return c
}

// Collector exports counts, read at each scrape, as the gauge name with
// label state (resolved, stale, unresolved).
func Collector(name, help string, counts func() Counts) prometheus.Collector {
	return &collector{desc: prometheus.NewDesc(name, help, []string{"state"}, nil), counts: counts}
}

type collector struct {
	desc   *prometheus.Desc
	counts func() Counts
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	n := c.counts()
	for _, s := range []struct {
		state string
		v     int
	}{{"resolved", n.Resolved}, {"stale", n.Stale}, {"unresolved", n.Unresolved}} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(s.v), s.state)
	}
}
