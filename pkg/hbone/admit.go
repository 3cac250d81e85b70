package hbone

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/pkg/connlimit"
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

// DefaultMaxConnectionsPerPeer is Options.MaxConnectionsPerPeer's default:
// a quarter of the node agent's default connection cap (16,384). A peer
// identity's pooled tunnels number one per source node and destination
// workload, so only a service account spread over many nodes, talking to
// many pods of one node, comes near it.
const DefaultMaxConnectionsPerPeer = 4096

// ShedStats counts connections reset before their TLS handshake completed:
// because their source already had Options.MaxHandshakesPerSource
// handshakes in flight (PerSource), or because the server had
// Options.MaxHandshakes (Total: the newcomer, or the oldest handshake of
// the source holding the most, see admission.admit).
// PerPeer counts established connections closed because their peer
// identity held Options.MaxConnectionsPerPeer.
type ShedStats struct {
	PerSource, Total, PerPeer uint64
}

// admission counts the connections in TLS handshake, per source and in
// all, and sheds those over the limits.
type admission struct {
	perSource, total int // limits; <= 0 is no limit

	mu       sync.Mutex
	inFlight map[netip.Addr][]*ticket // per source key, oldest first
	n, peak  int                      // in flight now, most ever (tests)

	shedSource, shedTotal atomic.Uint64
}

// ticket is one admitted handshake. abort resets its connection when the
// handshake is evicted to make room for a source holding fewer.
type ticket struct {
	src     netip.Addr
	abort   func()
	evicted bool // guarded by admission.mu
}

func newAdmission(o Options) *admission {
	a := &admission{perSource: o.MaxHandshakesPerSource, total: o.MaxHandshakes, inFlight: map[netip.Addr][]*ticket{}}
	if a.perSource == 0 {
		a.perSource = DefaultMaxHandshakesPerSource
	}
	if a.total == 0 {
		a.total = DefaultMaxHandshakes
	}
	return a
}

// admit decides whether a connection from src may start its handshake; if
// so, done(t) must be called when the handshake ends (either way).
//
// When the server is full, a newcomer whose source holds fewer handshakes
// than the source holding the most takes the oldest of those (it is reset):
// the slots are shared fairly among sources, so a few sources with
// unfinished handshakes (16 at the per-source limit fill the default total)
// cannot lock every other peer out for the handshake timeout. A source
// already holding as many as anyone is shed instead.
func (a *admission) admit(src netip.Addr, abort func()) (*ticket, bool) {
	src = sourceKey(src)
	a.mu.Lock()
	if a.perSource > 0 && len(a.inFlight[src]) >= a.perSource {
		a.mu.Unlock()
		a.shedSource.Add(1)
		return nil, false
	}
	var victim *ticket
	if a.total > 0 && a.n >= a.total {
		if victim = a.evictFor(src); victim == nil {
			a.mu.Unlock()
			a.shedTotal.Add(1)
			return nil, false
		}
	}
	t := &ticket{src: src, abort: abort}
	a.inFlight[src] = append(a.inFlight[src], t)
	a.n++
	a.peak = max(a.peak, a.n)
	a.mu.Unlock()
	if victim != nil {
		a.shedTotal.Add(1)
		victim.abort()
	}
	return t, true
}

// evictFor removes and returns the oldest handshake of the source holding
// the most, if that is more than src holds; nil otherwise. The scan is over
// sources and runs only while the server is full.
func (a *admission) evictFor(src netip.Addr) *ticket {
	var heaviest netip.Addr
	found, most := false, len(a.inFlight[src])
	for s, ts := range a.inFlight {
		if len(ts) > most {
			heaviest, most, found = s, len(ts), true
		}
	}
	if !found {
		return nil
	}
	victim := a.inFlight[heaviest][0]
	a.remove(victim)
	victim.evicted = true
	return victim
}

func (a *admission) done(t *ticket) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !t.evicted {
		a.remove(t)
	}
}

// remove drops t from the counts; a.mu is held.
func (a *admission) remove(t *ticket) {
	ts := a.inFlight[t.src]
	for i, x := range ts {
		if x == t {
			ts = append(ts[:i], ts[i+1:]...)
			break
		}
	}
	if len(ts) == 0 {
		delete(a.inFlight, t.src)
	} else {
		a.inFlight[t.src] = ts
	}
	a.n--
}

func (a *admission) inFlightNow() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

// sourceKey is what the per-source limit and fair share count by: the IPv4
// address, or the IPv6 /64, since one host commonly owns a whole /64 and
// could otherwise count as billions of sources.
func sourceKey(ip netip.Addr) netip.Addr {
	if ip.Is6() && !ip.Is4In6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
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

// newPeerCount holds the established connections of each peer identity
// (Options.MaxConnectionsPerPeer: 0 is the default, negative no limit).
func newPeerCount(limit int) *connlimit.PerKey[spiffeid.ID] {
	if limit == 0 {
		limit = DefaultMaxConnectionsPerPeer
	}
	return connlimit.NewPerKey[spiffeid.ID](limit)
}
