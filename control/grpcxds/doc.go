// Package grpcxds proves, with tests only, that a proxyless gRPC client
// (grpc-go with google.golang.org/grpc/xds) that uses weft-control as its
// xDS server resolves a mesh service and routes to it by the translated
// Istio configuration (waypoint/README.md, "Proxyless gRPC snapshot").
//
// TestProxylessGRPCClientRoutesByTranslatedConfig builds the registry of a
// Service greeter (namespace default, port 50051 named grpc) with two Ready
// pods labelled version v1 and v2, whose pod IPs are 127.0.0.2 and
// 127.0.0.3 where real grpc-go servers (grpc.testing.TestService, answering
// with their version) listen in plaintext, as gRPC's CLAs list plain
// addresses. control/workload.Translate turns the corev1 objects into
// Addresses, control/waypoint.Translate adds a DestinationRule (subsets
// v1/v2) and a VirtualService (x-user: jason -> v2, everything else -> v1),
// and Output.GRPC goes into an xds.Server's "grpc" node group with
// SetWaypointSnapshots, as control/server does.
//
// The xds.Server is served the way control/server.Run serves it (mesh.XDSPort):
// TLS with a serving certificate for weft-control's Service names issued by
// the CA's root (ca.LoadOrCreateRoot, ca.NewServingRotator), and every
// stream authenticated by the bearer-token interceptor (a copy of
// control/server's unexported requireToken) backed by
// ca.NewTokenReviewAuthenticator, audience weft-ca, against a fake API
// server whose TokenReview accepts one service-account token.
//
// The client is configured the production way: GRPC_XDS_BOOTSTRAP names a
// bootstrap file with node ID grpc~test, channel_creds "tls" verifying the
// serving certificate against the CA bundle (ca_certificate_file), and
// call_creds "jwt_token_file" sending the token (gRFC A97; grpc-go needs
// GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS=true). grpc-go reads both
// variables at process start, so TestMain re-runs the test binary with them
// set. server_uri is mesh.ControlAddress() (the name TLS
// verifies) through a test resolver standing in for cluster DNS. The client
// dials xds:///greeter.default.svc.cluster.local:50051 and checks: without
// x-user every call reaches v1, with x-user: jason every call reaches v2;
// after a 50/50 VirtualService is translated and set, 200 calls split
// between v1 and v2 within 4 binomial standard deviations (jason still v2).
// It also checks that an xDS stream without a token is refused
// (Unauthenticated), that the client's stream was authenticated as its
// service account, and that it NACKed nothing.
//
// It also checks that every gRPC ClusterLoadAssignment locality has a
// locality and a weight: grpc-go NACKs a locality without ID and ignores
// weight 0 (the translation sets locality {} and weight 1, as istiod does).
package grpcxds
