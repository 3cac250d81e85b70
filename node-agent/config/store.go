// Package config is the node agent's one mesh state: the workloads,
// services and L4 authorization policies the control plane sends over
// delta xDS (pkg/xdsclient). Every accepted update is validated and turned
// into a new immutable Snapshot with its indexes and its compiled policy
// (node-agent/policy, rebuilt when the Authorization resources change),
// swapped in atomically, so readers on the data path never take a lock and
// a connection that holds one Snapshot sees workloads and policy of the
// same version. A malformed update is rejected as a whole (the client
// NACKs it) and the previous snapshot stays. Subscribe tells the agent's
// reconcile loop about every accepted update.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/node-agent/policy"
	"github.com/weft-mesh/weft/pkg/mesh"
)

// Type URLs of the resources the Store handles (subscribe to all).
const (
	AddressType           = mesh.AddressType
	AuthorizationType     = mesh.AuthorizationType
	EnrolledNamespaceType = mesh.EnrolledNamespaceType
)

// Types lists the type URLs for xdsclient.Config.Types.
func Types() []string { return []string{AddressType, AuthorizationType, EnrolledNamespaceType} }

// ErrNoEndpoint is wrapped by PickEndpoint errors.
var ErrNoEndpoint = errors.New("no healthy endpoint")

// Picker chooses among a service port's healthy endpoints (never empty)
// and returns an index into them. It must be safe for concurrent use.
type Picker interface {
	Pick(svc *Service, port uint16, endpoints []Endpoint) int
}

// Options configure a Store. Zero is usable.
type Options struct {
	// Logger, default slog.Default().
	Logger *slog.Logger
	// LeastRequest picks for services with load_balancing LEAST_REQUEST;
	// nil means round robin for them too.
	LeastRequest Picker
}

// Store holds the current Snapshot.
type Store struct {
	opts Options
	log  *slog.Logger

	writeMu sync.Mutex // serializes Handle
	current atomic.Pointer[Snapshot]

	subMu sync.Mutex
	subs  map[chan struct{}]struct{}
}

// NewStore returns a Store with an empty snapshot.
func NewStore(opts Options) *Store {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Store{opts: opts, log: opts.Logger, subs: map[chan struct{}]struct{}{}}
	s.current.Store(emptySnapshot())
	return s
}

// Snapshot returns the current snapshot (lock-free).
func (s *Store) Snapshot() *Snapshot { return s.current.Load() }

// Subscribe returns a channel that receives a value after every accepted
// update (coalesced: a slow reader sees one notification for several
// updates and should read Snapshot then), and a function to unsubscribe.
func (s *Store) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.subMu.Lock()
	s.subs[ch] = struct{}{}
	s.subMu.Unlock()
	return ch, func() {
		s.subMu.Lock()
		delete(s.subs, ch)
		s.subMu.Unlock()
	}
}

func (s *Store) notify() {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	for ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Handle applies one xDS response; it matches xdsclient.Handler. An error
// names every malformed resource and leaves the snapshot unchanged. The
// store keeps the messages of updated and makes their repeated parts
// canonical (intern.go), accepted or not: the caller hands them over and
// must not change them after.
func (s *Store) Handle(typeURL string, updated map[string]proto.Message, removed []string) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	prev := s.current.Load()
	next := *prev
	next.Version++
	switch typeURL {
	case AddressType:
		addr, err := applyAddresses(prev.addr, updated, removed)
		if err != nil {
			return err
		}
		next.addr, next.AddressesSynced = addr, true
	case AuthorizationType:
		authz, err := applyAuthorizations(prev.authz, updated, removed)
		if err != nil {
			return err
		}
		next.authz, next.AuthorizationsSynced = authz, true
		next.policy = policy.NewStore(authz.byName)
		for _, p := range next.policy.Problems() {
			s.log.Warn("malformed authorization policy (see node-agent/policy)", "problem", p)
		}
	case EnrolledNamespaceType:
		nss, err := applyEnrolledNamespaces(prev.enrolledNamespaces, updated, removed)
		if err != nil {
			return err
		}
		next.enrolledNamespaces, next.EnrolledNamespacesSynced = nss, true
	default:
		return fmt.Errorf("unsupported resource type %s (want one of %v)", typeURL, Types())
	}
	s.current.Store(&next)
	s.log.Debug("config updated", "type", typeURL, "version", next.Version,
		"updated", len(updated), "removed", len(removed))
	s.notify()
	return nil
}

// rejection joins per-resource errors in name order.
func rejection(kind string, total int, errs map[string]error) error {
	if len(errs) == 0 {
		return nil
	}
	list := make([]error, 0, len(errs))
	for _, name := range slices.Sorted(maps.Keys(errs)) {
		list = append(list, errs[name])
	}
	return fmt.Errorf("rejected %d of %d %s resources, keeping the previous configuration: %w", len(errs), total, kind, errors.Join(list...))
}

