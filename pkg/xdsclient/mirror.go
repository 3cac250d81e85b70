package xdsclient

import (
	"maps"
	"sync"

	"google.golang.org/protobuf/proto"
)

// Mirror is a Handler that keeps the resources it accepted, by type, for
// subscribers that want the resources themselves (tests, tools). The
// Client keeps only their versions: a proxy's state is its own store, and
// a second map of every resource would be a second copy of the mesh in
// memory.
type Mirror struct {
	next Handler

	mu    sync.Mutex
	state map[string]map[string]proto.Message
}

// NewMirror returns a Mirror that passes each response on to next first
// (nil: accept every response) and keeps it only if next accepts it.
func NewMirror(next Handler) *Mirror {
	return &Mirror{next: next, state: map[string]map[string]proto.Message{}}
}

// Handle is the Mirror's Handler.
func (m *Mirror) Handle(typeURL string, updated map[string]proto.Message, removed []string) error {
	if m.next != nil {
		if err := m.next(typeURL, updated, removed); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state[typeURL] == nil {
		m.state[typeURL] = map[string]proto.Message{}
	}
	for _, name := range removed {
		delete(m.state[typeURL], name)
	}
	maps.Copy(m.state[typeURL], updated)
	return nil
}

// Snapshot returns a copy of the accepted resources of one type.
func (m *Mirror) Snapshot(typeURL string) map[string]proto.Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.state[typeURL])
}
