package config

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"io"
	"maps"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/node-agent/policy"
)

// Workload is a validated workload. Treat it and Proto as read-only.
type Workload struct {
	// Name of the xDS resource (the uid).
	Name  string
	Proto *workloadv1.Workload
	// Addresses parsed from Proto.Addresses (IPv4-mapped IPv6 unmapped).
	Addresses []netip.Addr
	// Identity is spiffe://<td>/ns/<ns>/sa/<sa>; zero if the workload has
	// no service account or trust domain (never for HBONE workloads).
	Identity spiffeid.ID

	// services keeps Proto.Services, shared with the workloads that have
	// the same, in the intern cache (intern.go).
	services *sharedServices

	// plan is the policies that apply to the workload, compiled by the
	// policy store it names: a snapshot whose addresses did not change
	// shares its workloads with the one before, not its policies.
	plan atomic.Pointer[workloadPlan]
}

type workloadPlan struct {
	store *policy.Store
	plan  *policy.Plan
}

// Healthy reports whether the workload may receive new connections.
func (w *Workload) Healthy() bool { return w.Proto.GetStatus() == workloadv1.WorkloadStatus_HEALTHY }

// Endpoint is a workload serving a service port on TargetPort.
type Endpoint struct {
	Workload   *Workload
	TargetPort uint16
}

// Service is a validated service with its endpoints. Treat it and Proto
// as read-only.
type Service struct {
	// Name of the xDS resource ("<namespace>/<hostname>").
	Name  string
	Proto *workloadv1.Service
	VIPs  []netip.Addr
	// Workloads the service selects, healthy or not,
	// sorted by name.
	Workloads []*Workload

	// endpoints per service port: healthy workloads with an address (or
	// a hostname to resolve) that serve the port.
	endpoints map[uint16][]Endpoint
	// rr is the round-robin position, carried over from one snapshot to
	// the next so that config changes do not reset the rotation.
	rr *atomic.Uint64
	// ranked chooses endpoints by the client's locality; nil when the
	// service has no locality preference.
	ranked *rankedEndpoints
}

// Endpoints returns the healthy endpoints of a service port (nil if the
// service has no such port or nobody serves it).
func (s *Service) Endpoints(port uint16) []Endpoint { return s.endpoints[port] }

// HasPort reports whether the service declares port.
func (s *Service) HasPort(port uint16) bool {
	for _, p := range s.Proto.GetPorts() {
		if p.GetServicePort() == uint32(port) {
			return true
		}
	}
	return false
}

// addressIndex is everything derived from the Address resources.
type addressIndex struct {
	workloads map[string]*Workload
	services  map[string]*Service
	byIP      map[netip.Addr]*Workload
	byVIP     map[netip.AddrPort]*Service
	byNode    map[string][]*Workload
}

// authzIndex is everything derived from the Authorization resources.
type authzIndex struct {
	byName      map[string]*workloadv1.Authorization
	global      []*workloadv1.Authorization
	byNamespace map[string][]*workloadv1.Authorization
}

// Snapshot is an immutable view of the mesh. Readers hold on to one for as
// long as they need a consistent view; nothing in it changes.
type Snapshot struct {
	// Version counts accepted updates.
	Version uint64
	// AddressesSynced and AuthorizationsSynced report whether the first
	// response of each type has been applied.
	AddressesSynced, AuthorizationsSynced bool
	// EnrolledNamespacesSynced reports whether the ambient namespaces have
	// been received (they do not gate readiness: see NamespaceEnrolled).
	EnrolledNamespacesSynced bool

	addr  *addressIndex
	authz *authzIndex
	// enrolledNamespaces are the namespaces labelled ambient, by name.
	enrolledNamespaces map[string]bool
	// policy is authz compiled for Check; rebuilt only when the
	// Authorization resources change.
	policy *policy.Store
}

