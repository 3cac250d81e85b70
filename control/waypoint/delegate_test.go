package waypoint

import (
	"testing"

	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A delegate match must be narrower than the root's, as istiod decides
// (hasConflict): the table covers each kind of string match.
func TestDelegateMatchConflict(t *testing.T) {
	exact := func(s string) *networkingapi.StringMatch {
		return &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Exact{Exact: s}}
	}
	prefix := func(s string) *networkingapi.StringMatch {
		return &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Prefix{Prefix: s}}
	}
	regex := func(s string) *networkingapi.StringMatch {
		return &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Regex{Regex: s}}
	}
	for _, c := range []struct {
		name       string
		root, leaf *networkingapi.HTTPMatchRequest
		conflict   bool
	}{
		{"leaf narrows a prefix", &networkingapi.HTTPMatchRequest{Uri: prefix("/api")}, &networkingapi.HTTPMatchRequest{Uri: prefix("/api/v1")}, false},
		{"leaf exact under a prefix", &networkingapi.HTTPMatchRequest{Uri: prefix("/api")}, &networkingapi.HTTPMatchRequest{Uri: exact("/api/x")}, false},
		{"leaf prefix wider than the root's", &networkingapi.HTTPMatchRequest{Uri: prefix("/api/v1")}, &networkingapi.HTTPMatchRequest{Uri: prefix("/api")}, true},
		{"leaf prefix under an exact root", &networkingapi.HTTPMatchRequest{Uri: exact("/a")}, &networkingapi.HTTPMatchRequest{Uri: prefix("/a")}, true},
		{"regex root", &networkingapi.HTTPMatchRequest{Uri: regex("/a.*")}, &networkingapi.HTTPMatchRequest{Uri: exact("/ab")}, true},
		{"leaf without uri", &networkingapi.HTTPMatchRequest{Uri: prefix("/api")}, &networkingapi.HTTPMatchRequest{}, false},
		{"other header value", &networkingapi.HTTPMatchRequest{Headers: map[string]*networkingapi.StringMatch{"end-user": exact("jason")}},
			&networkingapi.HTTPMatchRequest{Headers: map[string]*networkingapi.StringMatch{"end-user": exact("bob")}}, true},
		{"another header", &networkingapi.HTTPMatchRequest{Headers: map[string]*networkingapi.StringMatch{"end-user": exact("jason")}},
			&networkingapi.HTTPMatchRequest{Headers: map[string]*networkingapi.StringMatch{"x-canary": exact("1")}}, false},
		{"other port", &networkingapi.HTTPMatchRequest{Port: 80}, &networkingapi.HTTPMatchRequest{Port: 8080}, true},
		{"gateway not in the root's", &networkingapi.HTTPMatchRequest{Gateways: []string{"a"}}, &networkingapi.HTTPMatchRequest{Gateways: []string{"b"}}, true},
	} {
		if got := matchConflict(c.root, c.leaf); got != c.conflict {
			t.Errorf("%s: conflict %v, want %v", c.name, got, c.conflict)
		}
	}
}

// A delegate's short destination hosts are of its own namespace, and the
// root VirtualService (a shared informer object) is not modified.
func TestDelegateHostsOfItsNamespace(t *testing.T) {
	root := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: "front", Name: "root"},
		Spec: networkingapi.VirtualService{Hosts: []string{"api"}, Http: []*networkingapi.HTTPRoute{{
			Delegate: &networkingapi.Delegate{Name: "api-routes", Namespace: "team"}}}}}
	leaf := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "api-routes"},
		Spec: networkingapi.VirtualService{Http: []*networkingapi.HTTPRoute{{
			Route: []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: "backend"}}}}}}}
	tr := newTranslator(withDefaults(Config{}))
	out := tr.expandDelegates([]*networkingv1.VirtualService{root, leaf})
	if got := out[0].Spec.Http[0].Route[0].Destination.Host; got != "backend.team.svc.cluster.local" {
		t.Errorf("delegated destination %q, want backend.team.svc.cluster.local", got)
	}
	if root.Spec.Http[0].Delegate == nil || leaf.Spec.Http[0].Route[0].Destination.Host != "backend" {
		t.Errorf("the inputs were modified")
	}
}
