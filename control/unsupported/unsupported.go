// Package unsupported names the API kinds Weft does not implement, with
// what a user gets instead. weft-control marks every such object
// WeftAccepted=False (reason Unsupported) as soon as it exists, and
// `weftctl analyze` lists it: an object that has no effect must say so.
package unsupported

import "k8s.io/apimachinery/pkg/runtime/schema"

// Kind is one kind Weft does not implement.
type Kind struct {
	// Resource is the version Weft watches; a kind is watched only while
	// the API server serves it (its CRD is installed).
	Resource schema.GroupVersionResource
	Kind     string
	// Message says what happens instead and what to do; it becomes the
	// condition's message.
	Message string
}

// Kinds are the kinds Weft does not implement. weft-base installs the CRDs
// of the first (Istio's ambient API ships it); the others are
// watched in case another chart installed theirs.
var Kinds = []Kind{
	{istio("networking", "v1", "workloadentries"), "WorkloadEntry",
		"WorkloadEntry is not supported yet: workloads outside Kubernetes are not in the mesh. Reach them with a ServiceEntry with static endpoints"},
	{istio("networking", "v1", "workloadgroups"), "WorkloadGroup",
		"WorkloadGroup is not supported yet: workloads outside Kubernetes are not in the mesh. Reach them with a ServiceEntry with static endpoints"},
	{istio("networking", "v1", "sidecars"), "Sidecar",
		"Sidecar configures sidecar proxies; ambient workloads have none, so it has no effect (as in Istio ambient)"},
	{istio("networking", "v1beta1", "proxyconfigs"), "ProxyConfig",
		"ProxyConfig is not supported: proxy settings are Helm values of the weft charts (docs/reference/helm-values.md)"},
	{istio("extensions", "v1alpha1", "wasmplugins"), "WasmPlugin",
		"WasmPlugin is not supported: Weft's waypoints and gateways run no Wasm"},
}

// GRPCRoute is the Gateway API kind Weft does not implement. Apart from
// Kinds: weft-control watches it with a typed informer and reports on its
// status.parents, as Gateway API defines for routes.
var GRPCRoute = Kind{
	schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "grpcroutes"}, "GRPCRoute",
	"GRPCRoute is not supported yet; the route has no effect. gRPC is HTTP/2: " +
		"an HTTPRoute (path /package.Service/Method) or a VirtualService routes it",
}

func istio(group, version, resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: group + ".istio.io", Version: version, Resource: resource}
}

// Of returns the Kind watched as resource, if any.
func Of(resource schema.GroupVersionResource) (Kind, bool) {
	for _, k := range Kinds {
		if k.Resource == resource {
			return k, true
		}
	}
	return Kind{}, false
}
