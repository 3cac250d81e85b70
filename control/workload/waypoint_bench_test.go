package workload_test

import (
	"runtime"
	"testing"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/control/waypoint"
	"github.com/weft-mesh/weft/control/workload"
	"github.com/weft-mesh/weft/internal/benchkit"
)

// BenchmarkTranslateWaypoints10kWorkloads is a push's second translation
// (control/server), the waypoints', gateways' and proxyless gRPC clients'
// Envoy configuration, at BenchmarkTranslate10kWorkloads' size. It lives
// here to share that cluster. It is what a push costs when anything but
// workloads' health changed (BenchmarkTranslateWaypointsOnePodChange).
// BenchmarkTranslateWaypoints10kWorkloadsNoGRPC is the same push while no
// proxyless gRPC client is connected, which leaves that group out
// (control/xds/grpcgroup.go).
func BenchmarkTranslateWaypoints10kWorkloads(b *testing.B) { benchTranslateWaypoints(b, false) }

func BenchmarkTranslateWaypoints10kWorkloadsNoGRPC(b *testing.B) { benchTranslateWaypoints(b, true) }

func benchTranslateWaypoints(b *testing.B, skipGRPC bool) {
	in := workload.ScaleInputs(10000, 100, 1000, 50)
	addrs := workload.Translate(workload.Config{}, in).Addresses
	b.ReportAllocs()
	for b.Loop() {
		wi := waypointInputs(in, addrs)
		wi.SkipGRPC = skipGRPC
		out := waypoint.Translate(waypoint.Config{}, wi)
		if len(out.Groups()) == 0 {
			b.Fatal("no waypoint configuration")
		}
		if (out.GRPC == nil) != skipGRPC {
			b.Fatalf("gRPC group built: %v, skipped: %v", out.GRPC != nil, skipGRPC)
		}
	}
}

// waypointInputs is what a push hands the waypoint translation: the
// workload translation's addresses and the cluster's objects.
func waypointInputs(in workload.Inputs, addrs map[string]*workloadv1.Address) waypoint.Inputs {
	return waypoint.Inputs{Addresses: addrs, Services: in.Services, Pods: in.Pods, AuthorizationPolicies: in.AuthorizationPolicies,
		IngressGateways: in.Gateways, Namespaces: in.Namespaces, ServiceEntries: in.ServiceEntries}
}

// BenchmarkTranslateWaypointsOnePodChange is the waypoint translation of a
// pod turning unready, then ready again, at BenchmarkTranslate10kWorkloads'
// size with the proxyless gRPC group, as a push does it: the workload
// Translator (not timed), then the waypoint Translator, each having
// translated the cluster before. full_translations/op is how many of the changes
// translated everything again, load_assignments_rebuilt/op how many load
// assignments each made again. kept_MB is the live heap the waypoint
// Translator keeps between pushes (its last output and the indexes it
// reuses), output_MB a translation's output alone, which the xDS caches
// hold anyway: the difference is what incrementality costs in memory.
func BenchmarkTranslateWaypointsOnePodChange(b *testing.B) {
	in := workload.ScaleInputs(10000, 100, 1000, 50)
	wt := workload.NewTranslator(workload.Config{})
	tr := waypoint.NewTranslator(waypoint.Config{})
	translate := func(b *testing.B) {
		b.StopTimer() // the workload translation is BenchmarkTranslateOnePodChange's
		addrs := wt.Translate(in).Addresses
		b.StartTimer()
		tr.Translate(waypointInputs(in, addrs))
	}
	wt.Translate(in) // the workload Translator's own state is not the figure
	heap := benchkit.LiveHeap()
	translate(b)
	kept := benchkit.LiveHeap() - heap
	out := waypoint.Translate(waypoint.Config{}, waypointInputs(in, wt.Translate(in).Addresses))
	output := benchkit.LiveHeap() - heap - kept
	runtime.KeepAlive(out)
	pod := in.Pods[4321]
	unready := pod.DeepCopy()
	unready.Status.Conditions = nil
	full, rebuilt := 0, 0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if in.Pods[4321] = unready; i%2 == 1 {
			in.Pods[4321] = pod
		}
		translate(b)
		n, f := tr.Rebuilt()
		if f {
			full++
		}
		rebuilt += n
	}
	b.ReportMetric(float64(full)/float64(b.N), "full_translations/op")
	b.ReportMetric(float64(rebuilt)/float64(b.N), "load_assignments_rebuilt/op")
	b.ReportMetric(float64(kept)/(1<<20), "kept_MB")
	b.ReportMetric(float64(output)/(1<<20), "output_MB")
}
