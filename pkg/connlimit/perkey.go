package connlimit

import "sync"

// PerKey counts what each key (a source address, a peer identity) holds
// open, up to a limit per key: the one definition of "one tenant cannot
// take every slot" for listeners, tunnel servers and xDS streams.
type PerKey[K comparable] struct {
	limit int // <= 0: no limit, nothing counted

	mu   sync.Mutex
	held map[K]int
}

// NewPerKey holds at most limit per key (limit <= 0: no limit).
func NewPerKey[K comparable](limit int) *PerKey[K] {
	return &PerKey[K]{limit: limit, held: map[K]int{}}
}

// Take counts one more for k, or reports false when k holds the limit.
// Every true Take needs one Release.
func (p *PerKey[K]) Take(k K) bool {
	if p.limit <= 0 {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held[k] >= p.limit {
		return false
	}
	p.held[k]++
	return true
}

// Release returns what one Take of k counted.
func (p *PerKey[K]) Release(k K) {
	if p.limit <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held[k]--; p.held[k] <= 0 {
		delete(p.held, k)
	}
}

// Limit is the most one key may hold (<= 0: no limit).
func (p *PerKey[K]) Limit() int { return p.limit }
