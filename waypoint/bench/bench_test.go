package bench

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/weft-mesh/weft/internal/benchkit"
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
	loadSeconds  = envFloat("WEFT_WAYPOINTBENCH_LOAD_SECONDS", 2)
)

// BenchmarkWaypoint measures direct, through the waypoint, through nginx
// and through HAProxy in one run: an open-loop 1000 req/s phase and a
// closed-loop maximum req/s phase each. The fixed-length phases ignore b.N
// unless it asks for more requests.
func BenchmarkWaypoint(b *testing.B) {
	o := envOptions()
	if o.plainUpstream || o.noAccessLog {
		b.Logf("variant: plain TCP upstream (NONE endpoint, no node agent) %v, access logs off %v", o.plainUpstream, o.noAccessLog)
	}
	h := newHarness(b, o)
	base := &baseline{fixed: map[int]*benchkit.Result{}}
	h.eachPath(b, func(b *testing.B, p path) {
		b.Run("fixed-1000rps", func(b *testing.B) { h.benchFixed(b, p, fixedRate, fixedSeconds, base, false) })
		b.Run("max", func(b *testing.B) { h.benchMax(b, p, base) })
	})
}

// loadRates are BenchmarkWaypointLoad's offered loads (req/s).
var loadRates = []int{500, 1000, 2000, 4000}

// BenchmarkWaypointLoad: latency and cost against offered load, every
// proxy in one run, an open-loop phase per rate (WEFT_WAYPOINTBENCH_LOAD_SECONDS,
// default 2, each), the direct path at each rate as the baseline. Leaves
// {direct,weft,nginx,haproxy}/rps=N report what fixed-1000rps does, and
// failed_pct: past its capacity a proxy sheds requests (the waypoint
// answers 503, as Envoy's circuit breakers do), which is a result here,
// not a failure.
// docs/benchmarks.md's latency-vs-load and cost-vs-load charts come from
// it.
func BenchmarkWaypointLoad(b *testing.B) {
	h := newHarness(b, envOptions())
	base := &baseline{fixed: map[int]*benchkit.Result{}}
	h.eachPath(b, func(b *testing.B, p path) {
		for _, rate := range loadRates {
			b.Run(fmt.Sprintf("rps=%d", rate), func(b *testing.B) { h.benchFixed(b, p, rate, loadSeconds, base, true) })
		}
	})
}

// eachPath starts nginx and HAProxy and runs leaves on every path as a
// sub-benchmark, direct first (the baseline of the others); a proxy that
// is not installed is skipped, saying so.
func (h *harness) eachPath(b *testing.B, leaves func(*testing.B, path)) {
	haveNginx, haveHAProxy := h.startNginx(b), h.startHAProxy(b)
	for _, pc := range []struct {
		name    string
		path    func() path
		missing string // the skip message when the proxy is not installed
	}{
		{"direct", h.direct, ""},
		{"weft", h.weft, ""},
		{"nginx", h.nginxPath, unless(haveNginx, "nginx is not installed: `apt-get install nginx-light` to compare with it")},
		{"haproxy", h.haproxyPath, unless(haveHAProxy, "haproxy is not installed: `apt-get install haproxy` to compare with it")},
	} {
		b.Run(pc.name, func(b *testing.B) {
			if pc.missing != "" {
				b.Skip(pc.missing)
			}
			leaves(b, pc.path())
		})
	}
}

// unless is msg when ok is false, else "".
func unless(ok bool, msg string) string {
	if ok {
		return ""
	}
	return msg
}

// baseline is the direct path's figures of this run, measured by the
// direct leaves or, when a -bench filter skipped them, on first use.
type baseline struct {
	fixed map[int]*benchkit.Result // by rate
	max   *benchkit.Result
}

func (h *harness) directFixed(b *testing.B, base *baseline, rate int, secs float64) benchkit.Result {
	if base.fixed[rate] == nil {
		c := h.direct().client(maxConns)
		defer c.CloseIdleConnections()
		benchkit.AtRate(rate, rate/5, h.direct().get(c))
		r := benchkit.AtRate(rate, int(float64(rate)*secs), h.direct().get(c))
		if err := r.Err(); err != nil {
			b.Fatalf("direct baseline: %v", err)
		}
		base.fixed[rate] = &r
	}
	return *base.fixed[rate]
}

