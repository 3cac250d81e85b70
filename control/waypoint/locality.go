package waypoint

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingapi "istio.io/api/networking/v1alpha3"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/pkg/mesh"
)

// Labels Istio adds to both the proxy's and the endpoints' labels
// (AugmentLabels), so that failoverPriority can name them.
const (
	labelRegion   = "topology.kubernetes.io/region"
	labelZone     = "topology.kubernetes.io/zone"
	labelSubzone  = "topology.istio.io/subzone"
	labelCluster  = "topology.istio.io/cluster"
	labelHostname = "kubernetes.io/hostname"
)

// proxyLocality is where the proxy a load assignment is made for runs:
// istiod computes locality priorities per proxy, and so does the
// translation, per waypoint.
type proxyLocality struct {
	locality *corev3.Locality
	labels   map[string]string
	// notApplied explains why locality load balancing cannot be applied
	// for this proxy ("": it can, or the proxy's locality is not known
	// yet because it does not run).
	notApplied string
}

// notForGateways: an ingress gateway deployment is served one snapshot,
// for whose pods' localities the translation does not look.
var notForGateways = &proxyLocality{notApplied: "ingress gateways do not apply it"}

// grpcClients: the proxyless gRPC snapshot is shared by every client
// and made whether or not there are any, so that it does not apply is
// documented rather than reported on every DestinationRule.
var grpcClients = &proxyLocality{}

// waypointLocality is the locality and labels of the waypoint's pods.
// Replicas in different localities would each need their own priorities,
// but they share one snapshot: then nothing is applied.
func (t *translator) waypointLocality(key string) *proxyLocality {
	ns, name, _ := strings.Cut(key, "/")
	var found []*workloadv1.Workload
	for _, w := range t.workloads {
		if w.Namespace == ns && t.podLabels[w.Uid][mesh.LabelGatewayName] == name {
			found = append(found, w)
		}
	}
	if len(found) == 0 {
		return &proxyLocality{}
	}
	locs := map[string]bool{}
	for _, w := range found {
		locs[localityString(localityOf(w))] = true
	}
	if len(locs) > 1 {
		return &proxyLocality{notApplied: fmt.Sprintf("the replicas of waypoint %s run in different localities (%s), which one snapshot cannot serve",
			key, strings.Join(slices.Sorted(maps.Keys(locs)), ", "))}
	}
	return &proxyLocality{locality: localityOf(found[0]), labels: t.localityLabels(found[0])}
}

func localityOf(w *workloadv1.Workload) *corev3.Locality {
	l := w.GetLocality()
	return &corev3.Locality{Region: l.GetRegion(), Zone: l.GetZone(), SubZone: l.GetSubzone()}
}

func localityString(l *corev3.Locality) string {
	return l.GetRegion() + "/" + l.GetZone() + "/" + l.GetSubZone()
}

// localityLabels are a workload's pod labels with the topology labels Istio
// adds.
func (t *translator) localityLabels(w *workloadv1.Workload) map[string]string {
	out := maps.Clone(t.podLabels[w.Uid])
	if out == nil {
		out = map[string]string{}
	}
	l := w.GetLocality()
	for k, v := range map[string]string{labelRegion: l.GetRegion(), labelZone: l.GetZone(), labelSubzone: l.GetSubzone(),
		labelCluster: w.ClusterId, labelHostname: w.Node} {
		if v != "" {
			out[k] = v
		}
	}
	return out
}

// localityEndpoints are the endpoints of one locality and the labels of
// each (for failoverPriority).
type localityEndpoints struct {
	lle    *endpointv3.LocalityLbEndpoints
	labels []map[string]string
}

