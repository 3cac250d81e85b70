package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/weft-mesh/weft/node-agent/config"
	"github.com/weft-mesh/weft/node-agent/policy"
)

// admitted is a delivered connection that policy allowed: what it takes to
// check it again with a newer snapshot, and its connection to the pod,
// which ends it. A policy change that now denies it closes it (as ztunnel's
// connection manager does), so a revoked permission does not outlive the
// connections it let through.
type admitted struct {
	up                   *net.TCPConn
	dst                  string // the destination workload's name
	src                  netip.Addr
	dstAP                netip.AddrPort
	principal, namespace string

	revoked atomic.Pointer[policy.Decision]
}

// errRevoked ends a connection that a policy change denies.
type errRevoked struct{ policy.Decision }

func (e *errRevoked) Error() string {
	if e.Policy != "" {
		return fmt.Sprintf("closed: denied by policy %s since a policy change: %s", e.Policy, e.Reason)
	}
	return "closed: denied since a policy change: " + e.Reason
}

// result is the connection's result given the pipe's: the revocation, if
// that is what ended it.
func (a *admitted) result(pipeErr error) error {
	if d := a.revoked.Load(); d != nil {
		return &refusal{Flag: FlagDenied, Cause: &errRevoked{*d}}
	}
	return pipeErr
}

// admittedSet holds the live admitted connections of an Env.
type admittedSet struct {
	mu sync.Mutex
	m  map[*admitted]struct{}
}

func (s *admittedSet) add(a *admitted) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[*admitted]struct{}{}
	}
	s.m[a] = struct{}{}
}

func (s *admittedSet) remove(a *admitted) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, a)
}

func (s *admittedSet) list() []*admitted {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*admitted, 0, len(s.m))
	for a := range s.m {
		out = append(out, a)
	}
	return out
}

// Recheck evaluates every live admitted connection against snap and closes,
// with an RST to the pod (the pipe resets the client), those it denies. A
// connection whose destination workload left the snapshot is left alone:
// the pod going away ends it. It returns how many it closed.
func (e *Env) Recheck(snap *config.Snapshot) int {
	closed := 0
	for _, a := range e.admitted.list() {
		w := snap.Workload(a.dst)
		if w == nil {
			continue
		}
		d := check(snap, w, a.src, a.dstAP, a.principal, a.namespace)
		if d.Allowed || !a.revoked.CompareAndSwap(nil, &d) {
			continue
		}
		reset(a.up)
		e.Metrics.revokedConn()
		closed++
	}
	if closed > 0 {
		e.log().Info("closed connections a policy change denies", "count", closed)
	}
	return closed
}

// RecheckOnChange runs Recheck on every new snapshot until ctx ends. Run
// it whether or not this agent is superseded: its connections must follow
// policy until they end.
func (e *Env) RecheckOnChange(ctx context.Context) {
	updates, unsubscribe := e.Store.Subscribe()
	defer unsubscribe()
	last := e.Store.Snapshot()
	for {
		select {
		case <-ctx.Done():
			return
		case <-updates:
		}
		if snap := e.Store.Snapshot(); snap != last {
			last = snap
			e.Recheck(snap)
		}
	}
}
