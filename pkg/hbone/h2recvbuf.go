package hbone

import "sync"

// Received DATA waits for the application in pooled chunks, so that a stream
// holds memory only for what it has received and not yet read (at most its
// receive window) and an idle stream holds none.
const (
	smallChunk = 16 << 10
	largeChunk = 256 << 10
)

var (
	smallChunks = sync.Pool{New: func() any { b := make([]byte, 0, smallChunk); return &b }}
	largeChunks = sync.Pool{New: func() any { b := make([]byte, 0, largeChunk); return &b }}
)

// recvBuffer is a FIFO of bytes; the connection's mutex guards it.
type recvBuffer struct {
	chunks []*[]byte // each chunk's length is how much was written to it
	r      int       // read offset in chunks[0]
	n      int       // unread bytes
}

func (b *recvBuffer) len() int { return b.n }

func (b *recvBuffer) write(p []byte) {
	for len(p) > 0 {
		if len(b.chunks) == 0 || len(*b.chunks[len(b.chunks)-1]) == cap(*b.chunks[len(b.chunks)-1]) {
			// Bulk data goes to large chunks, interactive data to small ones.
			pool := &smallChunks
			if len(p) >= smallChunk {
				pool = &largeChunks
			}
			b.chunks = append(b.chunks, pool.Get().(*[]byte))
		}
		c := b.chunks[len(b.chunks)-1]
		k := copy((*c)[len(*c):cap(*c)], p)
		*c = (*c)[:len(*c)+k]
		p = p[k:]
		b.n += k
	}
}

func (b *recvBuffer) read(p []byte) int {
	n := 0
	for n < len(p) && b.n > 0 {
		c := b.chunks[0]
		k := copy(p[n:], (*c)[b.r:])
		b.r += k
		n += k
		b.n -= k
		if b.r == len(*c) {
			b.pop()
		}
	}
	return n
}

// pop returns the first chunk, fully read, to its pool.
func (b *recvBuffer) pop() {
	c := b.chunks[0]
	copy(b.chunks, b.chunks[1:])
	b.chunks[len(b.chunks)-1] = nil
	b.chunks = b.chunks[:len(b.chunks)-1]
	b.r = 0
	*c = (*c)[:0]
	if cap(*c) == largeChunk {
		largeChunks.Put(c)
	} else {
		smallChunks.Put(c)
	}
}

// discard drops what is unread and returns how many bytes that was.
func (b *recvBuffer) discard() int {
	n := b.n
	for len(b.chunks) > 0 {
		b.pop()
	}
	b.n = 0
	return n
}
