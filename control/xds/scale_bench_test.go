package xds

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/internal/benchkit"
)

// lightSubscriber is a delta Address subscriber that keeps no resources:
// it counts them and notes when a resource arrives, then acknowledges, as
// a node agent does before applying. A thousand of them fit in one test
// process (the real client decodes every resource, ~14 MiB each at this
// size), so what the benchmark measures is the server's work.
type lightSubscriber struct {
	id      int
	held    int                    // resources received (each once: the state has no removals)
	full    chan time.Time         // when it first held want resources
	arrived func(name, ver string) // every resource received
}

func (l *lightSubscriber) run(ctx context.Context, conn *grpc.ClientConn, want int) error {
	s, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	node := &core.Node{Id: fmt.Sprintf("bench-%d", l.id)}
	if err := s.Send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: AddressType}); err != nil {
		return err
	}
	for {
		resp, err := s.Recv()
		if err != nil {
			return err
		}
		for _, r := range resp.GetResources() {
			if l.held < want {
				if l.held++; l.held == want {
					l.full <- time.Now()
				}
			}
			l.arrived(r.GetName(), r.GetVersion())
		}
		if err := s.Send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}); err != nil {
			return err
		}
	}
}

// BenchmarkPushTo1000Subscribers: 10,000 workloads and 1,000 services held
// by 1,000 delta subscribers (each its own gRPC connection). One workload
// changes 20 times in turn; each change's delivery time to every
// subscriber gives change_p50_ms and change_p99_ms (20,000 deliveries).
// Then one more subscriber connects five times, as a reconnecting agent
// would, reconnect_full_state_ms being the median time to its full state.
// heap_per_subscriber_KB is the heap growth from no subscriber to all
// 1,000 (after GC), server and in-process client together: an upper bound
// of the server's cost per subscriber.
func BenchmarkPushTo1000Subscribers(b *testing.B) {
	const subscribers, workloads, services, changes = 1_000, 10_000, 1_000, 20
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		s := New(ctx, quiet, prometheus.NewRegistry())
		state := meshState(workloads, services, 1)
		s.Update(AddressType, state)
		addr := serve(b, s)
		heapBefore := benchkit.LiveHeap()

		const probe = "Kubernetes//Pod/ns-7/pod-7"
		deliveries := make(chan time.Time, subscribers*changes)
		var wg sync.WaitGroup
		start := time.Now()
		// In batches of 100, as agents of a starting cluster would come:
		// each full state is a few MB in flight.
		for batch := 0; batch < subscribers; batch += 100 {
			full := make(chan time.Time, 100)
			for i := batch; i < batch+100; i++ {
				l := &lightSubscriber{id: i, full: full, arrived: func(name, _ string) {
					if name == probe {
						deliveries <- time.Now()
					}
				}}
				startSubscriber(ctx, b, &wg, l, dial(b, addr), len(state))
			}
			for range 100 {
				<-full
				<-deliveries // the probe's first version, in the full state
			}
		}
		connectAll := time.Since(start)
		perSub := float64(benchkit.LiveHeap()-heapBefore) / subscribers / 1024

		lat := pushChanges(s, state, probe, changes, subscribers, deliveries)
		reconnect := reconnects(ctx, b, &wg, addr, len(state), 5)
		cancel()
		wg.Wait()

		b.ReportMetric(float64(benchkit.Percentile(lat, 0.50).Microseconds())/1000, "change_p50_ms")
		b.ReportMetric(float64(benchkit.Percentile(lat, 0.99).Microseconds())/1000, "change_p99_ms")
		b.ReportMetric(float64(reconnect.Microseconds())/1000, "reconnect_full_state_ms")
		b.ReportMetric(perSub, "heap_per_subscriber_KB")
		b.ReportMetric(connectAll.Seconds(), "connect_all_s")
	}
}

func startSubscriber(ctx context.Context, b *testing.B, wg *sync.WaitGroup, l *lightSubscriber, conn *grpc.ClientConn, want int) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := l.run(ctx, conn, want); err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) {
			b.Errorf("subscriber %d: %v", l.id, err)
		}
	}()
}

// pushChanges changes probe's revision n times, each time waiting until
// every subscriber received it, and returns every delivery's latency.
func pushChanges(s *Server, state map[string]proto.Message, probe string, n, subscribers int, deliveries <-chan time.Time) []time.Duration {
	var lat []time.Duration
	next := make(map[string]proto.Message, len(state))
	for k, v := range state {
		next[k] = v
	}
	for i := range n {
		w := proto.Clone(state[probe]).(*workloadv1.Address)
		w.GetWorkload().CanonicalRevision = fmt.Sprintf("change-%d", i)
		next[probe] = w
		t0 := time.Now()
		s.Update(AddressType, next)
		for range subscribers {
			lat = append(lat, (<-deliveries).Sub(t0))
		}
	}
	return lat
}

// reconnects connects a new subscriber n times and returns the median
// time to its full state.
func reconnects(ctx context.Context, b *testing.B, wg *sync.WaitGroup, addr string, want, n int) time.Duration {
	var took []time.Duration
	for i := range n {
		l := &lightSubscriber{id: 10_000 + i, full: make(chan time.Time, 1), arrived: func(string, string) {}}
		t0 := time.Now()
		startSubscriber(ctx, b, wg, l, dial(b, addr), want)
		took = append(took, (<-l.full).Sub(t0))
	}
	return benchkit.Percentile(took, 0.5)
}
