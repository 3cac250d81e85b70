// Package xds serves Weft's configuration over the xDS protocol with
// go-control-plane, on one ADS endpoint (delta and state-of-the-world):
// Weft's own workload-discovery types for node agents (one LinearCache per
// type; callers hand it the complete desired state per type and it pushes
// only what changed), and Envoy's Listener, RouteConfiguration, Cluster and
// ClusterLoadAssignment for waypoints and proxyless gRPC (snapshot caches,
// one snapshot per node group, see NodeGroup).
package xds

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
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

// Server holds one go-control-plane LinearCache per Weft resource type and
// the Envoy snapshot caches behind a single ADS endpoint.
type Server struct {
	log     *slog.Logger
	caches  map[string]*cache.LinearCache
	xds     server.Server
	metrics *metrics

	envoyMu   sync.Mutex
	envoy     cache.SnapshotCache // waypoints and unknown nodes (ADS mode)
	envoyGRPC cache.SnapshotCache // proxyless gRPC (named SotW subscriptions)
	waypoints map[string]waypointState

	mu       sync.Mutex
	current  map[string]map[string]proto.Message // last state pushed, per type
	pushedAt time.Time                           // when the last change entered the caches
	// cacheVersions mirrors each LinearCache's version (one step per
	// UpdateResources), the system version of its responses.
	cacheVersions map[string]uint64

	ids     streamIDs      // one ID per stream, whichever kind
	clients *clientTracker // open streams and what they acknowledged
	callers *streamCallers // authenticated caller per stream
}

// New makes a server of Weft's types (Address, Authorization,
// EnrolledNamespace) and the Envoy types. Metrics are registered with reg.
func New(ctx context.Context, log *slog.Logger, reg prometheus.Registerer) *Server {
	s := &Server{
		log:     log,
		caches:  map[string]*cache.LinearCache{},
		current: map[string]map[string]proto.Message{},
		metrics: newMetrics(reg),

		cacheVersions: map[string]uint64{},
		clients:       newClientTracker(),
		callers:       &streamCallers{},
	}
	for _, t := range []string{AddressType, AuthorizationType, EnrolledNamespaceType} {
		s.caches[t] = cache.NewLinearCache(t)
		s.current[t] = map[string]proto.Message{}
	}
	s.newEnvoyCaches()
	mux := &cache.MuxCache{
		Classify:      func(r *cache.Request) string { return s.classify(r.GetTypeUrl(), r.GetNode()) },
		ClassifyDelta: func(r *cache.DeltaRequest) string { return s.classify(r.GetTypeUrl(), r.GetNode()) },
		Caches: map[string]cache.Cache{
			envoyKey:     holdNACKs{SnapshotCache: s.envoy, hash: nodeGroupHash{}},
			envoyGRPCKey: holdNACKs{SnapshotCache: s.envoyGRPC, hash: nodeGroupHash{}},
		},
	}
	for t, c := range s.caches {
		mux.Caches[t] = c
	}
	s.xds = server.NewServer(ctx, mux, callbacks{s})
	return s
}

// Register adds the ADS service to a gRPC server.
func (s *Server) Register(g *grpc.Server) {
	discovery.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
}

// Update replaces the complete state of one resource type. Resources equal
// to what was pushed before are not pushed again, so subscribers see only
// real changes. It returns how many resources changed or were removed.
func (s *Server) Update(typeURL string, desired map[string]proto.Message) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.caches[typeURL]
	if !ok {
		s.log.Error("xds update for unknown type", "type", typeURL)
		return 0
	}
	prev := s.current[typeURL]
	toUpdate := map[string]types.Resource{}
	var toDelete []string
	size := 0
	for name, res := range desired {
		size += proto.Size(res)
		if old, ok := prev[name]; !ok || !proto.Equal(old, res) {
			toUpdate[name] = res
		}
	}
	for name := range prev {
		if _, ok := desired[name]; !ok {
			toDelete = append(toDelete, name)
		}
	}
	s.metrics.configSize.WithLabelValues(typeURL).Set(float64(size))
	s.metrics.resources.WithLabelValues(typeURL).Set(float64(len(desired)))
	changed := len(toUpdate) + len(toDelete)
	if changed == 0 {
		return 0
	}
	s.pushedAt = time.Now()
	s.cacheVersions[typeURL]++ // UpdateResources steps the cache's version even when it fails
	if err := c.UpdateResources(toUpdate, toDelete); err != nil {
		s.log.Error("xds cache update", "type", typeURL, "err", err)
	}
	s.current[typeURL] = maps.Clone(desired)
	s.metrics.pushes.WithLabelValues(typeURL).Inc()
	return changed
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
