package xds

import (
	"context"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Caller is the authenticated service account behind an xDS stream.
type Caller struct{ Namespace, ServiceAccount string }

type callerKey struct{}

// WithCaller attaches the stream's authenticated caller (the server's token
// interceptor does this). Streams with a caller may only claim a waypoint
// node ID of their own: a waypoint runs as the ServiceAccount named like its
// Gateway, so node ID waypoint~<ns>/<name>~... needs caller <ns>/<name>; an
// ingress gateway's node ID gateway~<ns>/<sa>~... names its own service
// account.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// streamCallers remembers each open stream's caller (the request callbacks
// see no context).
type streamCallers struct{ m sync.Map } // stream id -> Caller

func (s *streamCallers) open(ctx context.Context, id int64) {
	if c, ok := ctx.Value(callerKey{}).(Caller); ok {
		s.m.Store(id, c)
	}
}

func (s *streamCallers) close(id int64) { s.m.Delete(id) }

// namespace is the namespace of stream id's caller, "" without one.
func (s *streamCallers) namespace(id int64) string {
	if v, ok := s.m.Load(id); ok {
		return v.(Caller).Namespace
	}
	return ""
}

// authorize refuses a node ID that names a waypoint the caller is not.
// A stream without a caller (no token interceptor: tests, embedding) is not
// checked.
func (s *streamCallers) authorize(id int64, nodeID string) error {
	v, ok := s.m.Load(id)
	if !ok {
		return nil
	}
	group := NodeGroup(nodeID)
	if group == GroupNone || group == GroupGRPC {
		return nil
	}
	c := v.(Caller)
	what := "waypoint"
	if g, ok := strings.CutPrefix(group, GatewayGroupPrefix); ok {
		what, group = "gateway service account", g
	}
	if group != c.Namespace+"/"+c.ServiceAccount {
		return status.Errorf(codes.PermissionDenied, "node ID %q names %s %s, but the caller is service account %s/%s",
			nodeID, what, group, c.Namespace, c.ServiceAccount)
	}
	return nil
}
