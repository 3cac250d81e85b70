package dns

import (
	"cmp"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/weft-mesh/weft/node-agent/config"
)

// names indexes one snapshot's services by hostname (lower case, fully
// qualified with the trailing dot), each list sorted by namespace.
type names struct {
	byHost map[string][]*config.Service
}

// namesCache rebuilds the index when the snapshot changes: once per
// accepted update, not per query.
type namesCache struct {
	cur atomic.Pointer[namesFor]
}

type namesFor struct {
	snap  *config.Snapshot
	names *names
}

func (c *namesCache) get(snap *config.Snapshot) *names {
	if cur := c.cur.Load(); cur != nil && cur.snap == snap {
		return cur.names
	}
	n := buildNames(snap)
	c.cur.Store(&namesFor{snap: snap, names: n})
	return n
}

func buildNames(snap *config.Snapshot) *names {
	n := &names{byHost: map[string][]*config.Service{}}
	for _, svc := range snap.Services() {
		h := fqdn(svc.Proto.GetHostname())
		n.byHost[h] = append(n.byHost[h], svc)
	}
	for _, svcs := range n.byHost {
		slices.SortFunc(svcs, func(a, b *config.Service) int { return cmp.Compare(a.Name, b.Name) })
	}
	return n
}

func fqdn(s string) string {
	s = strings.ToLower(s)
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

// find is the service that answers for qname as seen by a client in
// namespace ns, as ztunnel matches: the name itself, then wildcards of
// decreasing specificity (a.b.example.com: *.b.example.com, then
// *.example.com, then *.com). Among services of one hostname the client's
// namespace wins, then the first by namespace. A service without a VIP is
// skipped, its name forwarded: a headless Kubernetes Service's records
// (ready or all endpoints, per-pod hostnames) are CoreDNS's to give, and
// a ServiceEntry host without one resolves as it would without the mesh.
func (n *names) find(qname, ns string) *config.Service {
	name := strings.ToLower(qname)
	for candidate := name; candidate != ""; {
		if svc := n.pick(candidate, ns); svc != nil {
			return svc
		}
		// Drop one more label and try the wildcard for the rest.
		_, after, ok := strings.Cut(strings.TrimPrefix(candidate, "*."), ".")
		if !ok || after == "" {
			return nil
		}
		candidate = "*." + after
	}
	return nil
}

func (n *names) pick(host, ns string) *config.Service {
	var first *config.Service
	for _, svc := range n.byHost[host] {
		if len(svc.VIPs) == 0 {
			continue
		}
		if svc.Proto.GetNamespace() == ns {
			return svc
		}
		if first == nil {
			first = svc
		}
	}
	return first
}
