package waypoint

import (
	"strings"
	"testing"
)

// TestParseExtensionProviders: Istio's format is read strictly; what cannot
// be a provider list is an error naming the entry, never half a list.
func TestParseExtensionProviders(t *testing.T) {
	ok := `[{"name":"grpc","envoyExtAuthzGrpc":{"service":"a.ns.svc.cluster.local","port":9000,"timeout":"1s"}},
	        {"name":"zipkin","zipkin":{"service":"z.ns.svc.cluster.local","port":9411}}]`
	ps, err := ParseExtensionProviders([]byte(ok))
	if err != nil || len(ps) != 2 || ps[0].GetEnvoyExtAuthzGrpc().GetTimeout().AsDuration().Seconds() != 1 {
		t.Fatalf("valid list: %v %v", ps, err)
	}
	if ps, err := ParseExtensionProviders([]byte("  ")); err != nil || ps != nil {
		t.Errorf("empty flag: %v %v, want none", ps, err)
	}
	for _, c := range []struct{ in, want string }{
		{`{"name":"x"}`, "cannot unmarshal object"},
		{`[{"name":"x","envoyExtAuthzGrpc":{"service":"s","port":1,"tiemout":"1s"}}]`, "extensionProviders[0]"},
		{`[{"envoyExtAuthzGrpc":{"service":"s","port":1}}]`, "no name"},
		{`[{"name":"x","envoyExtAuthzGrpc":{"service":"s","port":1}},{"name":"x","envoyExtAuthzHttp":{"service":"s","port":1}}]`, "used twice"},
		{`[{"name":"x"}]`, "no provider type"},
	} {
		if _, err := ParseExtensionProviders([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.in, err, c.want)
		}
	}
}
