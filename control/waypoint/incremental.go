package waypoint

import (
	"maps"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/control/inputset"
	"github.com/weft-mesh/weft/control/xds"
)

// Translator translates as Translate does, remembering its last full
// translation: when all that changed since is the health of workloads
// (pods turning ready or unready, a cluster's most frequent change), it
// makes again only the load assignments those workloads are endpoints of
// and returns every other resource as it was, instead of translating the
// world. Any other change (a pod added, removed or relabelled, any other
// object) translates everything. The output is the same as Translate's on
// the same inputs (TestTranslatorMatchesTranslate).
//
// "Unchanged" is the same pointer, as for control/workload's Translator:
// informer caches hand out one object until it changes, so callers must
// never modify an input in place. A Translator is not safe for concurrent
// use.
type Translator struct {
	cfg  Config
	last *translation // nil before the first call and after a panic
	// rebuilt is the load assignments the last call made again; full
	// whether it translated everything instead.
	rebuilt int
	full    bool
}

// translation is one full translation, what it read and its translator,
// whose indexes make load assignments again.
type translation struct {
	t        *translator
	out      Output
	skipGRPC bool
	// context is every input object but pods and addresses.
	context   *inputset.Set
	pods      map[string]*corev1.Pod // by "<namespace>/<name>"
	addresses map[string]*workloadv1.Address
}

// claSource is how one load assignment was made: from the endpoints of
// key ("<fqdn>:<port>"), by build.
type claSource struct {
	key   string
	build func() *endpointv3.ClusterLoadAssignment
}

// NewTranslator returns a Translator with nothing translated yet.
func NewTranslator(cfg Config) *Translator { return &Translator{cfg: withDefaults(cfg)} }

// Translate converts the snapshot into Envoy resources, as the package's
// Translate does. Resources that did not change are the ones it returned
// before: treat them as read-only.
func (tr *Translator) Translate(in Inputs) Output {
	defer func() {
		if r := recover(); r != nil {
			tr.last = nil // half-updated indexes are not reused
			panic(r)
		}
	}()
	if tr.last != nil {
		if c, ok := tr.last.healthChanges(in); ok {
			tr.rebuilt, tr.full = tr.last.rebuildEndpoints(c), false
			return tr.last.out
		}
	}
	t, out := translate(tr.cfg, in)
	tr.last = newTranslation(t, out, in)
	tr.rebuilt, tr.full = len(out.endpoints()), true
	return out
}

// Rebuilt is how many load assignments the last Translate made again and
// whether it translated everything (then every one of them).
func (tr *Translator) Rebuilt() (loadAssignments int, full bool) { return tr.rebuilt, tr.full }

func newTranslation(t *translator, out Output, in Inputs) *translation {
	l := &translation{t: t, out: out, skipGRPC: in.SkipGRPC, addresses: maps.Clone(in.Addresses),
		pods: make(map[string]*corev1.Pod, len(in.Pods))}
	l.context = contextOf(in)
	for _, p := range in.Pods {
		if p != nil {
			l.pods[p.Namespace+"/"+p.Name] = p
		}
	}
	return l
}

// contextOf is the set of in's objects other than pods and addresses.
func contextOf(in Inputs) *inputset.Set {
	s := inputset.New()
	inputset.Add(s, in.Services)
	inputset.Add(s, in.VirtualServices)
	inputset.Add(s, in.DestinationRules)
	inputset.Add(s, in.HTTPRoutes)
	inputset.Add(s, in.AuthorizationPolicies)
	inputset.Add(s, in.RequestAuthentications)
	inputset.Add(s, in.IstioGateways)
	inputset.Add(s, in.IngressGateways)
	inputset.Add(s, in.Namespaces)
	inputset.Add(s, in.ServiceEntries)
	inputset.Add(s, in.EnvoyFilters)
	inputset.Add(s, in.Telemetries)
	inputset.Add(s, in.ReferenceGrants)
	return s
}

// healthChange is what changed since a translation when only workloads'
// health did: those workloads by uid, and the new objects of the
// addresses and pods that changed.
type healthChange struct {
	workloads map[string]*workloadv1.Workload
	addresses map[string]*workloadv1.Address
	pods      []*corev1.Pod
}

