// Package proxy is the waypoint's data path: the HBONE server
// (mesh.HBONEPort), HTTP/1.1 and h2 (including gRPC) inside each tunnel
// stream, filter-chain selection, the Clusters and ClusterLoadAssignments
// (load balancing, circuit breakers, outlier detection), upstream
// connections over HBONE, and telemetry (metrics, access log, tracing).
// waypoint/README.md is the contract for the xDS resources it consumes.
// Files by job:
//
//   - config.go: xDS resources -> an immutable Snapshot swapped atomically
//     (Store.Handle is the xdsclient handler; a resource that fails to
//     compile is rejected, NACKed and the previous version kept).
//   - chains.go: filter-chain selection by the CONNECT :authority.
//   - cluster.go, lb.go: endpoints, load balancing, circuit breakers,
//     outlier detection.
//   - upstream.go: route.Upstream: HTTP/1.1 or h2 to the chosen endpoint,
//     over HBONE (pkg/hbone.Dialer) or plain TCP; h1pool.go: HTTP/1.1
//     requests without a body, on the caller's goroutine.
//   - server.go: the HBONE server and the HTTP / TCP proxy per stream.
//   - telemetry.go, tracing.go: istio_request* metrics, access log, spans.
//   - l7.go: the only file naming package waypoint/route.
//
// # Load balancing
//
// ROUND_ROBIN, LEAST_REQUEST (power of two random choices, distinct endpoints, on outstanding
// requests), RANDOM, and RING_HASH (MAGLEV is served by the same ring): a
// consistent-hash ring of xxhash64 points, ceil(minimum_ring_size / hosts)
// points per host (default minimum 1024), looked up by binary search with
// the hash the route computed from its hash_policy; a request without a
// hash picks at random. The ring is rebuilt only when the set of available
// hosts changes, so a key keeps its host while that host is available.
// Endpoint weights and localities are not used (one locality per contract).
//
// Only endpoints with health_status HEALTHY or UNKNOWN (Envoy treats UNKNOWN
// as healthy) receive traffic; there is no panic threshold: when every
// endpoint is unhealthy or ejected the request fails with no healthy
// upstream (UH).
//
// # Circuit breakers (default-priority thresholds, Envoy defaults 1024)
//
// max_requests bounds the cluster's outstanding requests; max_connections
// bounds its connections busy with an HTTP/1.1 request (an HTTP/1.1
// connection carries one request at a time) and its TCP proxy streams;
// HTTP/1.1 requests beyond it wait as pending, at most
// max_pending_requests of them. Any overflow fails the request with
// route.ErrOverflow (503, flag UO). h2 upstreams multiplex one connection
// per endpoint, so only max_requests applies to them.
// max_requests_per_connection (HttpProtocolOptions) retires an HTTP/1.1
// connection after that many requests.
//
// # Outlier detection
//
// consecutive_5xx (default 5) 5xx responses or connect failures in a row
// eject an endpoint for base_ejection_time (30 s) x the number of times it
// was ejected (capped by max_ejection_time, 300 s), unless that would eject
// more than max_ejection_percent (10) of the cluster. Un-ejection is
// checked lazily on each pick rather than on an interval timer; the
// ejection multiplier decreases by one per interval (10 s) the endpoint
// spent un-ejected, as Envoy's does.
//
// # Upstream connections
//
// HBONE endpoints are reached at <pod IP>:<mesh.HBONEPort> with the
// waypoint's own SVID, authorizing the endpoint's metadata identity, CONNECT
// :authority <pod IP>:<port>; NONE endpoints over plain TCP. Inside the
// stream the waypoint speaks h2 when the downstream request was h2 (gRPC
// needs it), else HTTP/1.1, unless the cluster's HttpProtocolOptions has an
// explicit_http_config, which wins. The downstream side is sniffed per
// stream: the h2 preface selects h2 (x/net/http2 Server.ServeConn), anything
// else HTTP/1.1 with keep-alive (net/http on a one-connection listener).
// Connections are pooled per endpoint and shared by all clients, so
// upstream CONNECTs carry no per-client Forwarded header; TCP proxy
// streams, which are per client, do. HTTP/1.1 requests without a body go
// through h1pool.go, which writes the request and reads the response on
// the router's goroutine (net/http's framing, no writeLoop/readLoop
// goroutines: two hand-offs fewer per request) and checks an idle tunnel
// for the upstream's close without a read (hbone.ClientStream.Pending);
// requests with a body, upgrades, "Expect: 100-continue" and originated
// TLS use net/http's Transport, h2 its unencrypted HTTP/2.
//
// An upgrade request (WebSocket) always goes over HTTP/1.1; after a 101 its
// connection leaves the pool and belongs to the tunnel, holding its
// circuit-breaker slots until closed. A request with "Expect: 100-continue"
// sends its body after the upstream's 100 Continue, or after 1 s without
// an answer (net/http's and curl's wait), or after a final answer that
// keeps the connection open.
//
// HTTP/1.1 inside an HBONE stream is served by net/http, which needs read
// deadlines to stop its background read after each request and to hijack
// for an upgrade: hbone.ServerStream has them (streamConn passes them on).
package proxy
