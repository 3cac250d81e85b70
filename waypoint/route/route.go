// Package route is the L7 request pipeline of one waypoint HTTP filter chain:
// it compiles an Envoy v3 HttpConnectionManager (its http_filters: fault,
// cors, rbac-deny, rbac-allow, router) and the chain's RouteConfiguration
// into a Pipeline, an http.Handler implementing exactly the Envoy semantics
// listed in waypoint/README.md. Upstream I/O (load balancing, circuit
// breaking, outlier detection, transport) sits behind the Upstream interface.
//
// Request flow (Envoy's order): the route is selected first (virtual host by
// :authority, then the first matching route; Envoy's HCM caches the route
// before the filters run), then the HTTP filters decode in the order of
// http_filters, the router last. Responses produced by a filter pass back
// through the encoders of the filters before it only (e.g. an RBAC 403 gets
// CORS headers, a fault abort does not), as in Envoy.
//
// See doc.go for the semantic choices and their Envoy references.
package route

import (
	"context"
	"errors"
	"net/http"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Upstream sends one request to one endpoint of a cluster. Load balancing,
// circuit breaking, outlier detection and the transport are its job.
type Upstream interface {
	// RoundTrip sends req to an endpoint of cluster. hash is the
	// consistent-hash key from the route's hash_policy (hashed=false: none).
	// Errors should wrap ErrConnectFailure, ErrOverflow (circuit breaker) or
	// ErrNoHealthyUpstream so retries and response flags work.
	//
	// req.Context() carries the route timeout / per-try timeout and is
	// cancelled when the attempt is abandoned; the response body must stop
	// when it is cancelled. The transport must not decompress bodies.
	//
	// req.Header holds end-to-end headers only, except on an upgrade
	// request ("Connection: Upgrade" and Upgrade kept): that one goes over
	// HTTP/1.1, and a 101 answer's Body is the switched connection, an
	// hbone.Stream (read, write, half-close), as net/http's Transport
	// gives it. req.Trailer is filled while req.Body is read: send the
	// values present at its end.
	RoundTrip(req *http.Request, cluster string, hash uint64, hashed bool) (*http.Response, error)
}

// Errors an Upstream wraps so the router can decide on retries and response
// flags (Envoy reset reasons / response flags).
var (
	// ErrConnectFailure: no connection to the chosen endpoint (flag UF;
	// retried under connect-failure, reset, 5xx, gateway-error).
	ErrConnectFailure = errors.New("upstream connect failure")
	// ErrOverflow: a circuit breaker threshold was hit (flag UO; never
	// retried, as in Envoy).
	ErrOverflow = errors.New("upstream overflow (circuit breaker)")
	// ErrNoHealthyUpstream: the cluster has no healthy endpoint (flag UH;
	// 503 "no healthy upstream", not retried, as in Envoy).
	ErrNoHealthyUpstream = errors.New("no healthy upstream")

	// Additions to the contract API.

	// ErrRefusedStream: the upstream refused the stream (h2 REFUSED_STREAM);
	// retried under refused-stream, reset, 5xx, gateway-error (flag UR).
	ErrRefusedStream = errors.New("upstream refused stream")
	// ErrClusterNotFound: the cluster is unknown (flag NC, 503, not retried).
	ErrClusterNotFound = errors.New("cluster not found")
)

// Peer is the authenticated client of the request (the HBONE peer, or the
// original client for RBAC source.ip).
type Peer struct {
	ID   spiffeid.ID // zero: no identity
	Addr netip.Addr

	// Dest is the original destination of the connection (the HBONE CONNECT
	// :authority, VIP:port). RBAC destination_port/destination_ip match it,
	// as Envoy matches the connection's local address. Addition to the
	// contract API; when invalid, the port of http.LocalAddrContextKey is used.
	Dest netip.AddrPort
}

type peerKey struct{}
type infoKey struct{}

// WithPeer returns ctx carrying p for the pipeline (RBAC principals,
// source_ip hash policy).
func WithPeer(ctx context.Context, p Peer) context.Context {
	return context.WithValue(ctx, peerKey{}, &p)
}

// PeerFrom returns the Peer stored by WithPeer (zero Peer, false: none).
func PeerFrom(ctx context.Context) (Peer, bool) {
	p, ok := ctx.Value(peerKey{}).(*Peer)
	if !ok {
		return Peer{}, false
	}
	return *p, true
}

// Info is filled by ServeHTTP for telemetry (the caller puts it in the
// context with WithInfo and reads it after ServeHTTP returns or panics with
// http.ErrAbortHandler).
type Info struct {
	// Route is the name of the matched route ("" when none matched).
	Route string
	// Cluster is the cluster chosen by the router (after weighted pick).
	Cluster string
	// ResponseFlags holds Envoy's short response flags, comma-separated in
	// the order they were set, e.g. "UF,URX" or "DI,FI"; "" is Envoy's "-".
	// Used: NR no route, NC cluster not found, UF upstream connect failure,
	// UO overflow, UH no healthy upstream, UT upstream (route/per-try)
	// timeout, UR upstream reset, UC upstream connection termination,
	// URX retry limit exceeded, FI fault abort, DI delay injected, DC
	// downstream connection termination. Envoy sets no flag for RBAC
	// denials (see Details).
	ResponseFlags string
	// Attempts is the number of upstream attempts (1 + retries).
	Attempts int
	// Mirrored is true when at least one mirror request was sent.
	Mirrored bool

	// Additions to the contract API.

	// Details is Envoy's %RESPONSE_CODE_DETAILS% for locally generated
	// responses, e.g. "route_not_found", "rbac_access_denied_matched_policy[none]",
	// "fault_filter_abort", "upstream_response_timeout", "via_upstream".
	Details string
	// Status is the HTTP status sent downstream (0: none sent).
	Status int
	// DryRun is the decision of the RBAC filters' shadow rules (Istio's
	// istio.io/dry-run policies): "" (none), "allowed" or
	// "denied[<policy>|none]". It is never enforced.
	DryRun string
	// Audit is the policy of an RBAC filter with action LOG (Istio's
	// AUDIT) that matched the request, "" for none: Envoy's
	// access_log_hint.
	Audit string
	// Hash and Hashed are the consistent-hash key given to the Upstream.
	Hash   uint64
	Hashed bool
	// TunnelReceived and TunnelSent count the bytes of an upgraded
	// connection after its 101: client to upstream and back.
	TunnelReceived, TunnelSent int64
}

// WithInfo returns a context carrying a fresh Info that ServeHTTP fills in.
func WithInfo(ctx context.Context) (context.Context, *Info) {
	i := &Info{}
	return context.WithValue(ctx, infoKey{}, i), i
}