// healthChanges returns what changed since l; ok is false when anything
// but workloads' health did.
func (l *translation) healthChanges(in Inputs) (c healthChange, ok bool) {
	if in.SkipGRPC != l.skipGRPC || len(in.Addresses) != len(l.addresses) {
		return c, false
	}
	if c.pods, ok = l.changedPods(in.Pods); !ok {
		return c, false
	}
	if !contextOf(in).Equal(l.context) {
		return c, false
	}
	c.workloads, c.addresses = map[string]*workloadv1.Workload{}, map[string]*workloadv1.Address{}
	for k, a := range in.Addresses {
		old, found := l.addresses[k]
		if !found {
			return c, false
		}
		if old == a || proto.Equal(old, a) { // Services are translated anew on every push
			continue
		}
		w, was := a.GetWorkload(), old.GetWorkload()
		if w == nil || was == nil || w.Uid != was.Uid || !sameButHealth(was, w) {
			return c, false
		}
		c.workloads[w.Uid], c.addresses[k] = w, a
	}
	return c, true
}

// sameButHealth: a and b differ in their status at most.
func sameButHealth(a, b *workloadv1.Workload) bool {
	c := proto.CloneOf(a)
	c.Status = b.Status
	return proto.Equal(c, b)
}

// changedPods returns the pods that are not l's; ok is false when one
// differs from l's in what the translation reads (a pod's readiness is in
// its status conditions, read through its workload's health) or when pods
// were added or removed.
func (l *translation) changedPods(pods []*corev1.Pod) (changed []*corev1.Pod, ok bool) {
	n := 0
	for _, p := range pods {
		if p == nil {
			continue
		}
		n++
		old := l.pods[p.Namespace+"/"+p.Name]
		if old == p {
			continue
		}
		if old == nil || !sameForWaypoints(old, p) {
			return nil, false
		}
		changed = append(changed, p)
	}
	return changed, n == len(l.pods)
}

// sameForWaypoints compares every field of a pod the translation reads.
func sameForWaypoints(a, b *corev1.Pod) bool {
	return maps.Equal(a.Labels, b.Labels) && a.DeletionTimestamp.Equal(b.DeletionTimestamp) &&
		a.Status.Phase == b.Status.Phase && apiequality.Semantic.DeepEqual(a.Spec, b.Spec)
}

// rebuildEndpoints brings l up to date with c: it makes again the load
// assignments with one of c's workloads as an endpoint, in new copies of
// the groups holding them, and returns how many it made.
func (l *translation) rebuildEndpoints(c healthChange) int {
	t, changed := l.t, c.workloads
	for i, w := range t.workloads {
		if w2 := changed[w.Uid]; w2 != nil {
			t.workloads[i] = w2
		}
	}
	keys := map[string]bool{} // endpoint keys the changed workloads are in
	for key, eps := range t.endpoints {
		for i := range eps {
			if w2 := changed[eps[i].workload.Uid]; w2 != nil {
				eps[i].workload = w2
				keys[key] = true
			}
		}
	}
	made := map[*endpointv3.ClusterLoadAssignment]*endpointv3.ClusterLoadAssignment{}
	update := func(r *xds.Resources) *xds.Resources {
		var eps []*endpointv3.ClusterLoadAssignment // copied on the first change
		for i, cla := range r.Endpoints {
			src := t.claSources[cla]
			if !keys[src.key] {
				continue
			}
			if eps == nil {
				eps = append([]*endpointv3.ClusterLoadAssignment(nil), r.Endpoints...)
			}
			if made[cla] == nil {
				made[cla] = src.build()
			}
			eps[i] = made[cla]
		}
		if eps == nil {
			return r
		}
		c := *r
		c.Endpoints = eps
		return &c
	}
	out := l.out
	out.Waypoints, out.GatewayProxies = updateAll(out.Waypoints, update), updateAll(out.GatewayProxies, update)
	if out.GRPC != nil {
		out.GRPC = update(out.GRPC)
	}
	for old, cla := range made {
		t.claSources[cla] = t.claSources[old]
		delete(t.claSources, old)
	}
	l.out = out
	maps.Copy(l.addresses, c.addresses)
	for _, p := range c.pods {
		l.pods[p.Namespace+"/"+p.Name] = p
	}
	return len(made)
}

func updateAll(groups map[string]*xds.Resources, update func(*xds.Resources) *xds.Resources) map[string]*xds.Resources {
	if groups == nil {
		return nil
	}
	out := make(map[string]*xds.Resources, len(groups))
	for k, r := range groups {
		out[k] = update(r)
	}
	return out
}

// recordCLA makes a load assignment with build and records how, for
// rebuildEndpoints.
func (t *translator) recordCLA(key string, build func() *endpointv3.ClusterLoadAssignment) *endpointv3.ClusterLoadAssignment {
	cla := build()
	t.claSources[cla] = claSource{key: key, build: build}
	return cla
}

// endpoints are every load assignment of o.
func (o Output) endpoints() []*endpointv3.ClusterLoadAssignment {
	var all []*endpointv3.ClusterLoadAssignment
	for _, r := range o.Groups() {
		all = append(all, r.Endpoints...)
	}
	return all
}
