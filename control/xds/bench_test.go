package xds

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/pkg/xdsclient"
)

// meshState makes nWorkloads workloads spread over nServices services.
func meshState(nWorkloads, nServices, generation int) map[string]proto.Message {
	out := make(map[string]proto.Message, nWorkloads+nServices)
	for i := range nServices {
		name := fmt.Sprintf("svc-%d", i)
		host := fmt.Sprintf("%s.ns-%d.svc.cluster.local", name, i%100)
		out[fmt.Sprintf("ns-%d/%s", i%100, host)] = &workloadv1.Address{Type: &workloadv1.Address_Service{Service: &workloadv1.Service{
			Name: name, Namespace: fmt.Sprintf("ns-%d", i%100), Hostname: host,
			Addresses: []string{fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)},
			Ports:     []*workloadv1.Port{{ServicePort: 9080, TargetPort: 9080}},
		}}}
	}
	for i := range nWorkloads {
		ns := fmt.Sprintf("ns-%d", i%100)
		svc := i % nServices
		uid := fmt.Sprintf("Kubernetes//Pod/%s/pod-%d", ns, i)
		out[uid] = &workloadv1.Address{Type: &workloadv1.Address_Workload{Workload: &workloadv1.Workload{
			Uid: uid, Name: fmt.Sprintf("pod-%d", i), Namespace: ns,
			Addresses:      []string{fmt.Sprintf("10.%d.%d.%d", 128+i/65536, (i/256)%256, i%256)},
			Node:           fmt.Sprintf("node-%d", i%50),
			ServiceAccount: fmt.Sprintf("sa-%d", svc), TrustDomain: "cluster.local",
			TunnelProtocol: workloadv1.TunnelProtocol_HBONE,
			Services: map[string]*workloadv1.PortList{
				fmt.Sprintf("%s/svc-%d.%s.svc.cluster.local", ns, svc, ns): {Ports: []*workloadv1.Port{{ServicePort: 9080, TargetPort: 9080}}},
			},
			CanonicalName: fmt.Sprintf("svc-%d", svc), CanonicalRevision: fmt.Sprintf("v%d", generation),
		}}}
	}
	return out
}

// BenchmarkPush10kWorkloadsTo100Subscribers measures, with 10k workloads and
// 1k services, the time until 100 delta subscribers hold the full state,
// then the time until all of them saw one changed workload. It reports
// both (ms) and the heap in use with everything connected (MiB).
func BenchmarkPush10kWorkloadsTo100Subscribers(b *testing.B) {
	const subscribers, workloads, services = 100, 10_000, 1_000
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		s := New(ctx, quiet, prometheus.NewRegistry())
		state := meshState(workloads, services, 1)
		addr := serve(b, s)

		var wg sync.WaitGroup
		full, changed := make(chan struct{}, subscribers), make(chan struct{}, subscribers)
		const probe = "Kubernetes//Pod/ns-7/pod-7"
		start := time.Now()
		s.Update(AddressType, state)
		for range subscribers {
			conn := dial(b, addr)
			n := 0
			var once, onceChanged sync.Once
			c := xdsclient.New(xdsclient.Config{Conn: conn, Node: &core.Node{Id: "bench"}, Types: []string{AddressType}, Log: quiet},
				func(_ string, upd map[string]proto.Message, _ []string) error {
					n += len(upd)
					if n >= len(state) {
						once.Do(func() { full <- struct{}{} })
					}
					if m, ok := upd[probe]; ok && m.(*workloadv1.Address).GetWorkload().GetCanonicalRevision() == "changed" {
						onceChanged.Do(func() { changed <- struct{}{} })
					}
					return nil
				})
			wg.Add(1)
			go func() { defer wg.Done(); c.Run(ctx) }()
		}
		for range subscribers {
			<-full
		}
		firstPush := time.Since(start)
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)

		next := make(map[string]proto.Message, len(state))
		for k, v := range state {
			next[k] = v
		}
		w := proto.Clone(state[probe]).(*workloadv1.Address)
		w.GetWorkload().CanonicalRevision = "changed"
		next[probe] = w
		start = time.Now()
		s.Update(AddressType, next)
		for range subscribers {
			<-changed
		}
		incremental := time.Since(start)
		cancel()
		wg.Wait()

		b.ReportMetric(float64(firstPush.Milliseconds()), "first-full-push-ms")
		b.ReportMetric(float64(incremental.Microseconds())/1000, "incremental-push-ms")
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
	}
}
