package waypoint

import (
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/control/xds"
)

// walkStrings calls f for every string field of the resources (inside Any
// too). field is the field name, with "@<message>" for the "name" of
// cluster weights so that references can be told from other names.
func walkStrings(t *testing.T, res *xds.Resources, f func(field, v string)) {
	t.Helper()
	var walk func(m protoreflect.Message)
	walk = func(m protoreflect.Message) {
		if a, ok := m.Interface().(*anypb.Any); ok {
			inner, err := a.UnmarshalNew()
			if err != nil {
				t.Errorf("Any %s: %v", a.TypeUrl, err)
				return
			}
			walk(inner.ProtoReflect())
			return
		}
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			name := string(fd.Name())
			if name == "cluster" && m.Descriptor().FullName() == "envoy.config.core.v3.HttpUri" {
				// jwt_authn's remote_jwks: the waypoint fetches the URI
				// itself; the cluster is Istio's name for its host.
				name = "cluster@http_uri"
			}
			if name == "name" {
				switch m.Descriptor().FullName() {
				case "envoy.config.route.v3.WeightedCluster.ClusterWeight":
					name = "name@cluster_weight"
				case "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight":
					name = "name@tcp_weighted_cluster"
				}
			}
			switch {
			case fd.Kind() == protoreflect.StringKind && !fd.IsList() && !fd.IsMap():
				f(name, v.String())
			case fd.IsList() && fd.Message() != nil:
				for i := 0; i < v.List().Len(); i++ {
					walk(v.List().Get(i).Message())
				}
			case fd.IsMap() && fd.MapValue().Message() != nil:
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					walk(mv.Message())
					return true
				})
			case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
				walk(v.Message())
			}
			return true
		})
	}
	for _, l := range res.Listeners {
		walk(l.ProtoReflect())
	}
	for _, r := range res.Routes {
		walk(r.ProtoReflect())
	}
}
