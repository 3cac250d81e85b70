package xds

import (
	"sync"
	"sync/atomic"
)

// streamIDs gives every xDS stream an ID of this server's own.
// go-control-plane numbers its state-of-the-world and its delta streams
// separately, each from 1, so one of its IDs can name two live streams; a
// table keyed by it would check one stream's requests against the other's
// caller (TestStreamKindsNeverShareACaller).
type streamIDs struct {
	last atomic.Int64
	gcp  sync.Map // gcpStream -> int64
}

// gcpStream is a stream as go-control-plane names it.
type gcpStream struct {
	delta bool
	id    int64
}

// next is a fresh ID.
func (s *streamIDs) next() int64 { return s.last.Add(1) }

// open gives go-control-plane's stream a fresh ID.
func (s *streamIDs) open(delta bool, id int64) int64 {
	n := s.next()
	s.gcp.Store(gcpStream{delta, id}, n)
	return n
}

// join names go-control-plane's delta stream id by the ID of the stream it
// is part of (serveDelta's envoyPipe).
func (s *streamIDs) join(id, n int64) { s.gcp.Store(gcpStream{true, id}, n) }

// of is the ID of an open go-control-plane stream, 0 for none.
func (s *streamIDs) of(delta bool, id int64) int64 {
	if v, ok := s.gcp.Load(gcpStream{delta, id}); ok {
		return v.(int64)
	}
	return 0
}

// close forgets go-control-plane's stream and returns its ID.
func (s *streamIDs) close(delta bool, id int64) int64 {
	if v, ok := s.gcp.LoadAndDelete(gcpStream{delta, id}); ok {
		return v.(int64)
	}
	return 0
}
