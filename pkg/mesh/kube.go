package mesh

// Kubernetes names weft-control and weftctl must agree on: the labels and
// annotations Weft shares with Istio's ambient mode (so that users'
// manifests carry over) and the waypoint Gateway contract
// (waypoint/README.md).
const (
	// LabelDataplaneMode enrols a namespace or pod: DataplaneAmbient, or
	// DataplaneNone to opt out.
	LabelDataplaneMode = "istio.io/dataplane-mode"
	DataplaneAmbient   = "ambient"
	DataplaneNone      = "none"
	// LabelUseWaypoint names the waypoint Gateway a namespace, Service or
	// pod uses, in LabelUseWaypointNamespace or its own namespace.
	LabelUseWaypoint          = "istio.io/use-waypoint"
	LabelUseWaypointNamespace = "istio.io/use-waypoint-namespace"
	// LabelIngressUseWaypoint "true" on a Service (or its namespace, the
	// Service's label winning) sends ingress gateways' traffic for it
	// through its waypoint.
	LabelIngressUseWaypoint = "istio.io/ingress-use-waypoint"
	// LabelWaypointFor on a waypoint Gateway: service, workload, all or
	// none.
	LabelWaypointFor = "istio.io/waypoint-for"
	// LabelGatewayName is set on a Gateway's pods and Service by its
	// controller (Gateway API).
	LabelGatewayName = "gateway.networking.k8s.io/gateway-name"
	// AnnotationDryRun on an AuthorizationPolicy: evaluate and log, do not
	// enforce.
	AnnotationDryRun = "istio.io/dry-run"

	// WaypointClass is the GatewayClass of Weft's waypoints.
	WaypointClass = "weft-waypoint"
	// WaypointGatewayListener is the name of a waypoint Gateway's one
	// listener (protocol HBONEProtocol on HBONEPort); the Envoy Listener
	// weft-control sends the waypoint is WaypointListener.
	WaypointGatewayListener = "mesh"
	// HBONEProtocol names HBONE as a Gateway listener protocol and as the
	// "tunnel" of an endpoint's metadata.
	HBONEProtocol = "HBONE"
	// MetadataTunnelTarget is the key of an endpoint's metadata whose
	// value, "<ip>:<port>", is the target of the HBONE CONNECT when it is
	// not the endpoint itself: the endpoint is a waypoint, and the target
	// the service VIP it serves (istio.io/ingress-use-waypoint).
	MetadataTunnelTarget = "tunnel_target"
)

// Defaults of the mesh-wide settings.
const (
	// SystemNamespace is where Weft's control plane and node agents run
	// and the default root namespace of mesh-wide configuration.
	SystemNamespace    = "weft-system"
	DefaultTrustDomain = "cluster.local"
	// DefaultDomainSuffix is the cluster DNS domain.
	DefaultDomainSuffix = "cluster.local"
	// DefaultClusterID is the cluster name in workload UIDs.
	DefaultClusterID = "Kubernetes"
)

// Enrolled reports whether a pod is in the mesh: its own LabelDataplaneMode
// wins (DataplaneNone opts out), else its namespace's. With nil podLabels
// it is the namespace's half alone: whether the namespace's pods join
// unless they opt out.
func Enrolled(podLabels, namespaceLabels map[string]string) bool {
	switch podLabels[LabelDataplaneMode] {
	case DataplaneNone:
		return false
	case DataplaneAmbient:
		return true
	}
	return namespaceLabels[LabelDataplaneMode] == DataplaneAmbient
}
