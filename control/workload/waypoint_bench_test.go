package workload_test

import (
	"testing"

	"github.com/weft-mesh/weft/control/waypoint"
	"github.com/weft-mesh/weft/control/workload"
)

// BenchmarkTranslateWaypoints10kWorkloads is a push's second translation
// (control/server), the waypoints', gateways' and proxyless gRPC clients'
// Envoy configuration, at BenchmarkTranslate10kWorkloads' size. It lives
// here to share that cluster. Unlike the workload translation it is not
// incremental: every push, a pod change too, rebuilds all of it.
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
		out := waypoint.Translate(waypoint.Config{}, waypoint.Inputs{
			Addresses: addrs, Services: in.Services, Pods: in.Pods, AuthorizationPolicies: in.AuthorizationPolicies,
			IngressGateways: in.Gateways, Namespaces: in.Namespaces, ServiceEntries: in.ServiceEntries,
			SkipGRPC: skipGRPC,
		})
		if len(out.Groups()) == 0 {
			b.Fatal("no waypoint configuration")
		}
		if (out.GRPC == nil) != skipGRPC {
			b.Fatalf("gRPC group built: %v, skipped: %v", out.GRPC != nil, skipGRPC)
		}
	}
}
