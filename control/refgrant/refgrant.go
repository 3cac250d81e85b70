// Package refgrant decides whether a Gateway API ReferenceGrant allows a
// reference across namespaces (gateway.networking.k8s.io/v1beta1). The
// translation (control/waypoint), the route status (control/status) and
// the listener status (control/waypoint/deploy) all ask here, so what Weft
// serves and what it reports cannot disagree.
package refgrant

import (
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// Ref is one side of a reference: for the referring object its group,
// kind and namespace (Name is not used); for the referent also its name.
// The core group is "".
type Ref struct {
	Group, Kind, Namespace, Name string
}

// Allowed reports whether a reference from from to to is permitted: in
// the same namespace always; across namespaces only when a ReferenceGrant
// in to's namespace lists from's group, kind and namespace in spec.from
// and to's group and kind (and name, when the entry names one) in spec.to.
func Allowed(grants []*gatewayv1beta1.ReferenceGrant, from, to Ref) bool {
	if from.Namespace == to.Namespace {
		return true
	}
	for _, g := range grants {
		if g == nil || g.Namespace != to.Namespace {
			continue
		}
		if !fromListed(g, from) {
			continue
		}
		for _, t := range g.Spec.To {
			if string(t.Group) == to.Group && string(t.Kind) == to.Kind && (t.Name == nil || *t.Name == "" || string(*t.Name) == to.Name) {
				return true
			}
		}
	}
	return false
}

func fromListed(g *gatewayv1beta1.ReferenceGrant, from Ref) bool {
	for _, f := range g.Spec.From {
		if string(f.Group) == from.Group && string(f.Kind) == from.Kind && string(f.Namespace) == from.Namespace {
			return true
		}
	}
	return false
}

// HTTPRouteBackend reports whether an HTTPRoute of namespace routeNS may
// send to Service name of namespace ns.
func HTTPRouteBackend(grants []*gatewayv1beta1.ReferenceGrant, routeNS, ns, name string) bool {
	return Allowed(grants, Ref{Group: gatewayGroup, Kind: "HTTPRoute", Namespace: routeNS}, Ref{Kind: "Service", Namespace: ns, Name: name})
}

// GatewaySecret reports whether a Gateway of namespace gatewayNS may use
// Secret name of namespace ns (a listener's certificateRef).
func GatewaySecret(grants []*gatewayv1beta1.ReferenceGrant, gatewayNS, ns, name string) bool {
	return Allowed(grants, Ref{Group: gatewayGroup, Kind: "Gateway", Namespace: gatewayNS}, Ref{Kind: "Secret", Namespace: ns, Name: name})
}

const gatewayGroup = gatewayv1beta1.GroupName
