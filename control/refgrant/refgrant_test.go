package refgrant

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

func TestAllowed(t *testing.T) {
	grant := func(ns string, from gatewayv1beta1.ReferenceGrantFrom, to gatewayv1beta1.ReferenceGrantTo) *gatewayv1beta1.ReferenceGrant {
		return &gatewayv1beta1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "g"},
			Spec: gatewayv1beta1.ReferenceGrantSpec{From: []gatewayv1beta1.ReferenceGrantFrom{from}, To: []gatewayv1beta1.ReferenceGrantTo{to}}}
	}
	gwFrom := gatewayv1beta1.ReferenceGrantFrom{Group: "gateway.networking.k8s.io", Kind: "Gateway", Namespace: "apps"}
	anySecret := gatewayv1beta1.ReferenceGrantTo{Group: "", Kind: "Secret"}
	oneSecret := gatewayv1beta1.ReferenceGrantTo{Group: "", Kind: "Secret", Name: ptr.To(gatewayv1beta1.ObjectName("cert"))}
	from := Ref{Group: "gateway.networking.k8s.io", Kind: "Gateway", Namespace: "apps"}
	secret := Ref{Kind: "Secret", Namespace: "certs", Name: "cert"}
	for _, c := range []struct {
		name   string
		grants []*gatewayv1beta1.ReferenceGrant
		from   Ref
		to     Ref
		want   bool
	}{
		{"same namespace needs no grant", nil, from, Ref{Kind: "Secret", Namespace: "apps", Name: "cert"}, true},
		{"no grant", nil, from, secret, false},
		{"grant for every Secret", []*gatewayv1beta1.ReferenceGrant{grant("certs", gwFrom, anySecret)}, from, secret, true},
		{"grant for this Secret", []*gatewayv1beta1.ReferenceGrant{grant("certs", gwFrom, oneSecret)}, from, secret, true},
		{"grant for another Secret", []*gatewayv1beta1.ReferenceGrant{grant("certs", gwFrom, oneSecret)}, from,
			Ref{Kind: "Secret", Namespace: "certs", Name: "other"}, false},
		{"grant in the wrong namespace (the referrer's)", []*gatewayv1beta1.ReferenceGrant{grant("apps", gwFrom, anySecret)}, from, secret, false},
		{"grant from another namespace", []*gatewayv1beta1.ReferenceGrant{grant("certs",
			gatewayv1beta1.ReferenceGrantFrom{Group: "gateway.networking.k8s.io", Kind: "Gateway", Namespace: "other"}, anySecret)}, from, secret, false},
		{"grant from another kind", []*gatewayv1beta1.ReferenceGrant{grant("certs",
			gatewayv1beta1.ReferenceGrantFrom{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute", Namespace: "apps"}, anySecret)}, from, secret, false},
		{"grant to another kind", []*gatewayv1beta1.ReferenceGrant{grant("certs", gwFrom, gatewayv1beta1.ReferenceGrantTo{Kind: "Service"})}, from, secret, false},
	} {
		if got := Allowed(c.grants, c.from, c.to); got != c.want {
			t.Errorf("%s: Allowed = %v, want %v", c.name, got, c.want)
		}
	}
}