func (h *harness) directMax(b *testing.B, base *baseline) benchkit.Result {
	if base.max == nil {
		c := h.direct().client(maxConns)
		defer c.CloseIdleConnections()
		benchkit.ClosedLoop(maxConns, 0, 300*time.Millisecond, h.direct().get(c))
		r := benchkit.ClosedLoop(maxConns, 0, seconds(maxSeconds), h.direct().get(c))
		if err := r.Err(); err != nil {
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
// direct) with the benchmark timer on. Failed requests are the caller's
// to judge (r.Errors).
func measure(b *testing.B, p path, phase func() benchkit.Result) (benchkit.Result, proxyCost) {
	var before benchkit.ProcStats
	var err error
	if p.proxy != nil {
		if before, err = p.proxy.Stats(); err != nil {
			b.Fatalf("%s stats: %v", p.name, err)
		}
	}
	b.StartTimer()
	r := phase()
	b.StopTimer()
	var cost proxyCost
	if p.proxy != nil {
		after, err := p.proxy.Stats()
		if err != nil {
			b.Fatalf("%s stats: %v", p.name, err)
		}
		cost = proxyCost{cpu: after.CPU - before.CPU, rss: after.RSS}
	}
	return r, cost
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }

// benchFixed is an open-loop phase of secs at rate req/s on p. With
// overload, requests the proxy refuses (a saturated proxy sheds load) are
// reported as failed_pct, the latencies being the served requests';
// without, any failure fails the benchmark.
func (h *harness) benchFixed(b *testing.B, p path, rate int, secs float64, base *baseline, overload bool) {
	b.StopTimer()
	c := p.client(maxConns)
	defer c.CloseIdleConnections()
	// Warm-up: connections, tunnels, pools.
	if w := benchkit.AtRate(rate, rate/5, p.get(c)); w.Err() != nil {
		b.Fatalf("%s warm-up: %v", p.name, w.Err())
	}
	n := max(b.N, int(float64(rate)*secs))
	r, cost := measure(b, p, func() benchkit.Result { return benchkit.AtRate(rate, n, p.get(c)) })
	if err := r.Err(); err != nil && (!overload || p.proxy == nil) {
		b.Fatalf("%s: %v", p.name, err)
	}
	if p.proxy == nil {
		base.fixed[rate] = &r
	}
	if overload {
		b.ReportMetric(100*float64(r.Errors)/float64(r.Errors+len(r.Lat)), "failed_pct")
		if r.Errors > 0 {
			b.Logf("%s at %d req/s offered: %v", p.name, rate, r.Err())
		}
	}

	b.ReportMetric(r.MeanNanos(), "ns/op")
	b.ReportMetric(us(r.Pct(0.50)), "p50_us")
	b.ReportMetric(us(r.Pct(0.99)), "p99_us")
	b.ReportMetric(r.RPS(), "rps")
	if p.proxy == nil {
		return
	}
	d := h.directFixed(b, base, rate, secs)
	b.ReportMetric(us(r.Pct(0.50)-d.Pct(0.50)), "added_p50_us")
	b.ReportMetric(us(r.Pct(0.99)-d.Pct(0.99)), "added_p99_us")
	vcpu := cost.cpu.Seconds() / r.Elapsed.Seconds()
	b.ReportMetric(vcpu/(r.RPS()/1000), "vcpu_per_1000rps")
	b.ReportMetric(float64(cost.rss)/(1<<20), "rss_MB")
	b.Logf("%s at %.0f req/s: p50 %v (direct %v), p99 %v (direct %v); proxy CPU %v over %v, RSS %.1f MiB",
		p.name, r.RPS(), r.Pct(0.50), d.Pct(0.50), r.Pct(0.99), d.Pct(0.99), cost.cpu, r.Elapsed.Round(time.Millisecond),
		float64(cost.rss)/(1<<20))
}

func (h *harness) benchMax(b *testing.B, p path, base *baseline) {
	b.StopTimer()
	c := p.client(maxConns)
	defer c.CloseIdleConnections()
	if w := benchkit.ClosedLoop(maxConns, 0, 300*time.Millisecond, p.get(c)); w.Err() != nil {
		b.Fatalf("%s warm-up: %v", p.name, w.Err())
	}
	r, cost := measure(b, p, func() benchkit.Result { return benchkit.ClosedLoop(maxConns, b.N, seconds(maxSeconds), p.get(c)) })
	if err := r.Err(); err != nil {
		b.Fatalf("%s: %v", p.name, err)
	}
	if p.proxy == nil {
		base.max = &r
	}

	b.ReportMetric(float64(r.Elapsed)/float64(len(r.Lat)), "ns/op")
	b.ReportMetric(r.RPS(), "rps")
	b.ReportMetric(us(r.Pct(0.50)), "p50_us")
	b.ReportMetric(us(r.Pct(0.99)), "p99_us")
	if p.proxy == nil {
		return
	}
	d := h.directMax(b, base)
	b.ReportMetric(r.RPS()/d.RPS(), "rps_ratio_vs_direct")
	vcpu := cost.cpu.Seconds() / r.Elapsed.Seconds()
	b.ReportMetric(vcpu, "proxy_vcpu")
	b.ReportMetric(vcpu/(r.RPS()/1000), "vcpu_per_1000rps")
	b.ReportMetric(float64(cost.rss)/(1<<20), "rss_MB")
	b.Logf("%s, %d clients: %.0f req/s (direct %.0f); proxy %.2f vCPU, RSS %.1f MiB",
		p.name, maxConns, r.RPS(), d.RPS(), vcpu, float64(cost.rss)/(1<<20))
}
