package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	wellknown "github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/pkg/dnsresolve"
	"github.com/weft-mesh/weft/pkg/mesh"
)

// ListenerName is the one Listener a waypoint serves (waypoint/README.md).
const ListenerName = mesh.WaypointListener

// Types are the xDS resource types the waypoint subscribes to, in the order
// a control plane should send them: Envoy's, then the mesh's workloads
// (AddressType, peer.go).
func Types() []string {
	return []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType, AddressType}
}

// Snapshot is one immutable compiled configuration. Cluster runtime state
// (endpoint load, outlier ejections, pooled connections) lives in the
// *cluster objects, which survive snapshots.
type Snapshot struct {
	Version  uint64
	chains   *chainSet
	clusters map[string]*cluster
	// ListenPorts are the ports of the Listeners other than "waypoint":
	// an ingress gateway's plain listeners (0.0.0.0_<port>), sorted.
	ListenPorts []uint16
	// Resources held, for /config_dump and readiness.
	Listeners, Routes, Clusters, Endpoints []string
}

// Store turns xDS updates into Snapshots. Handle is the xdsclient.Handler.
type Store struct {
	up  *Upstream
	log *slog.Logger

	mu        sync.Mutex
	listeners map[string]*listenerv3.Listener
	routes    map[string]*routev3.RouteConfiguration
	clusters  map[string]*clusterv3.Cluster
	clas      map[string]*endpointv3.ClusterLoadAssignment
	state     map[string]*cluster    // runtime clusters by name
	dns       map[string]*dnsCluster // the lookups of DNS clusters by name
	pipelines map[string]*pipelineAt // compiled HCM chains by chain name
	synced    map[string]bool
	version   uint64
	rejected  map[string]string // "type/name" -> last error, for /config_dump
	addresses map[string]*addressedWorkload

	// plan is the metric plan of the accepted listeners' stats filter;
	// usePlan (the proxy's Metrics) is told when it changes.
	plan    *metricPlan
	usePlan func(*metricPlan)
	// certs resolves the SDS names of clusters originating TLS (a
	// gateway's Secrets); nil on waypoints.
	certs Certificates

	cur atomic.Pointer[Snapshot]
	// workloads indexes addresses; nil until the Address type arrived.
	workloads atomic.Pointer[workloadIndex]
}

// pipelineAt caches one compiled pipeline with the inputs it came from, so
// an endpoint or cluster update does not recompile routes.
type pipelineAt struct {
	hcm *hcmv3.HttpConnectionManager
	rc  *routev3.RouteConfiguration
	h   http.Handler
}

// NewStore returns an empty store compiling pipelines against up.
func NewStore(up *Upstream, log *slog.Logger) *Store {
	if log == nil {
		log = slog.Default()
	}
	s := &Store{up: up, log: log,
		listeners: map[string]*listenerv3.Listener{}, routes: map[string]*routev3.RouteConfiguration{},
		clusters: map[string]*clusterv3.Cluster{}, clas: map[string]*endpointv3.ClusterLoadAssignment{},
		state: map[string]*cluster{}, dns: map[string]*dnsCluster{}, pipelines: map[string]*pipelineAt{}, synced: map[string]bool{},
		rejected: map[string]string{}, addresses: map[string]*addressedWorkload{}}
	s.cur.Store(&Snapshot{chains: &chainSet{}, clusters: map[string]*cluster{}})
	s.plan, s.usePlan = standardPlan, func(*metricPlan) {}
	return s
}

// Snapshot returns the current configuration (never nil).
func (s *Store) Snapshot() *Snapshot { return s.cur.Load() }

// Synced reports whether every type has been received at least once.
func (s *Store) Synced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range Types() {
		if !s.synced[t] {
			return false
		}
	}
	return true
}

// Rejected lists the resources whose latest version was rejected, with why.
func (s *Store) Rejected() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.rejected)
}

