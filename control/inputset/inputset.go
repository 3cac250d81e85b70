// Package inputset is how the control plane's incremental translators
// (control/workload, control/waypoint) tell that the inputs they read
// besides pods are the ones of their last translation: informer caches hand
// out one object until it changes and replace it when it does, so the same
// objects, by identity, are the same inputs.
package inputset

// Set is a set of inputs by identity (pointers) or by value (a key derived
// from an object, such as a Node's locality), with how many were added: a
// list holding one object twice is not the list holding it once.
type Set struct {
	m map[any]struct{}
	n int
}

// New returns an empty set.
func New() *Set { return &Set{m: map[any]struct{}{}} }

// Add adds every non-nil object of objects.
func Add[T any](s *Set, objects []*T) {
	for _, o := range objects {
		if o != nil {
			s.Put(o)
		}
	}
}

// Put adds one input: a pointer, or a comparable key that stands for one.
func (s *Set) Put(v any) {
	s.m[v] = struct{}{}
	s.n++
}

// Equal reports whether s and o hold the same inputs, added as many times.
// A nil set (nothing translated yet) equals none.
func (s *Set) Equal(o *Set) bool {
	if s == nil || o == nil || s.n != o.n || len(s.m) != len(o.m) {
		return false
	}
	for k := range s.m {
		if _, ok := o.m[k]; !ok {
			return false
		}
	}
	return true
}
