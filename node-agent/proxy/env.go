package proxy

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/node-agent/config"
	"github.com/weft-mesh/weft/node-agent/policy"
	"github.com/weft-mesh/weft/pkg/dnsresolve"
)

// Env is what every direction of the proxy shares. Store, Identities and
// NodeName are required; the rest may be nil.
type Env struct {
	// Store is the mesh state: each connection takes one Snapshot and reads
	// workloads, services and L4 policy from it.
	Store *config.Store
	// Identities holds the SVIDs of this node's workloads (identity.Manager).
	Identities Identities
	// NodeName is this node's name as workloads name it (Workload.node).
	NodeName string
	// Metrics records istio_tcp_*; nil records nothing.
	Metrics *Metrics
	// AccessLog receives one line per connection (use a JSON handler);
	// nil disables it.
	AccessLog *slog.Logger
	// Logger is for operational messages; nil discards them.
	Logger *slog.Logger
	// DialTimeout bounds connects to destinations and tunnels (default 10 s).
	DialTimeout time.Duration
	// Held reports pods of this node captured before any snapshot
	// described them (agent.Enroller.Held): their connections, and
	// connections passed through to them, are refused. nil: none.
	Held func(netip.Addr) bool
	// Names resolves the workloads reached by name (Workload.hostname: a
	// ServiceEntry endpoint of resolution DNS), kept resolved in the
	// background for the names of the current snapshot. nil: such
	// workloads have no address.
	Names *dnsresolve.Set

	// admitted are the live connections policy allowed (Recheck).
	admitted admittedSet
}

func (e *Env) log() *slog.Logger { return orDiscard(e.Logger) }

func (e *Env) dialTimeout() time.Duration {
	if e.DialTimeout > 0 {
		return e.DialTimeout
	}
	return defaultDialTimeout
}

func (e *Env) held(ip netip.Addr) bool { return e.Held != nil && e.Held(ip) }

// resolved picks an address of w's hostname from the background answers
// (never a lookup while the connection waits), of want's family if it
// has one, at random to spread connections over every address as Envoy's
// STRICT_DNS balances.
func (e *Env) resolved(w *config.Workload, want netip.Addr) (netip.Addr, error) {
	h := w.Proto.GetHostname()
	if e.Names == nil {
		return netip.Addr{}, fmt.Errorf("DNS %s: this agent does not resolve names", h)
	}
	st, ok := e.Names.State(h)
	switch {
	case !ok:
		return netip.Addr{}, fmt.Errorf("DNS %s: not resolved yet", h)
	case len(st.Addrs) == 0 && st.Err != nil:
		return netip.Addr{}, fmt.Errorf("DNS %s: %w", h, st.Err)
	case len(st.Addrs) == 0:
		return netip.Addr{}, fmt.Errorf("DNS %s: not resolved yet", h)
	}
	same := slices.DeleteFunc(slices.Clone(st.Addrs), func(a netip.Addr) bool { return a.Is4() != want.Is4() })
	if len(same) == 0 {
		same = st.Addrs
	}
	return same[rand.IntN(len(same))], nil
}

// enrolled reports whether w is an HBONE (captured) workload.
func enrolled(w *config.Workload) bool {
	return w != nil && w.Proto.GetTunnelProtocol() == workloadv1.TunnelProtocol_HBONE && !w.Identity.IsZero()
}

// localWorkload returns the enrolled workload with ip on this node, or nil.
func (e *Env) localWorkload(snap *config.Snapshot, ip netip.Addr) *config.Workload {
	w := snap.WorkloadByIP(ip.Unmap())
	if !enrolled(w) || w.Proto.GetNode() != e.NodeName {
		return nil
	}
	return w
}

// inboundWorkload is the workload on this node that a connection the
// capture steered here is for: an enrolled one, or one leaving the mesh.
// When a pod is unenrolled, this agent's snapshot says NONE a moment
// before its capture programs drain the pod, and agents of other nodes may
// not have heard yet and still tunnel to it; those connections are the
// pod's until it is drained (its certificate stays for the identity
// manager's grace period). Only steered traffic reaches the inbound
// listeners, so this admits nothing the capture does not send here.
func (e *Env) inboundWorkload(snap *config.Snapshot, ip netip.Addr) *config.Workload {
	w := snap.WorkloadByIP(ip.Unmap())
	if w == nil || w.Identity.IsZero() || w.Proto.GetNode() != e.NodeName {
		return nil
	}
	return w
}

// check evaluates authorization for a connection to dst (a local workload)
// with the policies of snap, the snapshot dst was found in.
func check(snap *config.Snapshot, dst *config.Workload, src netip.Addr, dstAP netip.AddrPort, principal, namespace string) policy.Decision {
	return snap.Authorize(dst,
		policy.Conn{SourceIP: src.Unmap(), DestIP: dstAP.Addr().Unmap(), DestPort: dstAP.Port(), Principal: principal, Namespace: namespace})
}
