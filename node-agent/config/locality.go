package config

import (
	"maps"
	"sync/atomic"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
)

// Locality-aware endpoint choice, as ztunnel's load_balance does it: a
// Service whose load_balancing has a routing_preference and a locality
// mode ranks each healthy endpoint by the number of leading scopes it
// shares with the client (the source workload). FAILOVER keeps the
// endpoints of the highest rank present, so traffic stays as close as it
// can and moves out only when no closer endpoint is healthy; STRICT keeps
// the endpoints that share every scope, or none.
//
// The chosen endpoints depend only on the port and on the client's values
// of the preferred scopes, so they are computed once per snapshot for each
// such (port, client locality) on first use and looked up without
// allocating afterwards.

// localityKey is a client's values of the scopes a Service prefers (the
// others are empty, so that clients that rank endpoints alike share one).
type localityKey struct {
	port                                 uint16
	region, zone, subzone, node, cluster string
}

// rankedEndpoints caches, for one Service of one snapshot, the endpoints
// chosen for each localityKey. The map is copied on write: readers never
// lock.
type rankedEndpoints struct {
	prefs  []workloadv1.LoadBalancing_Scope
	strict bool
	byKey  atomic.Pointer[map[localityKey][]Endpoint]
}

// newRankedEndpoints returns the cache for a Service with a locality
// preference, nil for one without (any endpoint will do).
func newRankedEndpoints(lb *workloadv1.LoadBalancing) *rankedEndpoints {
	prefs := lb.GetRoutingPreference()
	if len(prefs) == 0 || lb.GetLocalityMode() == workloadv1.LoadBalancing_UNSPECIFIED_LOCALITY_MODE {
		return nil
	}
	r := &rankedEndpoints{prefs: prefs, strict: lb.GetLocalityMode() == workloadv1.LoadBalancing_STRICT}
	r.byKey.Store(&map[localityKey][]Endpoint{})
	return r
}

// key is src's localityKey for port.
func (r *rankedEndpoints) key(port uint16, src *workloadv1.Workload) localityKey {
	k := localityKey{port: port}
	for _, s := range r.prefs {
		switch s {
		case workloadv1.LoadBalancing_REGION:
			k.region = src.GetLocality().GetRegion()
		case workloadv1.LoadBalancing_ZONE:
			k.zone = src.GetLocality().GetZone()
		case workloadv1.LoadBalancing_SUBZONE:
			k.subzone = src.GetLocality().GetSubzone()
		case workloadv1.LoadBalancing_NODE:
			k.node = src.GetNode()
		case workloadv1.LoadBalancing_CLUSTER:
			k.cluster = src.GetClusterId()
		}
	}
	return k
}

// endpoints returns the endpoints of eps (a port's healthy endpoints) that
// a client with src's locality may use; empty only under STRICT.
func (r *rankedEndpoints) endpoints(port uint16, src *workloadv1.Workload, eps []Endpoint) []Endpoint {
	k := r.key(port, src)
	if chosen, ok := (*r.byKey.Load())[k]; ok {
		return chosen
	}
	chosen := r.choose(k, eps)
	for {
		cur := r.byKey.Load()
		next := maps.Clone(*cur)
		next[k] = chosen
		if r.byKey.CompareAndSwap(cur, &next) {
			return chosen
		}
	}
}

// choose ranks eps for the client locality k and keeps the best rank.
func (r *rankedEndpoints) choose(k localityKey, eps []Endpoint) []Endpoint {
	best, chosen := -1, []Endpoint{}
	for _, ep := range eps {
		rank := r.rank(k, ep.Workload.Proto)
		if r.strict && rank < len(r.prefs) {
			continue
		}
		if rank > best {
			best, chosen = rank, chosen[:0:0]
		}
		if rank == best {
			chosen = append(chosen, ep)
		}
	}
	return chosen
}

// rank counts the leading preferred scopes that w shares with the client.
// Weft has one network, so NETWORK always matches (ztunnel compares
// network names, equal in a single-network mesh).
func (r *rankedEndpoints) rank(k localityKey, w *workloadv1.Workload) int {
	for i, s := range r.prefs {
		var same bool
		switch s {
		case workloadv1.LoadBalancing_REGION:
			same = k.region == w.GetLocality().GetRegion()
		case workloadv1.LoadBalancing_ZONE:
			same = k.zone == w.GetLocality().GetZone()
		case workloadv1.LoadBalancing_SUBZONE:
			same = k.subzone == w.GetLocality().GetSubzone()
		case workloadv1.LoadBalancing_NODE:
			same = k.node == w.GetNode()
		case workloadv1.LoadBalancing_CLUSTER:
			same = k.cluster == w.GetClusterId()
		case workloadv1.LoadBalancing_NETWORK:
			same = true
		}
		if !same {
			return i
		}
	}
	return len(r.prefs)
}
