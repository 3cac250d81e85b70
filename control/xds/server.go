// Package xds serves Weft's configuration over the xDS protocol with
// go-control-plane, on one ADS endpoint (delta and state-of-the-world):
// Weft's own workload-discovery types for node agents (served by Weft's own
// delta streams, see weftStore: callers hand it the complete desired state
// per type and each stream sends only what changed), and Envoy's Listener, RouteConfiguration, Cluster and
// ClusterLoadAssignment for waypoints and proxyless gRPC (snapshot caches,
// one snapshot per node group, see NodeGroup).
package xds

import (
	"context"
	"log/slog"
	"sync"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// Type URLs of Weft's workload-discovery resources.
const (
	AddressType       = mesh.AddressType
	AuthorizationType = mesh.AuthorizationType
	// EnrolledNamespaceType: the ambient namespaces, for node agents.
	EnrolledNamespaceType = mesh.EnrolledNamespaceType
)

// Server holds Weft's resources and the Envoy snapshot caches behind a
// single ADS endpoint.
type Server struct {
	ctx     context.Context
	log     *slog.Logger
	weft    *weftStore
	xds     server.Server
	metrics *metrics

	envoyMu   sync.Mutex
	envoy     cache.SnapshotCache // waypoints and unknown nodes (ADS mode)
	envoyGRPC cache.SnapshotCache // proxyless gRPC (named SotW subscriptions)
	waypoints map[string]waypointState
	digests   digests // of the resources of the last SetWaypointSnapshots
	// grpcServed: the last snapshots had the gRPC group (grpcgroup.go);
	// grpcWanted signals, coalesced, that a client of it is waiting.
	grpcServed bool
	grpcWanted chan struct{}

	mu       sync.Mutex
	pushedAt time.Time // when the last Envoy snapshot change entered the caches (Weft's types: weftStore)

	ids     streamIDs      // one ID per stream, whichever kind
	clients *clientTracker // open streams and what they acknowledged
	callers *streamCallers // authenticated caller per stream
}

// New makes a server of Weft's types (Address, Authorization,
// EnrolledNamespace) and the Envoy types. Metrics are registered with reg.
func New(ctx context.Context, log *slog.Logger, reg prometheus.Registerer) *Server {
	s := &Server{
		ctx:     ctx,
		log:     log,
		weft:    newWeftStore(AddressType, AuthorizationType, EnrolledNamespaceType),
		metrics: newMetrics(reg),
		clients: newClientTracker(),
		callers: &streamCallers{},

		grpcWanted: make(chan struct{}, 1),
	}
	s.newEnvoyCaches()
	mux := &cache.MuxCache{
		Classify:      func(r *cache.Request) string { return s.classify(r.GetTypeUrl(), r.GetNode()) },
		ClassifyDelta: func(r *cache.DeltaRequest) string { return s.classify(r.GetTypeUrl(), r.GetNode()) },
		Caches: map[string]cache.Cache{
			envoyKey:     holdNACKs{SnapshotCache: s.envoy, hash: nodeGroupHash{}},
			envoyGRPCKey: holdNACKs{SnapshotCache: s.envoyGRPC, hash: nodeGroupHash{}},
			weftKey:      deltaOnly{},
		},
	}
	s.xds = server.NewServer(ctx, mux, callbacks{s})
	return s
}

// ServerOptions are the gRPC server options the xDS server is built for
// (weft-control's server adds its credentials and interceptors).
//
// Fixed flow-control windows turn off gRPC's bandwidth-delay estimation,
// which answers every data frame received (an agent's ACK) with a PING
// and its acknowledgement: with 1,000 subscribers, one change cost 4.4
// reads and 2.8 writes per delivery with it, 3.9 and 2.0 without both
// ends' estimation, and 94-105 us of CPU per delivery instead of 114-157
// (BenchmarkPushTo1000Subscribers, four interleaved pairs).
// What a server receives is small (requests, certificate signing requests),
// so 1 MiB, Istio's xDS window, is ample.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.InitialWindowSize(1 << 20), grpc.InitialConnWindowSize(1 << 20)}
}

// Register adds the ADS service to a gRPC server.
func (s *Server) Register(g *grpc.Server) {
	discovery.RegisterAggregatedDiscoveryServiceServer(g, ads{Server: s.xds, s: s})
}

// Update replaces the complete state of one resource type. Resources equal
// to what was pushed before are not pushed again, so subscribers see only
// real changes. It returns how many resources changed or were removed.
func (s *Server) Update(typeURL string, desired map[string]proto.Message) int {
	if !s.weft.has(typeURL) {
		s.log.Error("xds update for unknown type", "type", typeURL)
		return 0
	}
	changed, size, errs := s.weft.set(typeURL, desired)
	s.metrics.configSize.WithLabelValues(typeURL).Set(float64(size))
	s.metrics.resources.WithLabelValues(typeURL).Set(float64(len(desired)))
	for _, err := range errs {
		s.log.Error("xds resource not serializable; its last version stays", "type", typeURL, "err", err)
	}
	if len(changed) == 0 {
		return 0
	}
	s.metrics.pushes.WithLabelValues(typeURL).Inc()
	return len(changed)
}

type metrics struct {
	clients     prometheus.Gauge
	pushes      *prometheus.CounterVec
	responses   *prometheus.CounterVec
	nacks       *prometheus.CounterVec
	pushLatency *prometheus.HistogramVec
	configSize  *prometheus.GaugeVec
	resources   *prometheus.GaugeVec
	groups      prometheus.Gauge
	groupSize   *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		clients: prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_xds_connected_clients", Help: "Open xDS streams (delta and state-of-the-world)."}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_xds_pushes_total",
			Help: "Configuration changes pushed into the xDS caches, per type."}, []string{"type"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_xds_responses_total",
			Help: "xDS responses sent (delta and state-of-the-world), per type."}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_xds_nacks_total",
			Help: "Configuration rejected by clients, per type."}, []string{"type"}),
		pushLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "weft_xds_push_latency_seconds",
			Help:    "Time from a change entering the cache to a response carrying it.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"type"}),
		configSize: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "weft_xds_config_size_bytes",
			Help: "Serialized size of the current configuration, per type."}, []string{"type"}),
		resources: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "weft_xds_resources",
			Help: "Resources in the current configuration, per type."}, []string{"type"}),
		groups: prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_xds_envoy_groups",
			Help: "Envoy snapshots served (waypoints plus the proxyless gRPC group)."}),
		groupSize: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "weft_xds_envoy_group_size_bytes",
			Help: "Serialized size of one Envoy snapshot, per group."}, []string{"group"}),
	}
	if reg != nil {
		reg.MustRegister(m.clients, m.pushes, m.responses, m.nacks, m.pushLatency, m.configSize, m.resources, m.groups, m.groupSize)
	}
	return m
}
