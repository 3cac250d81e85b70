package hbone

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Handshake admission defaults (Options.MaxHandshakesPerSource and
// Options.MaxHandshakes).
//
// Who connects to an HBONE server is a node agent (from its node's IP), a
// waypoint or a gateway (from its pod IP). Each pools its tunnels, one
// connection per peer identity and destination node, so a legitimate source
// has a handful of handshakes in flight at once: more only when it starts
// with many destination pods of this node at the same moment (a node agent
// restart, a rollout). 64 leaves that burst room while one source holding
// 64 unfinished handshakes for the whole handshake timeout can take at most
// 64 of a node agent's 16,384 connection slots. The total of 1024 bounds the
// memory and handshake CPU of one server (a TLS 1.3 handshake with an ECDSA
// certificate costs about 0.2 ms of server CPU, so 1024 in flight is well
// under a core-second of work).
const (
	DefaultMaxHandshakesPerSource = 64
	DefaultMaxHandshakes          = 1024
)

// ShedStats counts connections reset before their TLS handshake because
// their source already had Options.MaxHandshakesPerSource handshakes in
// flight (PerSource) or the server had Options.MaxHandshakes (Total).
type ShedStats struct {
	PerSource, Total uint64
}

// admission counts the connections in TLS handshake, per source IP and in
// all, and sheds those over the limits.
type admission struct {
	perSource, total int // limits; <= 0 is no limit

	mu       sync.Mutex
	inFlight map[netip.Addr]int
	n, peak  int // in flight now, most ever (tests)

	shedSource, shedTotal atomic.Uint64
}

func newAdmission(o Options) *admission {
	a := &admission{perSource: o.MaxHandshakesPerSource, total: o.MaxHandshakes, inFlight: map[netip.Addr]int{}}
	if a.perSource == 0 {
		a.perSource = DefaultMaxHandshakesPerSource
	}
	if a.total == 0 {
		a.total = DefaultMaxHandshakes
	}
	return a
}

// admit reports whether a connection from src may start its handshake; if
// so, done must be called when the handshake ends (either way).
func (a *admission) admit(src netip.Addr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.total > 0 && a.n >= a.total {
		a.shedTotal.Add(1)
		return false
	}
	if a.perSource > 0 && a.inFlight[src] >= a.perSource {
		a.shedSource.Add(1)
		return false
	}
	a.inFlight[src]++
	a.n++
	a.peak = max(a.peak, a.n)
	return true
}

func (a *admission) done(src netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.inFlight[src]--; a.inFlight[src] <= 0 {
		delete(a.inFlight, src)
	}
	a.n--
}

func (a *admission) inFlightNow() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

// shed resets c at once (RST, not FIN): nothing was read from it, and the
// client learns immediately that it must retry rather than wait.
func shed(c net.Conn) {
	type linger interface{ SetLinger(int) error }
	if l, ok := c.(linger); ok {
		_ = l.SetLinger(0)
	}
	c.Close()
}

// sourceOf is the IP a connection comes from; connections without one (a
// pipe) share the zero Addr.
func sourceOf(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
