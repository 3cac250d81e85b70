package bench

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// fixedRate is the open-loop phase's offered load (req/s).
const fixedRate = 1000

// envFloat reads a positive number from the environment, else def.
func envFloat(name string, def float64) float64 {
	if v, err := strconv.ParseFloat(os.Getenv(name), 64); err == nil && v > 0 {
		return v
	}
	return def
}

// Phase lengths and closed-loop concurrency; see docs/benchmarks.md.
var (
	fixedSeconds = envFloat("WEFT_WAYPOINTBENCH_SECONDS", 3)
	maxSeconds   = envFloat("WEFT_WAYPOINTBENCH_MAX_SECONDS", 2)
	maxConns     = int(envFloat("WEFT_WAYPOINTBENCH_CONNS", 16))
)

// BenchmarkWaypoint measures direct, through the waypoint and through
// nginx in one run: an open-loop 1000 req/s phase and a closed-loop maximum
// req/s phase each. The fixed-length phases ignore b.N unless it asks for
// more requests.
func BenchmarkWaypoint(b *testing.B) {
	o := envOptions()
	if o.plainUpstream || o.noAccessLog {
		b.Logf("variant: plain TCP upstream (NONE endpoint, no node agent) %v, access logs off %v", o.plainUpstream, o.noAccessLog)
	}
	h := newHarness(b, o)
	haveNginx := h.startNginx(b)
	base := &baseline{}
	for _, pc := range []struct {
		name string
		path func() path
	}{{"direct", h.direct}, {"weft", h.weft}, {"nginx", h.nginxPath}} {
		b.Run(pc.name, func(b *testing.B) {
			if pc.name == "nginx" && !haveNginx {
				b.Skip("nginx is not installed: `apt-get install nginx-light` to compare with it")
			}
			p := pc.path()
			b.Run("fixed-1000rps", func(b *testing.B) { h.benchFixed(b, p, base) })
			b.Run("max", func(b *testing.B) { h.benchMax(b, p, base) })
		})
	}
}

// baseline is the direct path's figures of this run, measured by the
// direct leaves or, when a -bench filter skipped them, on first use.
type baseline struct {
	fixed, max *result
}

func (h *harness) directFixed(b *testing.B, base *baseline) result {
	if base.fixed == nil {
		c := h.direct().client(maxConns)
		defer c.CloseIdleConnections()
		atRate(c, h.direct().url, fixedRate, fixedRate/5)
		r := atRate(c, h.direct().url, fixedRate, int(fixedRate*fixedSeconds))
		if err := r.err(); err != nil {
			b.Fatalf("direct baseline: %v", err)
		}
		base.fixed = &r
	}
	return *base.fixed
}

func (h *harness) directMax(b *testing.B, base *baseline) result {
	if base.max == nil {
		c := h.direct().client(maxConns)
		defer c.CloseIdleConnections()
		closedLoop(c, h.direct().url, maxConns, 0, 300*time.Millisecond)
		r := closedLoop(c, h.direct().url, maxConns, 0, seconds(maxSeconds))
		if err := r.err(); err != nil {
			b.Fatalf("direct baseline: %v", err)
		}
		base.max = &r
	}
	return *base.max
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// proxyCost is what the proxy process spent during a phase.
type proxyCost struct {
	cpu time.Duration
	rss int64
}

// measure runs phase between two readings of the proxy's stats (none for
// direct) with the benchmark timer on.
func measure(b *testing.B, p path, phase func() result) (result, proxyCost) {
	var before procStats
	var err error
	if p.proxy != nil {
		if before, err = p.proxy.stats(); err != nil {
			b.Fatalf("%s stats: %v", p.name, err)
		}
	}
	b.StartTimer()
	r := phase()
	b.StopTimer()
	if err := r.err(); err != nil {
		b.Fatalf("%s: %v", p.name, err)
	}
	var cost proxyCost
	if p.proxy != nil {
		after, err := p.proxy.stats()
		if err != nil {
			b.Fatalf("%s stats: %v", p.name, err)
		}
		cost = proxyCost{cpu: after.cpu - before.cpu, rss: after.rss}
	}
	return r, cost
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }

func (h *harness) benchFixed(b *testing.B, p path, base *baseline) {
	b.StopTimer()
	c := p.client(maxConns)
	defer c.CloseIdleConnections()
	// Warm-up: connections, tunnels, pools.
	if w := atRate(c, p.url, fixedRate, fixedRate/5); w.err() != nil {
		b.Fatalf("%s warm-up: %v", p.name, w.err())
	}
	n := max(b.N, int(fixedRate*fixedSeconds))
	r, cost := measure(b, p, func() result { return atRate(c, p.url, fixedRate, n) })
	if p.proxy == nil {
		base.fixed = &r
	}

	var sum time.Duration
	for _, l := range r.lat {
		sum += l
	}
	b.ReportMetric(float64(sum)/float64(len(r.lat)), "ns/op")
	b.ReportMetric(us(r.pct(0.50)), "p50_us")
	b.ReportMetric(us(r.pct(0.99)), "p99_us")
	b.ReportMetric(r.rps(), "rps")
	if p.proxy == nil {
		return
	}
	d := h.directFixed(b, base)
	b.ReportMetric(us(r.pct(0.50)-d.pct(0.50)), "added_p50_us")
	b.ReportMetric(us(r.pct(0.99)-d.pct(0.99)), "added_p99_us")
	vcpu := cost.cpu.Seconds() / r.elapsed.Seconds()
	b.ReportMetric(vcpu/(r.rps()/1000), "vcpu_per_1000rps")
	b.ReportMetric(float64(cost.rss)/(1<<20), "rss_MB")
	b.Logf("%s at %.0f req/s: p50 %v (direct %v), p99 %v (direct %v); proxy CPU %v over %v, RSS %.1f MiB",
		p.name, r.rps(), r.pct(0.50), d.pct(0.50), r.pct(0.99), d.pct(0.99), cost.cpu, r.elapsed.Round(time.Millisecond),
		float64(cost.rss)/(1<<20))
}

func (h *harness) benchMax(b *testing.B, p path, base *baseline) {
	b.StopTimer()
	c := p.client(maxConns)
	defer c.CloseIdleConnections()
	if w := closedLoop(c, p.url, maxConns, 0, 300*time.Millisecond); w.err() != nil {
		b.Fatalf("%s warm-up: %v", p.name, w.err())
	}
	r, cost := measure(b, p, func() result { return closedLoop(c, p.url, maxConns, b.N, seconds(maxSeconds)) })
	if p.proxy == nil {
		base.max = &r
	}

	b.ReportMetric(float64(r.elapsed)/float64(len(r.lat)), "ns/op")
	b.ReportMetric(r.rps(), "rps")
	b.ReportMetric(us(r.pct(0.50)), "p50_us")
	b.ReportMetric(us(r.pct(0.99)), "p99_us")
	if p.proxy == nil {
		return
	}
	d := h.directMax(b, base)
	b.ReportMetric(r.rps()/d.rps(), "rps_ratio_vs_direct")
	vcpu := cost.cpu.Seconds() / r.elapsed.Seconds()
	b.ReportMetric(vcpu, "proxy_vcpu")
	b.ReportMetric(vcpu/(r.rps()/1000), "vcpu_per_1000rps")
	b.ReportMetric(float64(cost.rss)/(1<<20), "rss_MB")
	b.Logf("%s, %d clients: %.0f req/s (direct %.0f); proxy %.2f vCPU, RSS %.1f MiB",
		p.name, maxConns, r.rps(), d.rps(), vcpu, float64(cost.rss)/(1<<20))
}
