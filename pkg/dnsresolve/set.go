package dnsresolve

import (
	"maps"
	"slices"
	"sync"
)

// Set keeps a changing set of names resolved, one Watcher each, for
// readers that look addresses up by name (State) without waiting for DNS.
type Set struct {
	lookup   LookupFunc
	family   Family
	opts     Options
	onChange func(name string, st State)

	mu       sync.Mutex
	watchers map[string]*Watcher
}

// NewSet returns an empty Set resolving with lookup; onChange (may be nil)
// is called as Watch's.
func NewSet(lookup LookupFunc, f Family, o Options, onChange func(name string, st State)) *Set {
	return &Set{lookup: lookup, family: f, opts: o, onChange: onChange, watchers: map[string]*Watcher{}}
}

// Sync watches exactly names: it starts the new ones and stops the rest.
func (s *Set) Sync(names []string) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	s.mu.Lock()
	var stop []*Watcher
	for n, w := range s.watchers {
		if !want[n] {
			stop = append(stop, w)
			delete(s.watchers, n)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(want)) {
		if s.watchers[n] == nil {
			var cb func(State)
			if s.onChange != nil {
				cb = func(st State) { s.onChange(n, st) }
			}
			s.watchers[n] = Watch(n, s.family, s.lookup, s.opts, cb)
		}
	}
	s.mu.Unlock()
	for _, w := range stop { // outside the lock: Stop waits for a lookup to end
		w.Stop()
	}
}

// State is what the Set knows of name; false when name is not in the Set.
func (s *Set) State(name string) (State, bool) {
	s.mu.Lock()
	w := s.watchers[name]
	s.mu.Unlock()
	if w == nil {
		return State{}, false
	}
	return w.State(), true
}

// Close stops every watcher.
func (s *Set) Close() { s.Sync(nil) }