// groupByLocality makes one LocalityLbEndpoints per locality, weighted by
// its number of endpoints (as istiod does), sorted by locality.
func groupByLocality(lbs []*endpointv3.LbEndpoint, locs []*corev3.Locality, labels []map[string]string) []*localityEndpoints {
	byLoc := map[string]*localityEndpoints{}
	for i, lb := range lbs {
		k := localityString(locs[i])
		g := byLoc[k]
		if g == nil {
			g = &localityEndpoints{lle: &endpointv3.LocalityLbEndpoints{Locality: locs[i]}}
			byLoc[k] = g
		}
		g.lle.LbEndpoints = append(g.lle.LbEndpoints, lb)
		g.labels = append(g.labels, labels[i])
	}
	out := make([]*localityEndpoints, 0, len(byLoc))
	for _, k := range slices.Sorted(maps.Keys(byLoc)) {
		g := byLoc[k]
		g.lle.LoadBalancingWeight = wrapperspb.UInt32(uint32(len(g.lle.LbEndpoints)))
		out = append(out, g)
	}
	return out
}

// localitySetting is the localityLbSetting that applies to ref's cluster,
// nil when locality load balancing is off: explicitly disabled, or neither
// distribute nor outlier detection (Istio fails over only with outlier
// detection, since without it Envoy never sees a priority unhealthy).
// Without a setting, Istio's mesh default applies: enabled, no rules.
func (t *translator) localitySetting(ref clusterRef) *networkingapi.LocalityLoadBalancerSetting {
	p := t.policyFor(ref)
	s := p.lb.GetLocalityLbSetting()
	if s != nil && s.Enabled != nil && !s.Enabled.Value {
		return nil
	}
	if len(s.GetDistribute()) > 0 {
		return s
	}
	if p.outlier == nil {
		if len(s.GetFailover()) > 0 || len(s.GetFailoverPriority()) > 0 {
			t.drProblem(ref, "localityLbSetting of cluster %s: failover and failoverPriority need outlierDetection (as in Istio); not applied", ref.name())
		}
		return nil
	}
	if s == nil {
		s = &networkingapi.LocalityLoadBalancerSetting{}
	}
	return s
}

// drProblem reports a problem of the DestinationRule of ref's host.
func (t *translator) drProblem(ref clusterRef, format string, args ...any) {
	if dr := t.destinationRules[ref.svc.fqdn]; dr != nil {
		t.problem(kindDR, dr.obj.Namespace, dr.obj.Name, format, args...)
	}
}

// applyLocality sets the priorities and weights of the localities for the
// proxy, as istiod's ApplyLocalityLoadBalancer: distribute rewrites the
// weights (and drops localities it does not name); otherwise
// failoverPriority, then failover (or, without rules, proximity: same
// region, zone and subzone first) set priorities.
func (t *translator) applyLocality(ref clusterRef, groups []*localityEndpoints, proxy *proxyLocality) []*localityEndpoints {
	s := t.localitySetting(ref)
	if s == nil || len(groups) == 0 {
		return groups
	}
	if proxy.notApplied != "" || proxy.locality == nil {
		if proxy.notApplied != "" && t.policyFor(ref).lb.GetLocalityLbSetting() != nil {
			t.drProblem(ref, "localityLbSetting of cluster %s: %s; not applied", ref.name(), proxy.notApplied)
		}
		return groups
	}
	if len(s.Distribute) > 0 {
		return distribute(proxy.locality, groups, s.Distribute)
	}
	if len(s.FailoverPriority) > 0 && len(proxy.labels) > 0 {
		groups = failoverPriority(groups, proxy.labels, s.FailoverPriority)
	}
	if len(s.FailoverPriority) == 0 || len(s.Failover) > 0 {
		failover(proxy.locality, groups, s.Failover)
	}
	return compactPriorities(groups)
}

// localityMatch is whether l is in rule ("region/zone/subzone", where "*"
// or a missing part matches everything from there on).
func localityMatch(l *corev3.Locality, rule string) bool {
	have := []string{l.GetRegion(), l.GetZone(), l.GetSubZone()}
	for i, part := range strings.SplitN(rule, "/", 3) {
		if part == "*" {
			return true
		}
		if part != have[i] {
			return false
		}
	}
	return true
}

