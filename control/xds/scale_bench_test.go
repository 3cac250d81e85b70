package xds

import (
	"context"
	"errors"
	"fmt"
	"os"
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
// of the server's cost per subscriber. cpu_us_per_delivery and
// syscalls_per_delivery are the process's CPU time and read/write system
// calls during the 20 changes per delivery, server and subscribers
// together (both ends of each connection).
func BenchmarkPushTo1000Subscribers(b *testing.B) {
	for b.Loop() {
		m := measurePush(b, cluster{subscribers: 1_000, workloads: 10_000, services: 1_000})
		m.report(b)
		b.ReportMetric(float64(m.reconnect.Microseconds())/1000, "reconnect_full_state_ms")
	}
}

// BenchmarkPushScale: how the delivery of one change and the memory per
// subscriber grow with the number of node agents (subscribers) and of
// pods, up to 5,000 nodes. The subscribers are the light ones of
// BenchmarkPushTo1000Subscribers, in this process; one service per ten
// pods. docs/control-plane.md's curve is drawn from it.
func BenchmarkPushScale(b *testing.B) {
	for _, c := range []cluster{
		{subscribers: 500, workloads: 2_000}, {subscribers: 1_000, workloads: 2_000},
		{subscribers: 2_500, workloads: 2_000}, {subscribers: 5_000, workloads: 2_000},
		{subscribers: 1_000, workloads: 10_000}, {subscribers: 1_000, workloads: 30_000},
	} {
		c.services = c.workloads / 10
		b.Run(fmt.Sprintf("nodes=%d/pods=%d", c.subscribers, c.workloads), func(b *testing.B) {
			for b.Loop() {
				measurePush(b, c).report(b)
			}
		})
	}
}

// cluster is the size of a simulated cluster.
type cluster struct{ subscribers, workloads, services int }

// pushFigures are one measurePush's results.
type pushFigures struct {
	latencies  []time.Duration // one per change per subscriber
	reconnect  time.Duration   // median time to the full state of a new subscriber
	perSubKB   float64         // heap growth per subscriber
	connectAll time.Duration   // all subscribers to their full state
	// The process's CPU and read/write system calls per delivery of a
	// change, server and subscribers together.
	cpuPerDelivery      time.Duration
	syscallsPerDelivery float64
}

func (m pushFigures) report(b *testing.B) {
	b.ReportMetric(float64(benchkit.Percentile(m.latencies, 0.50).Microseconds())/1000, "change_p50_ms")
	b.ReportMetric(float64(benchkit.Percentile(m.latencies, 0.99).Microseconds())/1000, "change_p99_ms")
	b.ReportMetric(m.perSubKB, "heap_per_subscriber_KB")
	b.ReportMetric(m.connectAll.Seconds(), "connect_all_s")
	b.ReportMetric(float64(m.cpuPerDelivery.Nanoseconds())/1000, "cpu_us_per_delivery")
	b.ReportMetric(m.syscallsPerDelivery, "syscalls_per_delivery")
}

func selfStats(b *testing.B) benchkit.ProcStats {
	st, err := benchkit.ReadProcStats(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// measurePush serves c's state to c.subscribers light subscribers, changes
// one workload 20 times in turn, timing each change's delivery to every
// subscriber, then connects one more subscriber five times.
func measurePush(b *testing.B, c cluster) pushFigures {
	const changes = 20
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait() // every subscriber ended
	}()
	s := New(ctx, quiet, prometheus.NewRegistry())
	state := meshState(c.workloads, c.services, 1)
	s.Update(AddressType, state)
	addr := serve(b, s)
	heapBefore := benchkit.LiveHeap()

	const probe = "Kubernetes//Pod/ns-7/pod-7"
	deliveries := make(chan time.Time, c.subscribers*changes)
	start := time.Now()
	// In batches of 100, as agents of a starting cluster would come:
	// each full state is a few MB in flight.
	for batch := 0; batch < c.subscribers; batch += 100 {
		n := min(100, c.subscribers-batch)
		full := make(chan time.Time, n)
		for i := batch; i < batch+n; i++ {
			l := &lightSubscriber{id: i, full: full, arrived: func(name, _ string) {
				if name == probe {
					deliveries <- time.Now()
				}
			}}
			startSubscriber(ctx, b, &wg, l, dial(b, addr), len(state))
		}
		for range n {
			<-full
			<-deliveries // the probe's first version, in the full state
		}
	}
	m := pushFigures{connectAll: time.Since(start)}
	m.perSubKB = float64(benchkit.LiveHeap()-heapBefore) / float64(c.subscribers) / 1024
	before := selfStats(b)
	m.latencies = pushChanges(s, state, probe, changes, c.subscribers, deliveries)
	after, n := selfStats(b), changes*c.subscribers
	m.cpuPerDelivery = (after.CPU - before.CPU) / time.Duration(n)
	m.syscallsPerDelivery = float64(after.Syscalls-before.Syscalls) / float64(n)
	m.reconnect = reconnects(ctx, b, &wg, addr, len(state), 5)
	return m
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
