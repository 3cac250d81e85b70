package xds

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	gcplog "github.com/envoyproxy/go-control-plane/pkg/log"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// Node groups (see waypoint/README.md, "Identity and connection").
const (
	// GroupGRPC is the snapshot of proxyless gRPC clients (node IDs grpc~...).
	GroupGRPC = "grpc"
	// GroupNone is the empty snapshot of every other node.
	GroupNone = ""
	// GatewayGroupPrefix starts the group of an ingress gateway deployment:
	// "gateway:<ns>/<service account>" (node IDs gateway~<ns>/<sa>~<pod>).
	GatewayGroupPrefix = "gateway:"
)

// GatewayGroup is the group of the gateway pods running as service account
// "<ns>/<sa>" (control/waypoint's Output.GatewayProxies key).
func GatewayGroup(nsSA string) string { return GatewayGroupPrefix + nsSA }

// Keys of the MuxCache.
const (
	envoyKey     = "envoy"      // waypoints and unknown nodes: ADS-ordered snapshots
	weftKey      = "weft"       // Weft's types: refused, they have streams of their own
	envoyGRPCKey = "envoy-grpc" // proxyless gRPC: named SotW subscriptions
)

// Resources are the Envoy resources control serves to one node group
// (control/waypoint's translation makes them, each list sorted by name).
// All four types are set together, so a client never sees a Listener whose
// routes or clusters belong to another version.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
}

// NodeGroup maps a node ID to the snapshot it is served:
// waypoint~<ns>/<name>~<pod> -> "<ns>/<name>", gateway~<ns>/<sa>~<pod> ->
// "gateway:<ns>/<sa>", grpc~... -> "grpc", anything else -> "" (empty).
func NodeGroup(id string) string {
	n, err := mesh.ParseNodeID(id)
	if err != nil {
		return GroupNone
	}
	switch n.Kind {
	case mesh.KindWaypoint:
		return n.Key()
	case mesh.KindGateway:
		return GatewayGroup(n.Key())
	case mesh.KindGRPC:
		return GroupGRPC
	}
	return GroupNone
}

type nodeGroupHash struct{}

func (nodeGroupHash) ID(node *core.Node) string { return NodeGroup(node.GetId()) }

// waypointState is what was last set for one group.
type waypointState struct {
	fingerprint string
	version     string
}

// newEnvoyCaches makes the two snapshot caches. Waypoints (delta ADS, and
// Envoy-style SotW ADS) get an ADS-mode cache, which orders responses
// (CDS before EDS, LDS before RDS). Proxyless gRPC subscribes to SotW
// resources by name, a few at a time (LDS "<host>:<port>", then its RDS,
// CDS, EDS): an ADS-mode cache never answers a named request that is not a
// superset of the snapshot, so that group gets a cache without ADS mode.
func (s *Server) newEnvoyCaches() {
	logger := gcplog.LoggerFuncs{
		WarnFunc:  func(f string, a ...any) { s.log.Warn("xds snapshot cache: " + fmt.Sprintf(f, a...)) },
		ErrorFunc: func(f string, a ...any) { s.log.Error("xds snapshot cache: " + fmt.Sprintf(f, a...)) },
	}
	s.envoy = cache.NewSnapshotCache(true, nodeGroupHash{}, logger)
	s.envoyGRPC = cache.NewSnapshotCache(false, nodeGroupHash{}, logger)
	s.waypoints = map[string]waypointState{}
	// Every node that is not a waypoint or gRPC client gets an empty
	// snapshot: nothing, and no error.
	empty, _ := cache.NewSnapshot("empty", envoyResources(Resources{}))
	_ = s.envoy.SetSnapshot(context.Background(), GroupNone, empty)
}

// classify picks the cache of a request: Weft types by type URL, Envoy types
// by the node's group.
func (s *Server) classify(typeURL string, node *core.Node) string {
	if s.weft.has(typeURL) {
		return weftKey
	}
	if NodeGroup(node.GetId()) == GroupGRPC {
		return envoyGRPCKey
	}
	return envoyKey
}

func (s *Server) snapshotCache(group string) cache.SnapshotCache {
	if group == GroupGRPC {
		return s.envoyGRPC
	}
	return s.envoy
}

func envoyResources(r Resources) map[resourcev3.Type][]types.Resource {
	out := map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: make([]types.Resource, 0, len(r.Listeners)),
		resourcev3.RouteType:    make([]types.Resource, 0, len(r.Routes)),
		resourcev3.ClusterType:  make([]types.Resource, 0, len(r.Clusters)),
		resourcev3.EndpointType: make([]types.Resource, 0, len(r.Endpoints)),
	}
	for _, l := range r.Listeners {
		out[resourcev3.ListenerType] = append(out[resourcev3.ListenerType], l)
	}
	for _, rc := range r.Routes {
		out[resourcev3.RouteType] = append(out[resourcev3.RouteType], rc)
	}
	for _, c := range r.Clusters {
		out[resourcev3.ClusterType] = append(out[resourcev3.ClusterType], c)
	}
	for _, e := range r.Endpoints {
		out[resourcev3.EndpointType] = append(out[resourcev3.EndpointType], e)
	}
	return out
}