// Handle applies one xDS response. Every resource is checked on its own:
// good ones take effect, a bad one keeps its previous version (or stays
// absent) and its error is returned, which NACKs the response.
func (s *Store) Handle(typeURL string, updated map[string]proto.Message, removed []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	reject := func(name string, err error) {
		err = fmt.Errorf("%s %q rejected (its previous version, if any, stays in effect): %w", shortType(typeURL), name, err)
		s.rejected[shortType(typeURL)+"/"+name] = err.Error()
		errs = append(errs, err)
	}
	accept := func(name string) { delete(s.rejected, shortType(typeURL)+"/"+name) }
	switch typeURL {
	case resourcev3.ListenerType:
		applyTyped(s.listeners, updated, removed, func(_ string, l *listenerv3.Listener) error { return s.checkListener(l) }, accept, reject)
	case resourcev3.RouteType:
		applyTyped(s.routes, updated, removed, s.checkRoute, accept, reject)
	case resourcev3.ClusterType:
		applyTyped(s.clusters, updated, removed, func(_ string, c *clusterv3.Cluster) error {
			_, err := compileCluster(c, s.certs)
			return err
		}, accept, reject)
	case resourcev3.EndpointType:
		applyTyped(s.clas, updated, removed, func(_ string, cla *endpointv3.ClusterLoadAssignment) error {
			_, err := compileEndpoints(cla)
			return err
		}, accept, reject)
	case AddressType:
		s.handleAddresses(updated, removed, reject, accept)
	default:
		return fmt.Errorf("waypoint does not handle type %s", typeURL)
	}
	s.synced[typeURL] = true
	if typeURL != AddressType {
		s.rebuild()
	}
	err := errors.Join(errs...)
	if err != nil {
		s.log.Warn("xds resources rejected", "type", shortType(typeURL), "err", err)
	}
	return err
}

func shortType(t string) string {
	if i := len(t) - 1; i > 0 {
		for j := i; j >= 0; j-- {
			if t[j] == '.' {
				return t[j+1:]
			}
		}
	}
	return t
}

// applyTyped stores the updated resources of one type that pass check and
// deletes the removed ones; a resource of the wrong type or failing check
// is rejected and its previous version kept.
func applyTyped[T proto.Message](into map[string]T, updated map[string]proto.Message, removed []string,
	check func(string, T) error, accept func(string), reject func(string, error)) {
	for _, name := range slices.Sorted(maps.Keys(updated)) {
		m, ok := updated[name].(T)
		if !ok {
			var zero T
			reject(name, fmt.Errorf("not a %s but %T", zero.ProtoReflect().Descriptor().Name(), updated[name]))
			continue
		}
		if err := check(name, m); err != nil {
			reject(name, err)
			continue
		}
		into[name] = m
		accept(name)
	}
	for _, name := range removed {
		delete(into, name)
	}
}

// checkListener validates l and compiles its HCM chains whose routes are
// present (a route that comes later is checked when it arrives).
func (s *Store) checkListener(l *listenerv3.Listener) error {
	chains, err := parseChains(l)
	if err != nil {
		return err
	}
	var errs []error
	if err := checkStats(chains); err != nil {
		errs = append(errs, err)
	}
	for _, c := range chains {
		if c.hcm == nil {
			continue
		}
		if rc := s.routes[c.rcName]; rc != nil {
			if _, err := compilePipeline(c.hcm, rc, s.up); err != nil {
				errs = append(errs, fmt.Errorf("filter chain %q with route %q: %w", c.name, c.rcName, err))
			}
		}
	}
	return errors.Join(errs...)
}

// defaultHCM validates a RouteConfiguration no chain references yet.
var defaultHCM = &hcmv3.HttpConnectionManager{
	StatPrefix: "validate",
	HttpFilters: []*hcmv3.HttpFilter{{Name: wellknown.Router,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}}},
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

