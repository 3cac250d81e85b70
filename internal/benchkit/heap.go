package benchkit

import "runtime"

// LiveHeap is the heap after two collections: the second empties the
// sync.Pool victim caches, so buffers pooled by earlier work and held by
// nobody do not count (nor hide a cost by being reused).
func LiveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