// fingerprint hashes a group's resources independently of their order,
// each by its digest in d (nil: none kept).
func fingerprint(r Resources, d *digests) (string, int) {
	type named struct {
		key string
		d   digest
	}
	var all []named
	size := 0
	add := func(typ, name string, m proto.Message) {
		dg := d.of(m)
		size += dg.size
		all = append(all, named{typ + "\x00" + name, dg})
	}
	for _, l := range r.Listeners {
		add(resourcev3.ListenerType, l.GetName(), l)
	}
	for _, rc := range r.Routes {
		add(resourcev3.RouteType, rc.GetName(), rc)
	}
	for _, c := range r.Clusters {
		add(resourcev3.ClusterType, c.GetName(), c)
	}
	for _, e := range r.Endpoints {
		add(resourcev3.EndpointType, e.GetClusterName(), e)
	}
	slices.SortFunc(all, func(a, b named) int { return cmp.Compare(a.key, b.key) })
	h := sha256.New()
	for _, n := range all {
		fmt.Fprintf(h, "%s\x00%d\x00", n.key, n.d.size)
		h.Write(n.d.sum[:])
	}
	return hex.EncodeToString(h.Sum(nil)), size
}

// digests keeps the digest of every resource of the last push by message,
// so that a push serializes and hashes only the resources that are new: a
// translation hands over the messages of what did not change again
// (control/waypoint's Translator), which must not be modified once set.
type digests struct{ last, next map[proto.Message]digest }

// digest is a resource's serialized size and its hash.
type digest struct {
	sum  [sha256.Size]byte
	size int
}

// of is m's digest, kept for the next push.
func (d *digests) of(m proto.Message) digest {
	if d != nil {
		if d.next == nil {
			d.next = map[proto.Message]digest{}
		}
		if dg, ok := d.next[m]; ok {
			return dg
		}
		if dg, ok := d.last[m]; ok {
			d.next[m] = dg
			return dg
		}
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		b = []byte(err.Error())
	}
	dg := digest{sha256.Sum256(b), len(b)}
	if d != nil {
		d.next[m] = dg
	}
	return dg
}

// rotate forgets the resources that were not in this push.
func (d *digests) rotate() { d.last, d.next = d.next, map[proto.Message]digest{} }

// SetWaypointSnapshots replaces the Envoy resources of every node group:
// "<ns>/<gateway>" for waypoints, GroupGRPC for proxyless gRPC. A group whose
// resources did not change keeps its snapshot and version (no push); a group
// that is no longer in groups is emptied. Snapshot versions are
// "<version>-<content hash>". It returns how many groups changed. The
// resources must not be modified once set: a message set again is known
// by its digest of last time.
func (s *Server) SetWaypointSnapshots(version string, groups map[string]Resources) int {
	s.envoyMu.Lock()
	defer s.envoyMu.Unlock()
	ctx := context.Background()
	changed := 0
	set := func(group string, r Resources) {
		fp, size := fingerprint(r, &s.digests)
		if prev, ok := s.waypoints[group]; ok && prev.fingerprint == fp {
			return
		}
		v := version + "-" + fp[:12]
		snap, err := cache.NewSnapshot(v, envoyResources(r))
		if err != nil {
			s.log.Error("xds snapshot", "group", group, "err", err)
			return
		}
		// Consistent does not follow the route names inside gRPC API
		// listeners, so it is wrong for that group.
		if err := snap.Consistent(); err != nil && group != GroupGRPC {
			// Served anyway: a client resolves what it can; the translation
			// is at fault and its tests should catch it.
			s.log.Warn("inconsistent xds snapshot", "group", group, "version", v, "err", err)
		}
		if err := s.snapshotCache(group).SetSnapshot(ctx, group, snap); err != nil {
			s.log.Error("xds set snapshot", "group", group, "err", err)
			return
		}
		s.waypoints[group] = waypointState{fingerprint: fp, version: v}
		s.metrics.pushes.WithLabelValues("envoy").Inc()
		s.metrics.groupSize.WithLabelValues(group).Set(float64(size))
		changed++
	}
	names := make([]string, 0, len(groups))
	for g := range groups {
		if g != GroupNone {
			names = append(names, g)
		}
	}
	slices.Sort(names)
	for _, g := range names {
		set(g, groups[g])
	}
	for g := range s.waypoints {
		if _, ok := groups[g]; !ok && g != GroupGRPC {
			set(g, Resources{}) // gone: its clients drop everything
			s.metrics.groupSize.DeleteLabelValues(g)
		}
	}
	s.digests.rotate()
	_, s.grpcServed = groups[GroupGRPC]
	if !s.grpcServed {
		s.leftOutGRPCLocked()
	}
	if changed > 0 {
		s.mu.Lock()
		s.pushedAt = time.Now()
		s.mu.Unlock()
	}
	s.metrics.groups.Set(float64(len(groups)))
	return changed
}

// ensureGroup gives a node's group an empty snapshot if it has none yet, so
// that a waypoint whose resources are not translated (yet) gets an empty
// answer, not a wait: weft-waypoint becomes ready when each type answered.
// Called for each request before its watch is made (delta requests carry
// the node on the first request of a stream only, whatever its type).
func (s *Server) ensureGroup(node *core.Node) {
	group := NodeGroup(node.GetId())
	if group == GroupNone {
		return
	}
	s.envoyMu.Lock()
	defer s.envoyMu.Unlock()
	if group == GroupGRPC {
		s.wantGRPCLocked()
		return
	}
	if _, ok := s.waypoints[group]; ok {
		return
	}
	fp, _ := fingerprint(Resources{}, nil)
	v := "empty-" + fp[:12]
	snap, _ := cache.NewSnapshot(v, envoyResources(Resources{}))
	if err := s.snapshotCache(group).SetSnapshot(context.Background(), group, snap); err != nil {
		s.log.Error("xds set snapshot", "group", group, "err", err)
		return
	}
	s.waypoints[group] = waypointState{fingerprint: fp, version: v}
}

// waypointVersion is the snapshot version of a group ("" if never set).
func (s *Server) waypointVersion(group string) string {
	s.envoyMu.Lock()
	defer s.envoyMu.Unlock()
	return s.waypoints[group].version
}
