// Package istiolabels is Istio's standard metric label set ("Istio Standard
// Metrics"), in one place for every reporter Weft has: the node agent's
// istio_tcp_* (as ztunnel emits them), the waypoint's and gateway's
// istio_request* and istio_tcp_*. Names and values are built here together,
// so that a label cannot get a neighbour's value, and Prometheus and Kiali
// find the labels they query (canonical service and revision, cluster).
package istiolabels

// Unknown is the value of a label whose value is not known, as in Istio.
const Unknown = "unknown"

// Peer is one end of a connection as the labels describe it. A proxy
// builds it once per workload or connection, not per request.
type Peer struct {
	Workload, Namespace string
	// Principal is the SPIFFE ID ("spiffe://td/ns/x/sa/y").
	Principal string
	// CanonicalService and CanonicalRevision are the workload's telemetry
	// name and revision (control/workload computes them with Istio's
	// rules); they are also the *_app and *_version labels, as ztunnel
	// reports them.
	CanonicalService, CanonicalRevision string
	Cluster                             string
}

// Service is the destination Service: its hostname (destination_service),
// name and namespace.
type Service struct {
	Host, Name, Namespace string
}

// TCP are the label names of istio_tcp_*, in the order of TCPValues.
var TCP = []string{
	"reporter",
	"source_workload", "source_canonical_service", "source_canonical_revision", "source_workload_namespace",
	"source_principal", "source_app", "source_version", "source_cluster",
	"destination_service", "destination_service_namespace", "destination_service_name",
	"destination_workload", "destination_canonical_service", "destination_canonical_revision", "destination_workload_namespace",
	"destination_principal", "destination_app", "destination_version", "destination_cluster",
	"request_protocol", "response_flags", "connection_security_policy",
}

// HTTP are the label names of istio_requests_total,
// istio_request_duration_milliseconds, istio_request_bytes and
// istio_response_bytes, in the order of HTTPValues: TCP's and the
// response's code and gRPC status.
var HTTP = append(append([]string{}, TCP...), "response_code", "grpc_response_status")

// TCPValues are the values of TCP's labels; an empty value is Unknown
// (protocol, flags and security are always known).
func TCPValues(reporter string, src, dst *Peer, svc *Service, protocol, flags, security string) []string {
	return appendValues(make([]string, 0, len(TCP)), reporter, src, dst, svc, protocol, flags, security)
}

// HTTPValues are the values of HTTP's labels. grpcStatus is "" for a
// response that is not gRPC (Istio reports it empty then, not unknown).
func HTTPValues(reporter string, src, dst *Peer, svc *Service, protocol, flags, security, code, grpcStatus string) []string {
	return append(appendValues(make([]string, 0, len(HTTP)), reporter, src, dst, svc, protocol, flags, security), code, grpcStatus)
}

func appendValues(v []string, reporter string, src, dst *Peer, svc *Service, protocol, flags, security string) []string {
	return append(v,
		reporter,
		or(src.Workload), or(src.CanonicalService), or(src.CanonicalRevision), or(src.Namespace),
		or(src.Principal), or(src.CanonicalService), or(src.CanonicalRevision), or(src.Cluster),
		or(svc.Host), or(svc.Namespace), or(svc.Name),
		or(dst.Workload), or(dst.CanonicalService), or(dst.CanonicalRevision), or(dst.Namespace),
		or(dst.Principal), or(dst.CanonicalService), or(dst.CanonicalRevision), or(dst.Cluster),
		protocol, flags, security,
	)
}

func or(s string) string {
	if s == "" {
		return Unknown
	}
	return s
}

// StandardMetric is one of the Istio standard metrics waypoints and
// gateways report: its name without the "istio_" prefix (what Istio's
// stats filter configuration calls it), the Telemetry API's name for it,
// and whether it carries TCP's labels (else HTTP's).
type StandardMetric struct {
	Name, Selector string
	TCP            bool
}

// StandardMetrics are the Istio standard metrics waypoints and gateways
// report, in the order Istio's Telemetry API lists them. Istio's gRPC
// message counts (GRPC_REQUEST_MESSAGES, GRPC_RESPONSE_MESSAGES) are not
// among them.
var StandardMetrics = []StandardMetric{
	{"requests_total", "REQUEST_COUNT", false},
	{"request_duration_milliseconds", "REQUEST_DURATION", false},
	{"request_bytes", "REQUEST_SIZE", false},
	{"response_bytes", "RESPONSE_SIZE", false},
	{"tcp_connections_opened_total", "TCP_OPENED_CONNECTIONS", true},
	{"tcp_connections_closed_total", "TCP_CLOSED_CONNECTIONS", true},
	{"tcp_sent_bytes_total", "TCP_SENT_BYTES", true},
	{"tcp_received_bytes_total", "TCP_RECEIVED_BYTES", true},
}
