package mesh

import (
	"strconv"
	"strings"
)

// Type URLs of Weft's workload-discovery resources (api/workload/v1),
// served by weft-control and subscribed to by node agents.
const (
	AddressType       = "type.googleapis.com/weft.workload.v1.Address"
	AuthorizationType = "type.googleapis.com/weft.workload.v1.Authorization"
	// EnrolledNamespaceType: the ambient namespaces (node agents only).
	EnrolledNamespaceType = "type.googleapis.com/weft.workload.v1.EnrolledNamespace"
)

// Names in the Envoy resources weft-control sends waypoints
// (waypoint/README.md).
const (
	// WaypointListener is the name of the waypoint's HBONE Listener.
	WaypointListener = "waypoint"
	// MetadataNamespace is the filter_metadata key of Weft's endpoint
	// metadata.
	MetadataNamespace = "weft"
	// HTTPProtocolOptionsKey is the typed_extension_protocol_options key
	// of a Cluster's HttpProtocolOptions (Envoy's name; go-control-plane's
	// wellknown lacks it).
	HTTPProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	// PeerPrincipalFilterState is the filter state key (Istio's) holding
	// the SPIFFE ID of the authenticated downstream peer (the HBONE
	// tunnel's client certificate). A route's filter_state matcher on it
	// is how a VirtualService sourceNamespace reaches the waypoint: the
	// namespace comes from the proof the tunnel carries, never from a
	// header the client could write.
	PeerPrincipalFilterState = "io.istio.peer_principal"
)

// Istio's authn filter metadata (filter istio_authn): a waypoint fills it
// from the JWT its jwt_authn filter verified; RBAC metadata matchers of the
// translated AuthorizationPolicies read it.
const (
	AuthnFilter    = "istio_authn"
	AuthnPrincipal = "request.auth.principal" // "<iss>/<sub>"
	AuthnAudiences = "request.auth.audiences" // a list
	AuthnPresenter = "request.auth.presenter" // azp
	AuthnClaims    = "request.auth.claims"    // strings as lists of one
)

// OutboundCluster names the cluster of a service port and optional subset:
// "outbound|<port>|<subset>|<host>" (Istio's form).
func OutboundCluster(host string, port uint32, subset string) string {
	return "outbound|" + strconv.FormatUint(uint64(port), 10) + "|" + subset + "|" + host
}

// ParseOutboundCluster splits a cluster name of OutboundCluster's form.
// Only the number of parts is checked: port is 0 when it is not a number.
// It allocates nothing: waypoints parse the cluster of every request for
// its metric labels.
func ParseOutboundCluster(name string) (host string, port uint32, subset string, ok bool) {
	_, rest, ok1 := strings.Cut(name, "|")
	ps, rest, ok2 := strings.Cut(rest, "|")
	subset, host, ok3 := strings.Cut(rest, "|")
	if !ok1 || !ok2 || !ok3 || strings.Contains(host, "|") {
		return "", 0, "", false
	}
	p, _ := strconv.ParseUint(ps, 10, 32)
	return host, uint32(p), subset, true
}