func emptySnapshot() *Snapshot {
	return &Snapshot{addr: buildAddressIndex(nil, nil, nil), authz: buildAuthzIndex(nil), policy: policy.NewStore(nil)}
}

// NamespaceEnrolled reports whether namespace ns is labelled ambient, and
// whether that is known at all (false before the first EnrolledNamespace
// response). The node agent captures a new pod of an enrolled namespace at
// CNI ADD, before the pod's Workload arrives.
func (s *Snapshot) NamespaceEnrolled(ns string) (enrolled, known bool) {
	return s.enrolledNamespaces[ns], s.EnrolledNamespacesSynced
}

// EnrolledNamespaceNames lists the namespaces labelled ambient, sorted.
func (s *Snapshot) EnrolledNamespaceNames() []string {
	return slices.Sorted(maps.Keys(s.enrolledNamespaces))
}

// Synced reports whether both types have been received.
func (s *Snapshot) Synced() bool { return s.AddressesSynced && s.AuthorizationsSynced }

// Workload returns a workload by resource name (uid).
func (s *Snapshot) Workload(name string) *Workload { return s.addr.workloads[name] }

// Service returns a service by resource name ("<namespace>/<hostname>").
func (s *Snapshot) Service(name string) *Service { return s.addr.services[name] }

// Workloads returns every workload keyed by name (read-only).
func (s *Snapshot) Workloads() map[string]*Workload { return s.addr.workloads }

// Services returns every service keyed by name (read-only).
func (s *Snapshot) Services() map[string]*Service { return s.addr.services }

// WorkloadByIP returns the workload with address ip. When several claim it
// (host-network pods share the node's IP), an HBONE workload wins over a
// plain one, then a healthy one, then the smallest name.
func (s *Snapshot) WorkloadByIP(ip netip.Addr) *Workload { return s.addr.byIP[ip.Unmap()] }

// ServiceByVIP returns the service with VIP ip that declares port.
func (s *Snapshot) ServiceByVIP(vip netip.AddrPort) *Service {
	return s.addr.byVIP[netip.AddrPortFrom(vip.Addr().Unmap(), vip.Port())]
}

// ServiceServing guesses the Service a connection to w's targetPort came
// through, for a destination that only sees the pod address (a tunnel's
// :authority, a plaintext connection after kube-proxy's DNAT): a Service
// selecting w with a port whose target port is targetPort. Several match:
// the smallest name, so every agent reports the same one. nil: none (as
// Istio's ztunnel guesses the inbound service).
func (s *Snapshot) ServiceServing(w *Workload, targetPort uint16) *Service {
	var best *Service
	for name, pl := range w.Proto.GetServices() {
		svc := s.addr.services[name]
		if svc == nil || (best != nil && best.Name < name) {
			continue
		}
		for _, p := range pl.GetPorts() {
			target := p.GetTargetPort()
			if target == 0 {
				target = p.GetServicePort()
			}
			if target == uint32(targetPort) && svc.HasPort(uint16(p.GetServicePort())) {
				best = svc
				break
			}
		}
	}
	return best
}

// WorkloadsOfService returns the workloads a service selects (any health),
// sorted by name.
func (s *Snapshot) WorkloadsOfService(name string) []*Workload {
	if svc := s.addr.services[name]; svc != nil {
		return svc.Workloads
	}
	return nil
}

// WorkloadsOnNode returns the workloads on a node, sorted by name.
func (s *Snapshot) WorkloadsOnNode(node string) []*Workload { return s.addr.byNode[node] }

// IdentitiesOnNode returns the distinct SPIFFE identities of the HBONE
// (enrolled) workloads on a node, sorted: what the node's identity
// manager must hold.
func (s *Snapshot) IdentitiesOnNode(node string) []spiffeid.ID {
	var out []spiffeid.ID
	for _, w := range s.addr.byNode[node] {
		if w.Proto.GetTunnelProtocol() == workloadv1.TunnelProtocol_HBONE && !w.Identity.IsZero() && !slices.Contains(out, w.Identity) {
			out = append(out, w.Identity)
		}
	}
	slices.SortFunc(out, func(a, b spiffeid.ID) int { return cmp.Compare(a.String(), b.String()) })
	return out
}