// distribute applies the first rule whose from matches the proxy: each to
// entry shares its weight among the localities it matches (not matched by
// an earlier entry) in proportion to their endpoints; localities no entry
// matches get no traffic.
func distribute(proxy *corev3.Locality, groups []*localityEndpoints, rules []*networkingapi.LocalityLoadBalancerSetting_Distribute) []*localityEndpoints {
	for _, r := range rules {
		if r == nil || !localityMatch(proxy, r.From) {
			continue
		}
		weights := make([]uint32, len(groups))
		for _, to := range slices.Sorted(maps.Keys(r.To)) {
			var matched []int
			total := 0
			for i, g := range groups {
				if weights[i] == 0 && localityMatch(g.lle.Locality, to) {
					matched = append(matched, i)
					total += len(g.lle.LbEndpoints)
				}
			}
			for _, i := range matched {
				weights[i] = uint32(math.Ceil(float64(len(groups[i].lle.LbEndpoints)) * float64(r.To[to]) / float64(total)))
			}
		}
		var out []*localityEndpoints
		for i, g := range groups {
			if weights[i] > 0 {
				g.lle.LoadBalancingWeight = wrapperspb.UInt32(weights[i])
				out = append(out, g)
			}
		}
		return out
	}
	return groups
}

// lbPriority is istiod's proximity: 0 same region, zone and subzone, 1
// same zone, 2 same region, 3 elsewhere.
func lbPriority(proxy, ep *corev3.Locality) uint32 {
	switch {
	case proxy.GetRegion() != ep.GetRegion():
		return 3
	case proxy.GetZone() != ep.GetZone():
		return 2
	case proxy.GetSubZone() != ep.GetSubZone():
		return 1
	}
	return 0
}

// failover sets priorities by proximity, below those already set; another
// region is 3 when a failover rule from the proxy's region names it (or
// none does), else 4.
func failover(proxy *corev3.Locality, groups []*localityEndpoints, rules []*networkingapi.LocalityLoadBalancerSetting_Failover) {
	for _, g := range groups {
		p := lbPriority(proxy, g.lle.Locality)
		if p == 3 {
			for _, r := range rules {
				if r.GetFrom() == proxy.GetRegion() {
					if g.lle.Locality.GetRegion() != r.GetTo() {
						p = 4
					}
					break
				}
			}
		}
		g.lle.Priority = g.lle.Priority*5 + p
	}
}

// failoverPriority splits each locality by how many of the labels (in
// order) an endpoint shares with the proxy ("key=value": has that value):
// all of N, priority 0; a mismatch at label j, priority N-j.
func failoverPriority(groups []*localityEndpoints, proxyLabels map[string]string, labels []string) []*localityEndpoints {
	var out []*localityEndpoints
	for _, g := range groups {
		split := map[uint32]*localityEndpoints{}
		for i, lb := range g.lle.LbEndpoints {
			p := uint32(0)
			for j, l := range labels {
				key, want, pinned := strings.Cut(l, "=")
				if !pinned {
					want = proxyLabels[key]
				}
				if g.labels[i][key] != want {
					p = uint32(len(labels) - j)
					break
				}
			}
			if split[p] == nil {
				split[p] = &localityEndpoints{lle: &endpointv3.LocalityLbEndpoints{Locality: g.lle.Locality, Priority: p}}
			}
			split[p].lle.LbEndpoints = append(split[p].lle.LbEndpoints, lb)
			split[p].labels = append(split[p].labels, g.labels[i])
		}
		for _, p := range slices.Sorted(maps.Keys(split)) {
			s := split[p]
			s.lle.LoadBalancingWeight = wrapperspb.UInt32(uint32(len(s.lle.LbEndpoints)))
			out = append(out, s)
		}
	}
	return out
}

// compactPriorities renumbers the priorities 0..N without gaps (Envoy
// requires it) and sorts by priority, then locality.
func compactPriorities(groups []*localityEndpoints) []*localityEndpoints {
	used := map[uint32]bool{}
	for _, g := range groups {
		used[g.lle.Priority] = true
	}
	order := slices.Sorted(maps.Keys(used))
	for _, g := range groups {
		i, _ := slices.BinarySearch(order, g.lle.Priority)
		g.lle.Priority = uint32(i)
	}
	slices.SortStableFunc(groups, func(a, b *localityEndpoints) int {
		return cmp.Or(cmp.Compare(a.lle.Priority, b.lle.Priority),
			cmp.Compare(localityString(a.lle.Locality), localityString(b.lle.Locality)))
	})
	return groups
}
