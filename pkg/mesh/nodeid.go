package mesh

import (
	"errors"
	"fmt"
	"strings"
)

// Kind is the first part of an xDS node ID: what kind of proxy connects.
type Kind string

// Kinds of xDS clients.
const (
	// KindNodeAgent: "node-agent~<node>".
	KindNodeAgent Kind = "node-agent"
	// KindWaypoint: "waypoint~<namespace>/<gateway>~<pod>".
	KindWaypoint Kind = "waypoint"
	// KindGateway: "gateway~<namespace>/<service account>~<pod>" (an
	// ingress or egress gateway, weft-gateway).
	KindGateway Kind = "gateway"
	// KindGRPC: "grpc~<anything>", a proxyless gRPC client; the rest is
	// opaque (Name).
	KindGRPC Kind = "grpc"
)

// NodeID is an xDS node ID (core.Node.Id), the name a proxy gives
// weft-control when it subscribes. Which fields are set depends on Kind:
//
//	node-agent~<Name>                     Name: the node
//	waypoint~<Namespace>/<Name>~<Pod>     Name: the waypoint Gateway
//	gateway~<Namespace>/<Name>~<Pod>      Name: the gateway's service account
//	grpc~<Name>                           Name: anything
type NodeID struct {
	Kind      Kind
	Namespace string
	Name      string
	Pod       string
}

// NodeAgentID is the node ID of the node agent on node.
func NodeAgentID(node string) NodeID { return NodeID{Kind: KindNodeAgent, Name: node} }

// WaypointID is the node ID of pod, a waypoint of Gateway namespace/gateway.
func WaypointID(namespace, gateway, pod string) NodeID {
	return NodeID{Kind: KindWaypoint, Namespace: namespace, Name: gateway, Pod: pod}
}

// GatewayID is the node ID of pod, a gateway running as service account
// namespace/serviceAccount.
func GatewayID(namespace, serviceAccount, pod string) NodeID {
	return NodeID{Kind: KindGateway, Namespace: namespace, Name: serviceAccount, Pod: pod}
}

// String renders the node ID.
func (n NodeID) String() string {
	switch n.Kind {
	case KindWaypoint, KindGateway:
		return string(n.Kind) + "~" + n.Namespace + "/" + n.Name + "~" + n.Pod
	}
	return string(n.Kind) + "~" + n.Name
}

// Key is "<namespace>/<name>": the waypoint Gateway or the gateway's
// service account.
func (n NodeID) Key() string { return n.Namespace + "/" + n.Name }

var errNoKind = errors.New("no <kind>~ prefix")

// KindOf is the kind an xDS node ID starts with ("" for an unknown one),
// without checking the rest.
func KindOf(id string) Kind {
	k, _, ok := strings.Cut(id, "~")
	if !ok {
		return ""
	}
	switch Kind(k) {
	case KindNodeAgent, KindWaypoint, KindGateway, KindGRPC:
		return Kind(k)
	}
	return ""
}

// ParseNodeID parses an xDS node ID (see NodeID). A waypoint's or gateway's
// namespace and name must be non-empty and the name may not contain "/";
// its pod is what follows the second "~", possibly empty or missing.
func ParseNodeID(id string) (NodeID, error) {
	k, rest, ok := strings.Cut(id, "~")
	if !ok {
		return NodeID{}, fmt.Errorf("node ID %q: %w", id, errNoKind)
	}
	n := NodeID{Kind: Kind(k)}
	switch n.Kind {
	case KindNodeAgent, KindGRPC:
		n.Name = rest
		return n, nil
	case KindWaypoint, KindGateway:
		key, pod, _ := strings.Cut(rest, "~")
		ns, name, ok := strings.Cut(key, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return NodeID{}, fmt.Errorf("node ID %q: want %s~<namespace>/<name>~<pod>", id, k)
		}
		n.Namespace, n.Name, n.Pod = ns, name, pod
		return n, nil
	}
	return NodeID{}, fmt.Errorf("node ID %q: unknown kind %q", id, k)
}
