package config

import (
	"runtime"
	"sync"
	"unique"
	"weak"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
)

// The node agent holds every workload of the cluster, decoded: protobuf
// allocates each string, map and message of each one on its own. Much of
// it repeats across workloads (a namespace's pods, a node's pods, a
// service account's, every workload's trust domain, a Deployment's
// replicas' services), so each decoded workload's repeated parts are
// swapped for one canonical copy per value and the decoded ones become
// garbage (TestInternedWorkloadsShare, docs/benchmarks.md). A canonical
// copy costs its table entry (50-100 bytes) and saves 16-48 bytes per
// workload sharing it, so only fields shared by many workloads are
// interned: not name or addresses (one workload's), nor the canonical and
// workload names (a Deployment's few replicas). The uid is one workload's
// too, but equal to its resource name, which the store and the xDS
// client's versions keep anyway: it refers to that copy. A canonical copy
// lives as long as a workload refers to it.

// internWorkload makes w's repeated parts canonical and returns the shared
// services map it now refers to (nil if it has none), which the Workload
// holding w must keep. w is the store's own decoded copy (the xDS client
// hands it over), not yet shared; it is read-only from here on. name is
// its resource name, equal to its uid (parseWorkload checked).
func internWorkload(name string, w *workloadv1.Workload) *sharedServices {
	w.Uid = name
	for _, s := range []*string{&w.Namespace, &w.Node, &w.ServiceAccount, &w.TrustDomain,
		&w.CanonicalRevision, &w.WorkloadType, &w.ClusterId} {
		*s = intern(*s)
	}
	if l := w.GetLocality(); l != nil {
		l.Region, l.Zone, l.Subzone = intern(l.Region), intern(l.Zone), intern(l.Subzone)
	}
	if len(w.Services) == 0 {
		return nil
	}
	shared := shareServices(w.Services)
	w.Services = shared.m
	return shared
}

// internID returns id with its string made canonical: every workload of a
// service account has the same identity.
func internID(id spiffeid.ID) spiffeid.ID {
	canonical, err := spiffeid.FromString(intern(id.String()))
	if err != nil {
		return id // cannot happen: id was valid
	}
	return canonical
}

func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

// sharedServices is one canonical Workload.services map (the services
// selecting a workload and its ports on each): a Deployment's replicas have
// the same. It is shared read-only; whoever refers to m keeps the struct.
type sharedServices struct {
	m map[string]*workloadv1.PortList
}

// servicesCache finds the canonical map of a content (the map's
// deterministic encoding) while some workload holds it: the entries are
// weak, and each is removed once its map is collected. Encoding into one
// buffer and looking up by it allocates nothing for a map already held.
var servicesCache struct {
	sync.Mutex
	byContent map[string]weak.Pointer[sharedServices]
	scratch   workloadv1.Workload // holds the map being encoded
	buf       []byte
}

func shareServices(m map[string]*workloadv1.PortList) *sharedServices {
	c := &servicesCache
	c.Lock()
	defer c.Unlock()
	c.scratch.Services = m
	b, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend(c.buf[:0], &c.scratch)
	c.scratch.Services = nil
	if err != nil {
		return &sharedServices{m: m} // cannot happen: m was decoded; just not shared
	}
	c.buf = b
	if s := c.byContent[string(b)].Value(); s != nil {
		return s
	}
	s := &sharedServices{m: make(map[string]*workloadv1.PortList, len(m))}
	for k, v := range m {
		s.m[intern(k)] = v
	}
	if c.byContent == nil {
		c.byContent = map[string]weak.Pointer[sharedServices]{}
	}
	content, wp := string(b), weak.Make(s)
	c.byContent[content] = wp
	runtime.AddCleanup(s, func(content string) {
		c.Lock()
		defer c.Unlock()
		if c.byContent[content] == wp { // not replaced since
			delete(c.byContent, content)
		}
	}, content)
	return s
}
