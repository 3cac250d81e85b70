package xds

import (
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
)

// holdNACKs wraps a snapshot cache so that a NACK is answered by the next
// change, not at once. A state-of-the-world NACK carries the last version
// the client accepted ("" if none), which the cache sees as stale and
// answers immediately with the same rejected snapshot: a client that keeps
// rejecting it (say, an older proxyless gRPC) would spin at thousands of
// round trips a second. istiod ignores NACKs the same way.
type holdNACKs struct {
	cache.SnapshotCache
	hash cache.NodeHash
}

func (h holdNACKs) CreateWatch(req *cache.Request, sub cache.Subscription, ch chan cache.Response) (func(), error) {
	if req.GetErrorDetail() != nil {
		if snap, err := h.GetSnapshot(h.hash.ID(req.GetNode())); err == nil {
			if v := snap.GetVersion(req.GetTypeUrl()); v != "" {
				held := proto.Clone(req).(*cache.Request)
				held.VersionInfo = v
				req = held
			}
		}
	}
	return h.SnapshotCache.CreateWatch(req, sub, ch)
}
