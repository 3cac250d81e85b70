package nodebench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/weft-mesh/weft/internal/benchkit"
)

// httpRate is the fixed request rate of the HTTP phases: the published
// ztunnel figures docs/benchmarks.md compares with are per 1000 req/s.
const httpRate = 1000

// httpSeconds is how long each HTTP phase (direct, then mesh) runs at
// httpRate; WEFT_NODEBENCH_HTTP_SECONDS overrides the default 3 s.
func httpSeconds() int {
	if v, err := strconv.Atoi(os.Getenv("WEFT_NODEBENCH_HTTP_SECONDS")); err == nil && v > 0 {
		return v
	}
	return 3
}

// BenchmarkNodeDataPath measures client -> server through the node agent's
// data path (eBPF capture + proxy processes) against the same path direct,
// in the same run, same node and cross node. Timed work (ns/op, MB/s) is
// the mesh path; the direct baseline is measured with the timer stopped
// just before it and every leaf reports the ratio. See docs/benchmarks.md.
func BenchmarkNodeDataPath(b *testing.B) {
	h := newHarness(b)
	for _, c := range []struct {
		name    string
		dst     *pod
		proxies []*node // the proxy processes on the mesh path
	}{
		{"same-node", h.srvA, []*node{h.a}},
		{"cross-node", h.srvB, []*node{h.a, h.b}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.Run("bulk", func(b *testing.B) { h.benchBulk(b, c.dst.ip) })
			b.Run("rtt-1B", func(b *testing.B) { h.benchRTT(b, c.dst.ip, c.proxies) })
			b.Run(fmt.Sprintf("http-1KB-%drps", httpRate), func(b *testing.B) { h.benchHTTP(b, c.dst.ip, c.proxies) })
		})
	}
}

// benchBulk: one op is 1 MiB sent on one connection from the client to the
// server's sink (upload, like iperf's default).
func (h *harness) benchBulk(b *testing.B, dst netip.Addr) {
	b.StopTimer()
	b.SetBytes(1 << 20)
	ctx := context.Background()
	measure := func(mesh bool) time.Duration {
		h.enroll(b, mesh)
		if err := bulk(ctx, h.client.ns, dst, 8); err != nil { // warm-up (and the tunnel pool)
			b.Fatalf("bulk warm-up (mesh=%v): %v", mesh, err)
		}
		if mesh {
			b.StartTimer()
		}
		t0 := time.Now()
		if err := bulk(ctx, h.client.ns, dst, b.N); err != nil {
			b.Fatalf("bulk %d MiB (mesh=%v): %v", b.N, mesh, err)
		}
		d := time.Since(t0)
		b.StopTimer()
		return d
	}
	direct, mesh := measure(false), measure(true)
	h.enroll(b, false)
	gbit := func(d time.Duration) float64 { return float64(b.N) * (1 << 20) * 8 / d.Seconds() / 1e9 }
	b.ReportMetric(gbit(direct), "direct_Gbit/s")
	b.ReportMetric(gbit(mesh), "mesh_Gbit/s")
	b.ReportMetric(gbit(mesh)/gbit(direct), "ratio_vs_direct")
}

// benchRTT: one op is a 1-byte round trip on an established connection.
func (h *harness) benchRTT(b *testing.B, dst netip.Addr, proxies []*node) {
	b.StopTimer()
	ctx := context.Background()
	var switches int64 // the proxies' context switches in the mesh phase
	measure := func(mesh bool) time.Duration {
		h.enroll(b, mesh)
		p, err := dialPinger(ctx, h.client.ns, dst)
		if err != nil {
			b.Fatalf("dial echo (mesh=%v): %v", mesh, err)
		}
		defer p.c.Close()
		if err := p.rounds(200); err != nil {
			b.Fatalf("round-trip warm-up (mesh=%v): %v", mesh, err)
		}
		before := proxyStats(b, proxies)
		if mesh {
			b.StartTimer()
		}
		t0 := time.Now()
		if err := p.rounds(b.N); err != nil {
			b.Fatalf("round trips (mesh=%v): %v", mesh, err)
		}
		d := time.Since(t0)
		b.StopTimer()
		if mesh {
			for i, s := range proxyStats(b, proxies) {
				switches += s.CtxSwitches - before[i].CtxSwitches
			}
		}
		return d / time.Duration(b.N)
	}
	direct, mesh := measure(false), measure(true)
	h.enroll(b, false)
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	b.ReportMetric(us(direct), "direct_us")
	b.ReportMetric(us(mesh), "mesh_us")
	b.ReportMetric(us(mesh-direct), "added_us")
	b.ReportMetric(float64(mesh)/float64(direct), "ratio_vs_direct")
	// Each wake-up of a proxy thread is a context switch; on a virtual
	// machine they, not the work, dominate a small round trip.
	b.ReportMetric(float64(switches)/float64(b.N), "proxy_ctxsw_per_op")
}