// Authorizations returns every policy keyed "<namespace>/<name>"
// (read-only).
func (s *Snapshot) Authorizations() map[string]*workloadv1.Authorization { return s.authz.byName }

// Policy returns the L4 authorization policies of this snapshot, compiled
// (never nil; empty before the first Authorization response).
func (s *Snapshot) Policy() *policy.Store { return s.policy }

// Authorize decides, with this snapshot's policies, whether connection c to
// the workload dst is allowed. Only the first check of a workload with a
// snapshot's policies allocates (its plan, kept on the workload).
func (s *Snapshot) Authorize(dst *Workload, c policy.Conn) policy.Decision {
	wp := dst.plan.Load()
	if wp == nil || wp.store != s.policy {
		wp = &workloadPlan{store: s.policy, plan: s.policy.Plan(policy.Destination{
			Namespace: dst.Proto.GetNamespace(), Policies: dst.Proto.GetAuthorizationPolicies()})}
		dst.plan.Store(wp)
	}
	return wp.plan.Check(c)
}

// AuthorizationsFor returns the policies that apply to w: GLOBAL ones,
// NAMESPACE ones of its namespace and the WORKLOAD_SELECTOR ones it lists.
func (s *Snapshot) AuthorizationsFor(w *Workload) []*workloadv1.Authorization {
	out := slices.Clone(s.authz.global)
	out = append(out, s.authz.byNamespace[w.Proto.GetNamespace()]...)
	for _, name := range w.Proto.GetAuthorizationPolicies() {
		if a := s.authz.byName[name]; a != nil && a.GetScope() == workloadv1.Scope_WORKLOAD_SELECTOR {
			out = append(out, a)
		}
	}
	return out
}

// MarshalJSON renders the snapshot for the admin config dump (WriteJSON).
func (s *Snapshot) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	err := s.WriteJSON(&b)
	return b.Bytes(), err
}

// WriteJSON writes the snapshot for the admin config dump, resources by
// name, one at a time: building the dump whole (each resource's JSON, then
// the document, then its indented copy) grew an agent holding 10,000
// workloads by ~40 MB for every read of it.
func (s *Snapshot) WriteJSON(w io.Writer) error {
	head, err := json.Marshal(struct {
		Version              uint64   `json:"version"`
		AddressesSynced      bool     `json:"addressesSynced"`
		AuthorizationsSynced bool     `json:"authorizationsSynced"`
		EnrolledNamespaces   []string `json:"enrolledNamespaces"`
	}{s.Version, s.AddressesSynced, s.AuthorizationsSynced, slices.Sorted(maps.Keys(s.enrolledNamespaces))})
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	bw.Write(head[:len(head)-1]) // without its closing brace
	writeResources(bw, "workloads", s.addr.workloads, func(w *Workload) proto.Message { return w.Proto })
	writeResources(bw, "services", s.addr.services, func(svc *Service) proto.Message { return svc.Proto })
	writeResources(bw, "authorizations", s.authz.byName, func(a *workloadv1.Authorization) proto.Message { return a })
	bw.WriteByte('}')
	return bw.Flush() // the first write error, if any
}

// writeResources writes ,"field":{"name":<resource>,...} in name order;
// a resource protojson cannot render is null.
func writeResources[V any](w *bufio.Writer, field string, byName map[string]V, msg func(V) proto.Message) {
	w.WriteString(`,"` + field + `":{`)
	for i, name := range slices.Sorted(maps.Keys(byName)) {
		if i > 0 {
			w.WriteByte(',')
		}
		key, _ := json.Marshal(name) // a string always marshals
		w.Write(key)
		w.WriteByte(':')
		b, err := protojson.Marshal(msg(byName[name]))
		if err != nil {
			b = []byte("null")
		}
		w.Write(b)
	}
	w.WriteByte('}')
}

