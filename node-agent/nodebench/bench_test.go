package nodebench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
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
// just before it and every leaf reports the ratio. A third untimed phase
// goes through a peer making the same hop without a mesh: cross node the
// stunnel peer (stunnel_test.go), the conventional mTLS tunnel between
// the nodes; same node HAProxy relaying TCP (relay_test.go). See
// docs/benchmarks.md.
func BenchmarkNodeDataPath(b *testing.B) {
	h := newHarness(b, scale{})
	same := target{dst: h.srvA, proxies: []*node{h.a}, missing: "HAProxy is not installed (Debian: haproxy): no haproxy phase"}
	if h.relay != nil {
		same.peer = h.relay
	}
	cross := target{dst: h.srvB, proxies: []*node{h.a, h.b}, missing: "stunnel is not installed (Debian: stunnel4): no stunnel phase"}
	if h.tunnel != nil {
		cross.peer = h.tunnel
	}
	for _, c := range []struct {
		name string
		t    target
	}{{"same-node", same}, {"cross-node", cross}} {
		b.Run(c.name, func(b *testing.B) {
			b.Run("bulk", func(b *testing.B) { h.benchBulk(b, c.t) })
			b.Run("rtt-1B", func(b *testing.B) { h.benchRTT(b, c.t) })
			b.Run(fmt.Sprintf("http-1KB-%drps", httpRate), func(b *testing.B) { h.benchHTTP(b, c.t) })
		})
	}
}

// target is what a leaf measures: the server pod, the proxy processes on
// its mesh path and the peer making the same hop without a mesh (nil
// when it is not installed, missing then saying so, or when the leaf has
// none).
type target struct {
	dst     *pod
	proxies []*node
	peer    peer
	missing string
}

// peer is a conventional program making the mesh's hop, measured as a
// third phase with the pods not enrolled: stunnel between the nodes,
// HAProxy relaying on node-a.
type peer interface {
	name() string // the prefix of its figures
	addr(port uint16) netip.AddrPort
	procs() []*benchkit.Child
}

// peerPhase reports whether the leaf has a peer phase. A leaf whose peer
// is not installed says so in its own output: the harness's note is in
// the parent benchmark's, which only -v shows.
func (t target) peerPhase(b *testing.B) bool {
	if t.peer == nil && t.missing != "" {
		b.Log(t.missing)
	}
	return t.peer != nil
}

// direct is the server pod's port itself (the direct and mesh phases).
func (t target) direct(port uint16) netip.AddrPort { return netip.AddrPortFrom(t.dst.ip, port) }

func (t target) proxyProcs() []*benchkit.Child {
	out := make([]*benchkit.Child, len(t.proxies))
	for i, n := range t.proxies {
		out[i] = n.proxy
	}
	return out
}

// benchBulk: one op is 1 MiB sent on one connection from the client to the
// server's sink (upload, like iperf's default).
func (h *harness) benchBulk(b *testing.B, t target) {
	b.StopTimer()
	b.SetBytes(1 << 20)
	ctx := context.Background()
	measure := func(mesh bool, dst netip.AddrPort) time.Duration {
		h.enroll(b, mesh)
		if err := bulk(ctx, h.client.ns, dst, 8); err != nil { // warm-up (and the tunnel pool)
			b.Fatalf("bulk warm-up (mesh=%v, %s): %v", mesh, dst, err)
		}
		if mesh {
			b.StartTimer()
		}
		t0 := time.Now()
		if err := bulk(ctx, h.client.ns, dst, b.N); err != nil {
			b.Fatalf("bulk %d MiB (mesh=%v, %s): %v", b.N, mesh, dst, err)
		}
		d := time.Since(t0)
		b.StopTimer()
		return d
	}
	direct, mesh := measure(false, t.direct(bulkPort)), measure(true, t.direct(bulkPort))
	h.enroll(b, false)
	gbit := func(d time.Duration) float64 { return float64(b.N) * (1 << 20) * 8 / d.Seconds() / 1e9 }
	b.ReportMetric(gbit(direct), "direct_Gbit/s")
	b.ReportMetric(gbit(mesh), "mesh_Gbit/s")
	b.ReportMetric(gbit(mesh)/gbit(direct), "ratio_vs_direct")
	if t.peerPhase(b) {
		p := measure(false, t.peer.addr(bulkPort))
		b.ReportMetric(gbit(p), t.peer.name()+"_Gbit/s")
		b.ReportMetric(gbit(mesh)/gbit(p), "ratio_vs_"+t.peer.name())
	}
}