// proxyStats reads the proxy processes' CPU, memory and context switches.
func proxyStats(b *testing.B, proxies []*node) []benchkit.ProcStats {
	out := make([]benchkit.ProcStats, len(proxies))
	for i, p := range proxies {
		s, err := benchkit.ReadProcStats(p.proxy.Pid())
		if err != nil {
			b.Fatalf("%s proxy stats: %v", p.name, err)
		}
		out[i] = s
	}
	return out
}

// benchHTTP: 1 KB GETs at a fixed rate (open loop, keep-alive) for
// max(b.N, httpRate*httpSeconds()) requests per phase. It reports latency
// percentiles of both phases and the proxies' CPU and RSS during the mesh
// phase. ns/op is the mesh phase's mean latency.
func (h *harness) benchHTTP(b *testing.B, dst netip.Addr, proxies []*node) {
	b.StopTimer()
	n := max(b.N, httpRate*httpSeconds())
	url := fmt.Sprintf("http://%s/", netip.AddrPortFrom(dst, httpPort))
	type phase struct {
		r        benchkit.Result
		cpu      time.Duration // summed over proxies
		rss      int64         // largest proxy
		proxyRSS []int64
	}
	measure := func(mesh bool) phase {
		h.enroll(b, mesh)
		c := httpClient(h.client.ns)
		defer c.CloseIdleConnections()
		get := func() error { return benchkit.Get(c, url, respSize) }
		if w := benchkit.AtRate(httpRate, httpRate/5, get); w.Errors > 0 { // warm-up: connections, tunnels
			b.Fatalf("HTTP warm-up (mesh=%v): %d errors, first: %v", mesh, w.Errors, w.FirstErr)
		}
		before := proxyStats(b, proxies)
		if mesh {
			b.StartTimer() // the framework stops ramping b.N once the timed part is long enough
		}
		r := benchkit.AtRate(httpRate, n, get)
		b.StopTimer()
		after := proxyStats(b, proxies)
		if r.Errors > 0 {
			b.Fatalf("HTTP (mesh=%v): %d of %d requests failed, first: %v", mesh, r.Errors, n, r.FirstErr)
		}
		ph := phase{r: r}
		for i := range proxies {
			ph.cpu += after[i].CPU - before[i].CPU
			ph.rss = max(ph.rss, after[i].RSS)
			ph.proxyRSS = append(ph.proxyRSS, after[i].RSS)
		}
		return ph
	}
	direct, mesh := measure(false), measure(true)
	h.enroll(b, false)

	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	b.ReportMetric(mesh.r.MeanNanos(), "ns/op")
	b.ReportMetric(us(direct.r.Pct(0.50)), "direct_p50_us")
	b.ReportMetric(us(direct.r.Pct(0.99)), "direct_p99_us")
	b.ReportMetric(us(mesh.r.Pct(0.50)), "p50_us")
	b.ReportMetric(us(mesh.r.Pct(0.99)), "p99_us")
	b.ReportMetric(float64(mesh.r.Pct(0.50))/float64(direct.r.Pct(0.50)), "p50_ratio_vs_direct")
	b.ReportMetric(float64(mesh.r.Pct(0.99))/float64(direct.r.Pct(0.99)), "p99_ratio_vs_direct")
	b.ReportMetric(mesh.r.RPS(), "req/s")
	vcpu := mesh.cpu.Seconds() / mesh.r.Elapsed.Seconds()
	b.ReportMetric(vcpu/(mesh.r.RPS()/1000), "vcpu_per_1000rps")
	b.ReportMetric(float64(mesh.rss)/(1<<20), "rss_MB")
	if direct.cpu > 0 {
		// Idle proxies: what the direct phase cost them (should be ~0).
		b.Logf("proxy CPU during the direct phase: %v over %v", direct.cpu, direct.r.Elapsed)
	}
	for i, p := range proxies {
		b.Logf("%s proxy RSS after the mesh phase: %.1f MiB", p.name, float64(mesh.proxyRSS[i])/(1<<20))
	}
}
