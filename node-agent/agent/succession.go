package agent

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"time"

	"github.com/weft-mesh/weft/pkg/atomicfile"
)

// Succession between node agents on one node. A rolling upgrade with surge
// runs the new agent next to the old one for a while: the new one binds
// other ports (the old one's cannot be shared, see proxySockets), and once
// ready it points the capture at its listeners and holds a lease file in
// the run directory, renewed every beat. An agent that finds a live lease of a newer
// agent is superseded: it stops reconciling (the two never fight over the
// pinned programs), and when it is told to stop it hands over: no new
// connections, tunnels GOAWAYed, open connections allowed to finish. If the
// newer agent dies, its lease goes stale and the older one takes over again.
type succession struct {
	path string
	self lease
	ttl  time.Duration // a lease not renewed for this long is dead
}

type lease struct {
	ID      string    `json:"id"`
	Started time.Time `json:"started"`
	Renewed time.Time `json:"renewed"`
}

func newSuccession(path string, ttl time.Duration) *succession {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return &succession{path: path, ttl: ttl, self: lease{ID: hex.EncodeToString(b), Started: time.Now()}}
}

// superseded reports whether a newer agent holds a live lease.
func (s *succession) superseded() bool {
	l, ok := s.read()
	return ok && l.ID != s.self.ID && l.Started.After(s.self.Started) && time.Since(l.Renewed) < s.ttl
}

// read reads the lease file.
func (s *succession) read() (lease, bool) {
	var l lease
	data, err := os.ReadFile(s.path)
	if err != nil || json.Unmarshal(data, &l) != nil {
		return lease{}, false
	}
	return l, true
}

// otherLive reports whether another agent holds a live lease (one serving
// this node, which this agent is to succeed).
func (s *succession) otherLive() bool {
	l, ok := s.read()
	return ok && l.ID != s.self.ID && time.Since(l.Renewed) < s.ttl
}

// beat renews this agent's lease unless a newer agent holds a live one, and
// says which happened.
func (s *succession) beat() (superseded bool, err error) {
	if s.superseded() {
		return true, nil
	}
	s.self.Renewed = time.Now()
	data, _ := json.Marshal(s.self)
	return false, atomicfile.Write(s.path, data, 0o644)
}

// awaitSuccessor polls for a newer agent for up to wait.
func (s *succession) awaitSuccessor(wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for {
		if s.superseded() {
			return true
		}
		if !time.Now().Before(deadline) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
}