// benchRTT: one op is a 1-byte round trip on an established connection.
func (h *harness) benchRTT(b *testing.B, t target) {
	b.StopTimer()
	ctx := context.Background()
	var switches int64 // the proxies' context switches in the mesh phase
	measure := func(mesh bool, dst netip.AddrPort) time.Duration {
		h.enroll(b, mesh)
		p, err := dialPinger(ctx, h.client.ns, dst)
		if err != nil {
			b.Fatalf("dial echo (mesh=%v, %s): %v", mesh, dst, err)
		}
		defer p.c.Close()
		if err := p.rounds(200); err != nil {
			b.Fatalf("round-trip warm-up (mesh=%v, %s): %v", mesh, dst, err)
		}
		before := procStats(b, t.proxyProcs())
		if mesh {
			b.StartTimer()
		}
		t0 := time.Now()
		if err := p.rounds(b.N); err != nil {
			b.Fatalf("round trips (mesh=%v, %s): %v", mesh, dst, err)
		}
		d := time.Since(t0)
		b.StopTimer()
		if mesh {
			for i, s := range procStats(b, t.proxyProcs()) {
				switches += s.CtxSwitches - before[i].CtxSwitches
			}
		}
		return d / time.Duration(b.N)
	}
	direct, mesh := measure(false, t.direct(echoPort)), measure(true, t.direct(echoPort))
	h.enroll(b, false)
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	b.ReportMetric(us(direct), "direct_us")
	b.ReportMetric(us(mesh), "mesh_us")
	b.ReportMetric(us(mesh-direct), "added_us")
	b.ReportMetric(float64(mesh)/float64(direct), "ratio_vs_direct")
	// Each wake-up of a proxy thread is a context switch; on a virtual
	// machine they, not the work, dominate a small round trip.
	b.ReportMetric(float64(switches)/float64(b.N), "proxy_ctxsw_per_op")
	if t.peerPhase(b) {
		p := measure(false, t.peer.addr(echoPort))
		b.ReportMetric(us(p), t.peer.name()+"_us")
		b.ReportMetric(us(p-direct), t.peer.name()+"_added_us")
	}
}

// procStats reads the CPU, memory and context switches of procs (the
// proxies, or a peer's processes).
func procStats(b *testing.B, procs []*benchkit.Child) []benchkit.ProcStats {
	out := make([]benchkit.ProcStats, len(procs))
	for i, p := range procs {
		s, err := benchkit.ReadProcStats(p.Pid())
		if err != nil {
			b.Fatalf("%s stats: %v", p.Name, err)
		}
		out[i] = s
	}
	return out
}

// httpPhase is one phase of the HTTP leaf: its latencies and what it cost
// the processes on its path.
type httpPhase struct {
	r   benchkit.Result
	cpu time.Duration // summed over the processes
	rss []int64       // each process's after the phase
}

// vcpuPer1000 is the processes' CPU in cores per 1000 req/s.
func (p httpPhase) vcpuPer1000() float64 {
	return p.cpu.Seconds() / p.r.Elapsed.Seconds() / (p.r.RPS() / 1000)
}

