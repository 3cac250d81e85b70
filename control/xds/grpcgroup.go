package xds

// The proxyless gRPC group (GroupGRPC) holds an API listener, route,
// clusters and endpoints for every HTTP Service port of the mesh: about
// half of the waypoint translation's work, and of the snapshots' size,
// which a mesh without proxyless gRPC clients pays on every push for
// nothing. So the control plane builds it only while a gRPC client is
// connected (HasGRPCClients) and leaves it out of SetWaypointSnapshots
// otherwise:
//   - a gRPC client's first request, while the last snapshots had no gRPC
//     group, signals GRPCWanted, which the control plane takes as a change
//     to push; the client's watch waits for that snapshot (the group has
//     none: it is never served an empty or stale one);
//   - a push that left the group out (no client when it started) drops its
//     snapshot if still no client is connected, or, for one that arrived
//     meanwhile, keeps it and signals GRPCWanted again.
//
// The two sides meet under envoyMu: a client is counted (clientTracker)
// before its request checks grpcServed under envoyMu, and a push sets
// grpcServed and then looks for counted clients under envoyMu; whichever
// comes second sees the other, so no client waits for a push that never
// comes.

// GRPCWanted delivers a (coalesced) signal when a proxyless gRPC client is
// waiting for the gRPC group that the last snapshots left out.
func (s *Server) GRPCWanted() <-chan struct{} { return s.grpcWanted }

// HasGRPCClients reports whether a proxyless gRPC client is connected (its
// stream sent a request naming a grpc~ node).
func (s *Server) HasGRPCClients() bool {
	return s.clients.anyNode(func(id string) bool { return NodeGroup(id) == GroupGRPC })
}

// wantGRPCLocked runs on a gRPC client's request; envoyMu is held.
func (s *Server) wantGRPCLocked() {
	if !s.grpcServed {
		s.signalGRPCWanted()
	}
}

// leftOutGRPCLocked runs when SetWaypointSnapshots got no gRPC group;
// envoyMu is held.
func (s *Server) leftOutGRPCLocked() {
	if s.HasGRPCClients() {
		s.signalGRPCWanted()
		return
	}
	if _, ok := s.waypoints[GroupGRPC]; !ok {
		return
	}
	// No watch is open on the group (no client): dropping its status too
	// loses nothing.
	s.envoyGRPC.ClearSnapshot(GroupGRPC)
	delete(s.waypoints, GroupGRPC)
	s.metrics.groupSize.DeleteLabelValues(GroupGRPC)
}

func (s *Server) signalGRPCWanted() {
	select {
	case s.grpcWanted <- struct{}{}:
	default:
	}
}