// checkRoute compiles rc with every HCM that references it.
func (s *Store) checkRoute(name string, rc *routev3.RouteConfiguration) error {
	var errs []error
	used := false
	for _, l := range s.listeners {
		chains, _ := parseChains(l)
		for _, c := range chains {
			if c.hcm == nil || c.rcName != name {
				continue
			}
			used = true
			if _, err := compilePipeline(c.hcm, rc, s.up); err != nil {
				errs = append(errs, fmt.Errorf("with filter chain %q: %w", c.name, err))
			}
		}
	}
	if !used {
		if _, err := compilePipeline(defaultHCM, rc, s.up); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// rebuild compiles the accepted resources into a new Snapshot and swaps it
// in. Called with s.mu held.
func (s *Store) rebuild() {
	s.version++
	snap := &Snapshot{Version: s.version, clusters: s.rebuildClusters()}
	var names []string
	names, snap.ListenPorts = s.listenerOrder()
	chains := s.collectChains(names)
	s.attachPipelines(chains)
	s.applyStats(chains)
	snap.chains = newChainSet(chains)
	snap.Listeners = slices.Sorted(maps.Keys(s.listeners))
	snap.Routes = slices.Sorted(maps.Keys(s.routes))
	snap.Clusters = slices.Sorted(maps.Keys(s.clusters))
	snap.Endpoints = slices.Sorted(maps.Keys(s.clas))
	s.cur.Store(snap)
	s.up.setClusters(snap.clusters)
}

// rebuildClusters returns the runtime clusters of the accepted Clusters.
// Runtime objects persist; their settings and endpoints are swapped.
func (s *Store) rebuildClusters() map[string]*cluster {
	clusters := map[string]*cluster{}
	for name, c := range s.clusters {
		settings, err := compileCluster(c, s.certs)
		if err != nil { // checked on arrival; cannot happen
			continue
		}
		rc := s.state[name]
		if rc == nil {
			rc = newCluster(name)
			s.state[name] = rc
		}
		rc.setSettings(settings)
		if settings.dns != nil {
			s.resolve(rc, settings.dns)
		} else {
			s.stopDNS(name)
			var eps []*endpoint
			if cla := s.clas[name]; cla != nil {
				eps, _ = compileEndpoints(cla)
			}
			rc.setEndpoints(eps)
			rc.dnsErr.Store(nil)
		}
		clusters[name] = rc
	}
	for name := range s.state {
		if _, ok := s.clusters[name]; !ok {
			s.stopDNS(name)
			delete(s.state, name) // idle pooled connections time out on their own
		}
	}
	return clusters
}

// resolve keeps the names of DNS cluster rc resolved (its endpoints come
// from the answers, not from EDS), restarting the lookups only when the
// names or how to look them up changed. Called with s.mu held.
func (s *Store) resolve(rc *cluster, ds *dnsSettings) {
	prev := s.dns[rc.name]
	if prev != nil && prev.key == ds.key() {
		return
	}
	if prev != nil {
		prev.stop()
	}
	s.dns[rc.name] = startDNS(rc, ds, s.up.lookupFunc(), s.log, prev == nil)
}

// dnsCounts counts the names of the DNS clusters by state (for
// weft_waypoint_dns_hosts).
func (s *Store) dnsCounts() dnsresolve.Counts {
	s.mu.Lock()
	ds := slices.Collect(maps.Values(s.dns))
	s.mu.Unlock()
	var c dnsresolve.Counts
	for _, d := range ds {
		d.mu.Lock()
		for _, w := range d.watchers {
			c.Add(w.State())
		}
		d.mu.Unlock()
	}
	return c
}

// stopLookups ends the lookups of every DNS cluster (the proxy closes).
func (s *Store) stopLookups() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name := range s.dns {
		s.stopDNS(name)
	}
}

// stopDNS ends the lookups of a cluster that is gone or no longer DNS.
func (s *Store) stopDNS(name string) {
	if d := s.dns[name]; d != nil {
		d.stop()
		delete(s.dns, name)
	}
}

// listenerOrder returns the names of the listeners whose chains are served,
// in order: "waypoint" (HBONE), then a gateway's plain listeners by name;
// and the sorted ports of the plain listeners.
func (s *Store) listenerOrder() (names []string, ports []uint16) {
	names = []string{ListenerName}
	for _, name := range slices.Sorted(maps.Keys(s.listeners)) {
		if name == ListenerName {
			continue
		}
		names = append(names, name)
		if p := s.listeners[name].GetAddress().GetSocketAddress().GetPortValue(); p > 0 && p <= 65535 {
			ports = append(ports, uint16(p))
		}
	}
	slices.Sort(ports)
	return names, slices.Compact(ports)
}

// collectChains returns the filter chains of the named listeners. Chains
// select by destination port, so one set serves them all; a chain name
// used twice is served once (the first).
func (s *Store) collectChains(listeners []string) []*chain {
	var chains []*chain
	seen := map[string]bool{}
	for _, name := range listeners {
		l := s.listeners[name]
		if l == nil {
			continue
		}
		cs, _ := parseChains(l)
		for _, c := range cs {
			if seen[c.name] {
				s.log.Warn("filter chain name used by two listeners; serving the first", "chain", c.name, "listener", name)
				continue
			}
			seen[c.name] = true
			chains = append(chains, c)
		}
	}
	return chains
}

// attachPipelines gives every HCM chain whose route is present its compiled
// pipeline, reusing the cached one while its inputs are unchanged, and
// drops the cached pipelines of chains that are gone.
func (s *Store) attachPipelines(chains []*chain) {
	live := map[string]bool{}
	for _, c := range chains {
		live[c.name] = true
		if c.hcm == nil {
			continue
		}
		rc := s.routes[c.rcName]
		if rc == nil {
			continue // served with 503 NR until the route arrives
		}
		if p := s.pipelines[c.name]; p != nil && p.rc == rc && proto.Equal(p.hcm, c.hcm) {
			c.handler = p.h
			continue
		}
		h, err := compilePipeline(c.hcm, rc, s.up)
		if err != nil {
			// Checked on arrival; keep the previous pipeline if any.
			s.log.Warn("compiling filter chain", "chain", c.name, "route", c.rcName, "err", err)
			if p := s.pipelines[c.name]; p != nil {
				c.handler = p.h
			}
			continue
		}
		s.pipelines[c.name] = &pipelineAt{hcm: c.hcm, rc: rc, h: h}
		c.handler = h
	}
	for name := range s.pipelines {
		if !live[name] {
			delete(s.pipelines, name)
		}
	}
}