func applyAddresses(prev *addressIndex, updated map[string]proto.Message, removed []string) (*addressIndex, error) {
	parsed := make(map[string]parsedAddress, len(updated))
	errs := map[string]error{}
	for name, m := range updated {
		p, err := parseAddress(name, m)
		if err != nil {
			errs[name] = err
			continue
		}
		parsed[name] = p
	}
	if err := rejection("Address", len(updated), errs); err != nil {
		return nil, err
	}
	workloads := maps.Clone(prev.workloads)
	services := maps.Clone(prev.services)
	for _, name := range removed {
		delete(workloads, name)
		delete(services, name)
	}
	for name, p := range parsed {
		// A name may change kind; it is one resource either way.
		delete(workloads, name)
		delete(services, name)
		if p.w != nil {
			workloads[name] = p.w
		} else {
			services[name] = p.s
		}
	}
	return buildAddressIndex(workloads, services, prev), nil
}

func applyAuthorizations(prev *authzIndex, updated map[string]proto.Message, removed []string) (*authzIndex, error) {
	byName := maps.Clone(prev.byName)
	errs := map[string]error{}
	for _, name := range removed {
		delete(byName, name)
	}
	for name, m := range updated {
		a, err := parseAuthorization(name, m)
		if err != nil {
			errs[name] = err
			continue
		}
		byName[name] = a
	}
	if err := rejection("Authorization", len(updated), errs); err != nil {
		return nil, err
	}
	return buildAuthzIndex(byName), nil
}

func applyEnrolledNamespaces(prev map[string]bool, updated map[string]proto.Message, removed []string) (map[string]bool, error) {
	out := maps.Clone(prev)
	if out == nil {
		out = map[string]bool{}
	}
	for _, name := range removed {
		delete(out, name)
	}
	errs := map[string]error{}
	for name, m := range updated {
		ns, ok := m.(*workloadv1.EnrolledNamespace)
		switch {
		case !ok:
			errs[name] = fmt.Errorf("resource is a %T, not a weft.workload.v1.EnrolledNamespace", m)
		case ns.GetName() != name:
			errs[name] = fmt.Errorf("name %q differs from the resource name", ns.GetName())
		default:
			out[name] = true
		}
	}
	if err := rejection("EnrolledNamespace", len(updated), errs); err != nil {
		return nil, err
	}
	return out, nil
}

// WorkloadByIP looks ip up in the current snapshot.
func (s *Store) WorkloadByIP(ip netip.Addr) *Workload { return s.Snapshot().WorkloadByIP(ip) }

// ServiceByVIP looks vip up in the current snapshot.
func (s *Store) ServiceByVIP(vip netip.AddrPort) *Service { return s.Snapshot().ServiceByVIP(vip) }

// WorkloadsOnNode lists the workloads on node in the current snapshot.
func (s *Store) WorkloadsOnNode(node string) []*Workload { return s.Snapshot().WorkloadsOnNode(node) }

// PickEndpoint chooses a healthy workload serving port of svc for a
// connection from src, and the port to connect to on it: among the
// endpoints closest to src when svc has a locality preference
// (locality.go), round robin or the LeastRequest picker for services that
// ask for it. svc comes from any snapshot; its endpoints are the ones of
// that snapshot. A nil src (a client outside the mesh) has no locality:
// every healthy endpoint is a candidate.
func (s *Store) PickEndpoint(svc *Service, port uint16, src *Workload) (*Workload, uint16, error) {
	eps := svc.endpoints[port]
	if len(eps) == 0 {
		if !svc.HasPort(port) {
			return nil, 0, fmt.Errorf("service %s has no port %d: %w", svc.Name, port, ErrNoEndpoint)
		}
		return nil, 0, fmt.Errorf("service %s port %d: %w", svc.Name, port, ErrNoEndpoint)
	}
	if svc.ranked != nil && src != nil {
		if eps = svc.ranked.endpoints(port, src.Proto, eps); len(eps) == 0 {
			return nil, 0, fmt.Errorf("service %s port %d: none in the locality of %s (%v, STRICT): %w",
				svc.Name, port, src.Name, svc.ranked.prefs, ErrNoEndpoint)
		}
	}
	var i int
	if p := s.opts.LeastRequest; p != nil && svc.Proto.GetLoadBalancing().GetMode() == workloadv1.LoadBalancing_LEAST_REQUEST {
		i = p.Pick(svc, port, eps)
		if i < 0 || i >= len(eps) {
			i = 0
		}
	} else {
		i = int((svc.rr.Add(1) - 1) % uint64(len(eps)))
	}
	return eps[i].Workload, eps[i].TargetPort, nil
}
