package proxy

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/pkg/hbone"
	"github.com/weft-mesh/weft/pkg/istiolabels"
	"github.com/weft-mesh/weft/pkg/mesh"
)

// AddressType is Weft's workload-discovery type. The waypoint subscribes
// to it, as Istio's waypoint subscribes to WDS, to know which workload,
// with which identity, is at an address: what lets it check the client
// address a tunnel claims (tunnelSource) and derive source telemetry from
// proof, not from baggage.
const AddressType = mesh.AddressType

// peerWorkload is what the waypoint knows about the workload at an address.
type peerWorkload struct {
	identity spiffeid.ID
	// labels describe it in telemetry, computed once per update.
	labels istiolabels.Peer
}

// workloadIndex maps every workload address in the mesh to its workload.
type workloadIndex struct {
	byIP map[netip.Addr]*peerWorkload
}

func (ix *workloadIndex) at(a netip.Addr) *peerWorkload {
	if ix == nil {
		return nil
	}
	return ix.byIP[a]
}

// handleAddresses applies one Address response. Workloads change far more
// often than routes: they are indexed on their own, without recompiling
// the snapshot. s.mu is held.
func (s *Store) handleAddresses(updated map[string]proto.Message, removed []string, reject func(string, error), accept func(string)) {
	for _, name := range removed {
		delete(s.addresses, name)
		accept(name)
	}
	for name, m := range updated {
		a, ok := m.(*workloadv1.Address)
		if !ok {
			reject(name, fmt.Errorf("not an Address but %T", m))
			continue
		}
		w, err := parsePeerWorkload(a.GetWorkload())
		if err != nil {
			reject(name, err)
			continue
		}
		if w == nil {
			delete(s.addresses, name) // a Service: not a peer
		} else {
			s.addresses[name] = w
		}
		accept(name)
	}
	ix := &workloadIndex{byIP: map[netip.Addr]*peerWorkload{}}
	for _, name := range slices.Sorted(maps.Keys(s.addresses)) { // deterministic if two claim one IP
		w := s.addresses[name]
		for _, ip := range w.ips {
			if _, dup := ix.byIP[ip]; !dup {
				ix.byIP[ip] = &w.peerWorkload
			}
		}
	}
	s.workloads.Store(ix)
}

type addressedWorkload struct {
	peerWorkload
	ips []netip.Addr
}

func parsePeerWorkload(w *workloadv1.Workload) (*addressedWorkload, error) {
	if w == nil {
		return nil, nil
	}
	out := &addressedWorkload{peerWorkload: peerWorkload{labels: istiolabels.Peer{Workload: cmp.Or(w.GetWorkloadName(), w.GetName()),
		Namespace: w.GetNamespace(), CanonicalService: w.GetCanonicalName(), CanonicalRevision: w.GetCanonicalRevision(), Cluster: w.GetClusterId()}}}
	for _, s := range w.GetAddresses() {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("workload address %q: %w", s, err)
		}
		out.ips = append(out.ips, ip.Unmap())
	}
	if w.GetServiceAccount() != "" && w.GetTrustDomain() != "" {
		td, err := spiffeid.TrustDomainFromString(w.GetTrustDomain())
		if err != nil {
			return nil, fmt.Errorf("trust_domain %q: %w", w.GetTrustDomain(), err)
		}
		if out.identity, err = spiffeid.FromSegments(td, "ns", w.GetNamespace(), "sa", w.GetServiceAccount()); err != nil {
			return nil, fmt.Errorf("identity of %s/%s: %w", w.GetNamespace(), w.GetServiceAccount(), err)
		}
		out.labels.Principal = out.identity.String()
	}
	return out, nil
}

// tunnelSource is the client address of an HBONE stream and the workload
// there whose identity the peer proved (nil: none did), the node agent's
// rule (node-agent/proxy/inbound.go tunnelSource). The tunnel's TCP source
// is what the network vouches for. The Forwarded header may name another
// address only when the tunnel does not come from a workload (a pod,
// waypoints and gateways included, speaks for itself, as in Istio
// ambient) and the peer proved the identity of the workload at the claimed
// address: a node agent, which opens the tunnel from its node's address
// with its pod's certificate, speaking for that pod. Any other claim is
// ignored and counted, so a pod holding a certificate of its own cannot
// pass an ipBlocks rule or put another address into X-Forwarded-For.
//
// Without workload data (the Address type never arrived: an embedding
// that does not subscribe to it; a waypoint is not ready before it does)
// nothing proves an address; the claim is then taken only from a tunnel
// whose baggage, if any, names the peer's own namespace (consistent, not
// proven; see docs/security/threat-model.md).
func (p *Proxy) tunnelSource(req *hbone.Request, bag hbone.Baggage) (netip.Addr, *peerWorkload) {
	remote := addrOf(req.RemoteAddr)
	ix := p.Store.workloads.Load()
	provenAt := func(a netip.Addr) *peerWorkload {
		if w := ix.at(a); w != nil && w.identity == req.Peer {
			return w
		}
		return nil
	}
	claimed, ok := hbone.ParseForwarded(req.Forwarded)
	if !ok || claimed == remote {
		return remote, provenAt(remote)
	}
	if ix == nil {
		if bag.Namespace == "" || bag.Namespace == mesh.NamespaceOf(req.Peer) {
			return claimed, nil
		}
	} else if ix.at(remote) == nil {
		if w := provenAt(claimed); w != nil {
			return claimed, w
		}
	}
	p.Metrics.forwardedIgnored()
	p.log.Debug("ignoring a Forwarded address the tunnel's peer may not speak for",
		"peer", req.Peer, "remote", remote, "forwarded", claimed)
	return remote, provenAt(remote)
}

// sourceOf derives a stream's source labels, the principal being the
// peer's proven identity. A workload whose identity the
// peer proved gives them all. Otherwise the namespace is the peer's SPIFFE
// namespace; with workload data that is all (Istio's waypoint, too, takes
// peer metadata from WDS, not from baggage), so a tenant cannot mint label
// values. Only without workload data may baggage add workload, app and
// version (and cluster), and only when it names the peer's namespace (ztunnel's baggage
// is about the workload whose certificate it presents). Baggage that names
// another namespace is ignored as a whole and counted.
func (p *Proxy) sourceOf(peer spiffeid.ID, proven *peerWorkload, bag hbone.Baggage) istiolabels.Peer {
	ns := mesh.NamespaceOf(peer)
	if bag.Namespace != "" && bag.Namespace != ns {
		p.Metrics.baggageIgnored()
		p.log.Debug("ignoring baggage that names another namespace than the peer's identity", "peer", peer, "baggage_namespace", bag.Namespace)
		bag = hbone.Baggage{}
	}
	switch {
	case proven != nil:
		return proven.labels
	case p.Store.workloads.Load() != nil:
		return istiolabels.Peer{Namespace: ns, Principal: idString(peer)}
	}
	return istiolabels.Peer{Workload: bag.Workload, Namespace: ns, Principal: idString(peer),
		CanonicalService: bag.Service, CanonicalRevision: bag.Version, Cluster: bag.Cluster}
}
