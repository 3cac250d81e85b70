package waypoint

import (
	"fmt"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	wellknown "github.com/envoyproxy/go-control-plane/pkg/wellknown"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/control/xds"
)

type validator interface{ ValidateAll() error }

// TestResourcesValidate checks every emitted resource, and every typed
// config packed inside it, against go-control-plane's generated
// validation (Envoy's protoc-gen-validate rules): real Envoy must accept
// the configuration.
func TestResourcesValidate(t *testing.T) {
	for _, dir := range caseDirs(t) {
		tc := loadCase(t, dir)
		out := Translate(Config{}, tc.in)
		for snap, res := range out.Groups() {
			for _, m := range resourceMessages(res) {
				t.Run(dir+"/"+snap+"/"+resourceName(m), func(t *testing.T) {
					for _, err := range validateDeep(m.ProtoReflect()) {
						t.Error(err)
					}
				})
			}
		}
	}
}

func resourceName(m proto.Message) string {
	f := m.ProtoReflect().Descriptor().Fields().ByName("name")
	if f == nil {
		f = m.ProtoReflect().Descriptor().Fields().ByName("cluster_name")
	}
	return string(m.ProtoReflect().Descriptor().Name()) + ":" + strings.ReplaceAll(m.ProtoReflect().Get(f).String(), "/", "_")
}

// validateDeep validates m and, recursively, every Any inside it.
func validateDeep(m protoreflect.Message) []error {
	var errs []error
	if v, ok := m.Interface().(validator); ok {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.Descriptor().FullName(), err))
		}
	}
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return append(errs, fmt.Errorf("Any %s: %w", a.TypeUrl, err))
		}
		return append(errs, validateDeep(inner.ProtoReflect())...)
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len(); i++ {
				errs = append(errs, validateDeep(v.List().Get(i).Message())...)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				errs = append(errs, validateDeep(mv.Message())...)
				return true
			})
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			errs = append(errs, validateDeep(v.Message())...)
		}
		return true
	})
	return errs
}

// TestValidateDeepFindsNestedErrors makes sure the check above is not
// vacuous: an invalid config packed in an Any inside a Listener is found.
func TestValidateDeepFindsNestedErrors(t *testing.T) {
	bad := &hcmv3.HttpConnectionManager{} // no stat_prefix, no route specifier
	l := &listenerv3.Listener{Name: "x", FilterChains: []*listenerv3.FilterChain{{
		Filters: []*listenerv3.Filter{{Name: wellknown.HTTPConnectionManager, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(bad)}}},
	}}}
	if err := l.ValidateAll(); err != nil {
		t.Fatalf("the listener itself should be valid: %v", err)
	}
	if errs := validateDeep(l.ProtoReflect()); len(errs) == 0 {
		t.Fatal("the invalid HttpConnectionManager inside the listener was not reported")
	}
	rc := &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{Name: "v"}}} // no domains
	if errs := validateDeep(rc.ProtoReflect()); len(errs) == 0 {
		t.Fatal("a virtual host without domains was not reported")
	}
}

// TestEmptyAndNilInputs: nothing in, nothing out, no panic.
func TestEmptyAndNilInputs(t *testing.T) {
	out := Translate(Config{}, Inputs{
		VirtualServices: []*networkingv1.VirtualService{nil},
		Services:        []*corev1.Service{nil},
		Pods:            []*corev1.Pod{nil},
	})
	if len(out.Waypoints) != 0 || out.GRPC == nil || len(out.GRPC.Listeners) != 0 || len(out.Problems) != 0 {
		t.Fatalf("unexpected output: %+v", out)
	}
}

// resourceMessages lists every Envoy resource of a node group's snapshot.
func resourceMessages(res xds.Resources) []proto.Message {
	var msgs []proto.Message
	msgs = append(msgs, asMessages(res.Listeners)...)
	msgs = append(msgs, asMessages(res.Routes)...)
	msgs = append(msgs, asMessages(res.Clusters)...)
	return append(msgs, asMessages(res.Endpoints)...)
}
