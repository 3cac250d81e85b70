package xds

import (
	"context"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// callbacks are the server's hooks into go-control-plane's streams. A
// state-of-the-world and a delta stream are handled alike: both are counted
// and tracked (what was sent, acknowledged, rejected), claim a node ID the
// caller must be entitled to, and time how long a change took to reach
// them; only where their messages differ do the two kinds of hooks differ.
type callbacks struct{ s *Server }

var _ server.Callbacks = callbacks{}

// request is what both kinds of discovery request carry.
type request interface {
	GetNode() *core.Node
	GetTypeUrl() string
	GetResponseNonce() string
	GetErrorDetail() *rpcstatus.Status
}

func (c callbacks) OnStreamOpen(ctx context.Context, id int64, _ string) error {
	c.open(ctx, c.s.ids.open(false, id), false)
	return nil
}

// OnDeltaStreamOpen: every delta stream is serveDelta's, which opened it;
// go-control-plane sees its Envoy part, under the stream's ID.
func (c callbacks) OnDeltaStreamOpen(ctx context.Context, id int64, _ string) error {
	n, ok := ctx.Value(streamIDKey{}).(int64)
	if !ok {
		return status.Error(codes.Internal, "delta stream not opened by serveDelta")
	}
	c.s.ids.join(id, n)
	return nil
}

func (c callbacks) OnStreamClosed(id int64, node *core.Node) {
	c.closed(c.s.ids.close(false, id), node)
}
func (c callbacks) OnDeltaStreamClosed(id int64, _ *core.Node) { c.s.ids.close(true, id) }

func (c callbacks) OnStreamRequest(id int64, req *discovery.DiscoveryRequest) error {
	return c.request(c.s.ids.of(false, id), req, false, "version", req.GetVersionInfo(), "resources", req.GetResourceNames())
}

func (c callbacks) OnStreamDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	return c.request(c.s.ids.of(true, id), req, true, "nonce", req.GetResponseNonce(), "resources", req.GetResourceNamesSubscribe())
}

func (c callbacks) OnStreamResponse(_ context.Context, id int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	c.response(c.s.ids.of(false, id), resp.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo(), len(resp.GetResources()))
}

func (c callbacks) OnStreamDeltaResponse(id int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	c.response(c.s.ids.of(true, id), resp.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo(),
		len(resp.GetResources())+len(resp.GetRemovedResources()))
}

// The REST (fetch) endpoints are not registered (see Register).
func (callbacks) OnFetchRequest(context.Context, *discovery.DiscoveryRequest) error         { return nil }
func (callbacks) OnFetchResponse(*discovery.DiscoveryRequest, *discovery.DiscoveryResponse) {}

func (c callbacks) open(ctx context.Context, id int64, delta bool) {
	c.s.metrics.clients.Inc()
	c.s.clients.open(id, delta)
	c.s.callers.open(ctx, id)
}

func (c callbacks) closed(id int64, node *core.Node) {
	c.s.metrics.clients.Dec()
	c.s.clients.close(id)
	c.s.callers.close(id)
	c.s.log.Info("xds client disconnected", "stream", id, "node", node.GetId())
}

// request checks the node ID against the caller, gives a waypoint's group a
// snapshot and records an ACK or a NACK. nackDetail is what a NACK's log
// line says about the request besides node, type and error.
func (c callbacks) request(id int64, req request, delta bool, nackDetail ...any) error {
	s, node, typeURL := c.s, req.GetNode(), req.GetTypeUrl()
	if id == 0 { // never opened: there is no caller to check it against
		return status.Error(codes.Internal, "xds request on a stream that was never opened")
	}
	if err := s.callers.authorize(id, node.GetId()); err != nil {
		s.log.Warn("xds request refused", "stream", id, "err", err)
		return err
	}
	// Counted first: a push that leaves out the gRPC group looks for gRPC
	// clients after ensureGroup's check (grpcgroup.go).
	s.clients.request(id, node, typeURL, req.GetResponseNonce(), nackMessage(req.GetErrorDetail()))
	s.ensureGroup(node)
	if e := req.GetErrorDetail(); e != nil {
		s.metrics.nacks.WithLabelValues(typeURL).Inc()
		attrs := append([]any{"node", node.GetId(), "type", typeURL}, nackDetail...)
		s.log.Warn("xds NACK", append(attrs, "error", e.GetMessage())...)
	} else if req.GetResponseNonce() == "" {
		attrs := []any{"stream", id, "node", node.GetId(), "type", typeURL}
		if !delta {
			attrs = append(attrs, "sotw", true)
		}
		s.log.Info("xds subscription", attrs...)
	}
	return nil
}

// response records a response; one that carries changes (resources, or
// removals) times the push it delivers.
func (c callbacks) response(id int64, typeURL, nonce, version string, changes int) {
	s := c.s
	since, weft := s.weft.sinceChange(typeURL)
	if !weft {
		s.mu.Lock()
		since = time.Since(s.pushedAt)
		s.mu.Unlock()
	}
	s.clients.response(id, typeURL, nonce, version)
	s.metrics.responses.WithLabelValues(typeURL).Inc()
	if changes > 0 {
		s.metrics.pushLatency.WithLabelValues(typeURL).Observe(since.Seconds())
	}
}

// nackMessage is a rejection's message, "" for an ACK.
func nackMessage(e *rpcstatus.Status) string {
	if e == nil {
		return ""
	}
	if m := e.GetMessage(); m != "" {
		return m
	}
	return "rejected"
}