// buildAddressIndex derives every index from the workloads and services.
// prev supplies the round-robin positions to carry over.
func buildAddressIndex(workloads map[string]*Workload, services map[string]*Service, prev *addressIndex) *addressIndex {
	if workloads == nil {
		workloads = map[string]*Workload{}
	}
	idx := &addressIndex{
		workloads: workloads,
		services:  make(map[string]*Service, len(services)),
		byIP:      make(map[netip.Addr]*Workload, len(workloads)),
		byVIP:     map[netip.AddrPort]*Service{},
		byNode:    map[string][]*Workload{},
	}
	// Fresh Service values: their endpoints depend on the workloads.
	for name, s := range services {
		c := &Service{Name: s.Name, Proto: s.Proto, VIPs: s.VIPs, endpoints: map[uint16][]Endpoint{},
			ranked: newRankedEndpoints(s.Proto.GetLoadBalancing())}
		if prev != nil && prev.services[name] != nil {
			c.rr = prev.services[name].rr
		}
		if c.rr == nil {
			c.rr = new(atomic.Uint64)
		}
		idx.services[name] = c
	}
	names := slices.Sorted(maps.Keys(workloads))
	for _, name := range names {
		w := workloads[name]
		for _, a := range w.Addresses {
			if cur := idx.byIP[a]; cur == nil || betterOwner(w, cur) {
				idx.byIP[a] = w
			}
		}
		if node := w.Proto.GetNode(); node != "" {
			idx.byNode[node] = append(idx.byNode[node], w)
		}
		for svcName, pl := range w.Proto.GetServices() {
			svc := idx.services[svcName]
			if svc == nil {
				continue
			}
			svc.Workloads = append(svc.Workloads, w)
			if !w.Healthy() || len(w.Addresses) == 0 && w.Proto.GetHostname() == "" {
				continue
			}
			for _, p := range pl.GetPorts() {
				sp := uint16(p.GetServicePort())
				if !svc.HasPort(sp) {
					continue
				}
				target := uint16(p.GetTargetPort())
				if target == 0 {
					target = sp
				}
				svc.endpoints[sp] = append(svc.endpoints[sp], Endpoint{Workload: w, TargetPort: target})
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(idx.services)) {
		svc := idx.services[name]
		for _, vip := range svc.VIPs {
			for _, p := range svc.Proto.GetPorts() {
				ap := netip.AddrPortFrom(vip, uint16(p.GetServicePort()))
				if _, taken := idx.byVIP[ap]; !taken { // smallest name wins a conflict
					idx.byVIP[ap] = svc
				}
			}
		}
	}
	return idx
}

// betterOwner decides which of two workloads claiming one IP wins.
func betterOwner(w, cur *Workload) bool {
	wh, ch := w.Proto.GetTunnelProtocol() == workloadv1.TunnelProtocol_HBONE, cur.Proto.GetTunnelProtocol() == workloadv1.TunnelProtocol_HBONE
	if wh != ch {
		return wh
	}
	if w.Healthy() != cur.Healthy() {
		return w.Healthy()
	}
	return w.Name < cur.Name
}

func buildAuthzIndex(byName map[string]*workloadv1.Authorization) *authzIndex {
	if byName == nil {
		byName = map[string]*workloadv1.Authorization{}
	}
	idx := &authzIndex{byName: byName, byNamespace: map[string][]*workloadv1.Authorization{}}
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		a := byName[name]
		switch a.GetScope() {
		case workloadv1.Scope_GLOBAL:
			idx.global = append(idx.global, a)
		case workloadv1.Scope_NAMESPACE:
			idx.byNamespace[a.GetNamespace()] = append(idx.byNamespace[a.GetNamespace()], a)
		}
	}
	return idx
}
