package nodebench

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/weft-mesh/weft/node-agent/config"
	"github.com/weft-mesh/weft/node-agent/nodebench/synth"
)

// scale is the synthetic mesh (package synth).
type scale = synth.Scale

// BenchmarkNodeAgentScale measures the node proxy when it knows a large
// mesh, on the same-node HTTP leaf of BenchmarkNodeDataPath (its rss_MB
// and vcpu_per_1000rps, measured the same way). The proxy alone: the
// shipped binary holding the same mesh is BenchmarkShippedNodeAgent's.
func BenchmarkNodeAgentScale(b *testing.B) {
	for _, s := range []scale{{Workloads: 1_000}, {Workloads: 10_000, Services: 1_000, Policies: 1_000}} {
		b.Run(s.String(), func(b *testing.B) {
			h := newHarness(b, s)
			b.Run(fmt.Sprintf("same-node/http-1KB-%drps", httpRate), func(b *testing.B) {
				h.benchHTTP(b, target{dst: h.srvA, proxies: []*node{h.a}})
			})
		})
	}
}

// TestScaleIsWhatTheStoreHolds: the synthetic mesh loads without
// problems, every workload, service and policy of it is held, and none of
// it applies to the harness's pods (the measured paths stay the same).
func TestScaleIsWhatTheStoreHolds(t *testing.T) {
	s := scale{Workloads: 2_000, Services: 200, Policies: 300}
	store := config.NewStore(config.Options{})
	if err := store.Handle(config.AddressType, s.Addresses(), nil); err != nil {
		t.Fatal(err)
	}
	if err := store.Handle(config.AuthorizationType, s.Authorizations(), nil); err != nil {
		t.Fatal(err)
	}
	snap := store.Snapshot()
	if len(snap.Workloads()) != 2_000 || len(snap.Services()) != 200 || len(snap.Authorizations()) != 300 || snap.Policy().Len() != 300 {
		t.Fatalf("holds %d workloads, %d services, %d policies (%d compiled)", len(snap.Workloads()), len(snap.Services()), len(snap.Authorizations()), snap.Policy().Len())
	}
	if p := snap.Policy().Problems(); len(p) > 0 {
		t.Errorf("policy problems: %q", p)
	}
	if w := snap.WorkloadByIP(netip.MustParseAddr("10.128.7.207")); w == nil || w.Name != "Kubernetes//Pod/ns-99/pod-1999" {
		t.Errorf("10.128.7.207 is %+v, want the last synthetic pod", w)
	}
	if svc := snap.ServiceByVIP(netip.MustParseAddrPort("10.96.0.1:9080")); svc == nil || len(svc.Workloads) != 10 {
		t.Errorf("svc-0: %+v, want 10 workloads", svc)
	}
	for _, ip := range []string{clientIP, serverAIP, serverBIP} {
		if w := snap.WorkloadByIP(netip.MustParseAddr(ip)); w != nil {
			t.Errorf("synthetic workload %s takes the harness pod address %s", w.Name, ip)
		}
	}
}
