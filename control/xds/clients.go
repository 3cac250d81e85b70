package xds

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// ClientStatus is one open xDS stream as this server sees it: who is on it
// and, per resource type, which version it was sent and which it
// acknowledged. weftctl proxy-status reads it from /debug/syncz.
type ClientStatus struct {
	Node string `json:"node"` // xDS node ID ("node-agent~<node>", "waypoint~<ns>/<gw>~<pod>", ...)
	// Namespace of the service account that authenticated the stream ("":
	// no caller, as in tests): unlike the node ID, which the client
	// chooses, it is proven.
	Namespace string       `json:"namespace,omitempty"`
	Stream    int64        `json:"stream"`
	Delta     bool         `json:"delta"`
	Connected time.Time    `json:"connected"`
	Types     []TypeStatus `json:"types"`
	// Synced: every type subscribed acknowledged the latest version this
	// server holds for the client, no response awaits an answer and nothing
	// was rejected.
	Synced bool `json:"synced"`
}

// TypeStatus is one resource type of a stream.
type TypeStatus struct {
	Type    string `json:"type"`
	Sent    string `json:"sent"`           // version of the last response sent
	Acked   string `json:"acked"`          // version of the last response acknowledged
	Latest  string `json:"latest"`         // version this server holds for the client now
	Pending int    `json:"pending"`        // responses sent and not answered yet
	NACK    string `json:"nack,omitempty"` // the last rejection, until a later ACK
}

// clientTracker records what each stream was sent and acknowledged. Nonces
// are matched to the version of the response that carried them.
type clientTracker struct {
	mu      sync.Mutex
	streams map[int64]*streamState
}

type streamState struct {
	node      string
	delta     bool
	connected time.Time
	types     map[string]*typeState
}

type typeState struct {
	sent, acked, nack string
	pending           map[int64]string // nonce -> version
}

func newClientTracker() *clientTracker {
	return &clientTracker{streams: map[int64]*streamState{}}
}

func (t *clientTracker) open(id int64, delta bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.streams[id] = &streamState{delta: delta, connected: time.Now(), types: map[string]*typeState{}}
}

func (t *clientTracker) close(id int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.streams, id)
}

// anyNode reports whether an open stream's node ID satisfies match.
func (t *clientTracker) anyNode(match func(id string) bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, st := range t.streams {
		if st.node != "" && match(st.node) {
			return true
		}
	}
	return false
}

func (st *streamState) typ(url string) *typeState {
	ts := st.types[url]
	if ts == nil {
		ts = &typeState{pending: map[int64]string{}}
		st.types[url] = ts
	}
	return ts
}

// request records a request: the node (delta streams carry it on the first
// request only) and, when it answers a response (nonce), an ACK or a NACK.
// Answering nonce n also settles every older response of the type: a
// client answers only the newest it processed.
func (t *clientTracker) request(id int64, node *core.Node, typeURL, nonce, nack string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.streams[id]
	if st == nil {
		return
	}
	if n := node.GetId(); n != "" {
		st.node = n
	}
	if typeURL == "" {
		return
	}
	ts := st.typ(typeURL)
	if nonce == "" {
		return
	}
	n, err := strconv.ParseInt(nonce, 10, 64)
	if err != nil {
		return
	}
	version, ok := ts.pending[n]
	if !ok {
		return
	}
	for p := range ts.pending {
		if p <= n {
			delete(ts.pending, p)
		}
	}
	if nack != "" {
		ts.nack = nack
		return
	}
	ts.acked, ts.nack = version, ""
}

func (t *clientTracker) response(id int64, typeURL, nonce, version string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.streams[id]
	if st == nil {
		return
	}
	n, err := strconv.ParseInt(nonce, 10, 64)
	if err != nil {
		return
	}
	ts := st.typ(typeURL)
	ts.sent = version
	ts.pending[n] = version
}

// Clients lists the open xDS streams, sorted by node ID, with their sync
// state against what this server holds now.
func (s *Server) Clients() []ClientStatus {
	weft := s.weft.steps()

	s.clients.mu.Lock()
	out := make([]ClientStatus, 0, len(s.clients.streams))
	for id, st := range s.clients.streams {
		c := ClientStatus{Node: st.node, Namespace: s.callers.namespace(id), Stream: id, Delta: st.delta, Connected: st.connected}
		for typ, ts := range st.types {
			c.Types = append(c.Types, TypeStatus{Type: typ, Sent: ts.sent, Acked: ts.acked, Pending: len(ts.pending), NACK: ts.nack})
		}
		out = append(out, c)
	}
	s.clients.mu.Unlock()

	for i := range out {
		c := &out[i]
		envoyLatest := ""
		if g := NodeGroup(c.Node); g != GroupNone {
			envoyLatest = s.waypointVersion(g)
		}
		slices.SortFunc(c.Types, func(a, b TypeStatus) int { return cmp.Compare(a.Type, b.Type) })
		c.Synced = len(c.Types) > 0
		envoyTypes, envoyAcked := 0, false
		for j := range c.Types {
			ts := &c.Types[j]
			if v, ok := weft[ts.Type]; ok {
				ts.Latest = v
				if ts.Acked != v {
					c.Synced = false
				}
			} else {
				// Envoy types share one snapshot version per group, but a
				// type whose resources did not change gets no response:
				// the group is current when any type acknowledged it.
				ts.Latest = envoyLatest
				envoyTypes++
				if envoyLatest != "" && ts.Acked == envoyLatest {
					envoyAcked = true
				}
			}
			if ts.Pending > 0 || ts.NACK != "" {
				c.Synced = false
			}
		}
		if envoyTypes > 0 && !envoyAcked {
			c.Synced = false
		}
	}
	slices.SortFunc(out, func(a, b ClientStatus) int {
		return cmp.Or(strings.Compare(a.Node, b.Node), cmp.Compare(a.Stream, b.Stream))
	})
	return out
}
