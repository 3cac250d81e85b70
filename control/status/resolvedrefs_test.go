package status

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// TestRouteResolvedRefs: ResolvedRefs is True when every backendRef (and
// RequestMirror backendRef) is an existing Service of the route's
// namespace, else False with the reason of the first that is not:
// InvalidKind, RefNotPermitted (another namespace without a
// ReferenceGrant), BackendNotFound.
func TestRouteResolvedRefs(t *testing.T) {
	grants := []*gatewayv1beta1.ReferenceGrant{{ObjectMeta: metav1.ObjectMeta{Namespace: "granted", Name: "routes"},
		Spec: gatewayv1beta1.ReferenceGrantSpec{
			From: []gatewayv1beta1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "HTTPRoute", Namespace: "apps"}},
			To:   []gatewayv1beta1.ReferenceGrantTo{{Kind: "Service"}}}}}
	services := serviceSet([]*corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "web"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "db"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "granted", Name: "db"}},
		nil,
	})
	ref := func(name string, mod ...func(*gatewayv1.BackendObjectReference)) gatewayv1.HTTPBackendRef {
		b := gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: ptr.To(gatewayv1.PortNumber(80))}
		for _, m := range mod {
			m(&b)
		}
		return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{BackendObjectReference: b}}
	}
	inNS := func(ns string) func(*gatewayv1.BackendObjectReference) {
		return func(b *gatewayv1.BackendObjectReference) { b.Namespace = ptr.To(gatewayv1.Namespace(ns)) }
	}
	kind := func(group, kind string) func(*gatewayv1.BackendObjectReference) {
		return func(b *gatewayv1.BackendObjectReference) {
			b.Group, b.Kind = ptr.To(gatewayv1.Group(group)), ptr.To(gatewayv1.Kind(kind))
		}
	}
	mirror := func(name string) gatewayv1.HTTPRouteFilter {
		return gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterRequestMirror,
			RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{BackendRef: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name)}}}
	}
	for _, c := range []struct {
		name    string
		rules   []gatewayv1.HTTPRouteRule
		want    string // status/reason
		message string // a substring of the message when False
	}{
		{"no backends (a redirect)", []gatewayv1.HTTPRouteRule{{}}, "True/ResolvedRefs", ""},
		{"a Service of the namespace, explicit and not", []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{
			ref("web"), ref("web", inNS("apps"), kind("", "Service"))}}}, "True/ResolvedRefs", ""},
		{"missing Service", []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{ref("web"), ref("nope")}}},
			"False/BackendNotFound", "spec.rules[0].backendRefs[1]: Service apps/nope not found"},
		{"another namespace's Service", []gatewayv1.HTTPRouteRule{{}, {BackendRefs: []gatewayv1.HTTPBackendRef{ref("db", inNS("other"))}}},
			"False/RefNotPermitted", "spec.rules[1].backendRefs[0]: Service other/db: no ReferenceGrant in namespace other"},
		{"another namespace's Service with a ReferenceGrant", []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{ref("db", inNS("granted"))}}},
			"True/ResolvedRefs", ""},
		{"a missing Service of a granted namespace", []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{ref("gone", inNS("granted"))}}},
			"False/BackendNotFound", "Service granted/gone not found"},
		{"not a Service", []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{ref("web", kind("example.com", "Bucket"))}}},
			"False/InvalidKind", "only Services"},
		{"a mirror to a missing Service", []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{ref("web")},
			Filters: []gatewayv1.HTTPRouteFilter{mirror("gone")}}}, "False/BackendNotFound", "spec.rules[0].filters[0].requestMirror.backendRef"},
	} {
		t.Run(c.name, func(t *testing.T) {
			hr := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "r"}, Spec: gatewayv1.HTTPRouteSpec{Rules: c.rules}}
			got := routeResolvedRefs(hr, services, grants)
			if got.Type != "ResolvedRefs" || string(got.Status)+"/"+got.Reason != c.want {
				t.Errorf("%s %s/%s (%s), want %s", got.Type, got.Status, got.Reason, got.Message, c.want)
			}
			if c.message != "" && !strings.Contains(got.Message, c.message) {
				t.Errorf("message %q, want it to contain %q", got.Message, c.message)
			}
			// Every parent gets it, next to Accepted.
			set, _ := httpRouteConditions(Condition{Status: "True"}, got, attachAll)(gatewayv1.ParentReference{Name: "gw"})
			if rr := meta.FindStatusCondition(set, "ResolvedRefs"); rr == nil || rr.Reason != got.Reason {
				t.Errorf("parent conditions %+v lack ResolvedRefs", set)
			}
		})
	}
}