// benchHTTP: 1 KB GETs at a fixed rate (open loop, keep-alive) for
// max(b.N, httpRate*httpSeconds()) requests per phase. It reports latency
// percentiles of the phases and the proxies' CPU and RSS during the mesh
// phase (the peer's CPU during its phase). ns/op is
// the mesh phase's mean latency.
func (h *harness) benchHTTP(b *testing.B, t target) {
	b.StopTimer()
	n := max(b.N, httpRate*httpSeconds())
	measure := func(mesh bool, dst netip.AddrPort, procs []*benchkit.Child) httpPhase {
		h.enroll(b, mesh)
		c := httpClient(h.client.ns)
		defer c.CloseIdleConnections()
		url := fmt.Sprintf("http://%s/", dst)
		get := func() error { return benchkit.Get(c, url, respSize) }
		if w := benchkit.AtRate(httpRate, httpRate/5, get); w.Errors > 0 { // warm-up: connections, tunnels
			b.Fatalf("HTTP warm-up (mesh=%v, %s): %d errors, first: %v", mesh, dst, w.Errors, w.FirstErr)
		}
		before := procStats(b, procs)
		if mesh {
			b.StartTimer() // the framework stops ramping b.N once the timed part is long enough
		}
		r := benchkit.AtRate(httpRate, n, get)
		b.StopTimer()
		after := procStats(b, procs)
		if r.Errors > 0 {
			b.Fatalf("HTTP (mesh=%v, %s): %d of %d requests failed, first: %v", mesh, dst, r.Errors, n, r.FirstErr)
		}
		ph := httpPhase{r: r}
		for i := range procs {
			ph.cpu += after[i].CPU - before[i].CPU
			ph.rss = append(ph.rss, after[i].RSS)
		}
		return ph
	}
	direct := measure(false, t.direct(httpPort), t.proxyProcs())
	mesh := measure(true, t.direct(httpPort), t.proxyProcs())
	h.enroll(b, false)
	reportHTTP(b, t, direct, mesh)
	if t.peerPhase(b) {
		tunnel, _ := t.peer.(*stunnel)
		var conns int
		if tunnel != nil {
			conns = tunnel.accepted()
		}
		p := measure(false, t.peer.addr(httpPort), t.peer.procs())
		if tunnel != nil { // each is a TLS handshake: keep-alive should keep them few
			b.Logf("stunnel phase: %d connections (TLS connections) for %d requests", tunnel.accepted()-conns, n+httpRate/5)
		}
		b.ReportMetric(float64(p.r.Pct(0.50))/1e3, t.peer.name()+"_p50_us")
		b.ReportMetric(p.vcpuPer1000(), t.peer.name()+"_vcpu_per_1000rps")
	}
}

// reportHTTP reports the direct and mesh phases of the HTTP leaf.
func reportHTTP(b *testing.B, t target, direct, mesh httpPhase) {
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	b.ReportMetric(mesh.r.MeanNanos(), "ns/op")
	b.ReportMetric(us(direct.r.Pct(0.50)), "direct_p50_us")
	b.ReportMetric(us(direct.r.Pct(0.99)), "direct_p99_us")
	b.ReportMetric(us(mesh.r.Pct(0.50)), "p50_us")
	b.ReportMetric(us(mesh.r.Pct(0.99)), "p99_us")
	b.ReportMetric(float64(mesh.r.Pct(0.50))/float64(direct.r.Pct(0.50)), "p50_ratio_vs_direct")
	b.ReportMetric(float64(mesh.r.Pct(0.99))/float64(direct.r.Pct(0.99)), "p99_ratio_vs_direct")
	b.ReportMetric(mesh.r.RPS(), "req/s")
	b.ReportMetric(mesh.vcpuPer1000(), "vcpu_per_1000rps")
	b.ReportMetric(float64(slices.Max(mesh.rss))/(1<<20), "rss_MB")
	if direct.cpu > 0 {
		// Idle proxies: what the direct phase cost them (should be ~0).
		b.Logf("proxy CPU during the direct phase: %v over %v", direct.cpu, direct.r.Elapsed)
	}
	for i, p := range t.proxies {
		b.Logf("%s proxy RSS after the mesh phase: %.1f MiB", p.name, float64(mesh.rss[i])/(1<<20))
	}
}
