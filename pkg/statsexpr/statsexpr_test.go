package statsexpr

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func TestEval(t *testing.T) {
	a := &Attributes{
		Request: &Request{Host: "reviews:9080", Method: "GET", Path: "/reviews/1?x=1", Scheme: "http", Protocol: "HTTP/1.1",
			Header: http.Header{"X-User": {"jason"}}},
		ResponseCode: 503,
		Source:       netip.MustParseAddr("10.0.0.7"),
		Destination:  netip.MustParseAddrPort("10.96.0.9:9080"),
		Cluster:      "outbound|9080||reviews.default.svc.cluster.local",
		MutualTLS:    true,
	}
	tcp := &Attributes{Destination: netip.MustParseAddrPort("10.96.0.9:27017")}
	for _, tc := range []struct {
		expr string
		a    *Attributes
		want string
	}{
		{`"literal"`, a, "literal"},
		{`request.host`, a, "reviews:9080"},
		{`request.url_path`, a, "/reviews/1"},
		{`request.path`, a, "/reviews/1?x=1"},
		{`request.headers['x-user']`, a, "jason"},
		{`request.headers['x-missing']`, a, Unknown},
		{`string(destination.port)`, a, "9080"},
		{`destination.port`, a, "9080"},
		{`destination.address`, a, "10.96.0.9:9080"},
		{`source.address`, a, "10.0.0.7"},
		{`response.code >= 500 ? "error" : "ok"`, a, "error"},
		{`connection.mtls`, a, "true"},
		{`connection.mtls`, tcp, "false"},
		{`xds.cluster_name`, a, "outbound|9080||reviews.default.svc.cluster.local"},
		{`request.host`, tcp, Unknown},
		{`string(destination.port)`, tcp, "27017"},
		{`upstream.address`, tcp, Unknown},
	} {
		p, err := Compile(tc.expr)
		if err != nil {
			t.Fatalf("Compile(%s): %v", tc.expr, err)
		}
		if got := p.Eval(tc.a); got != tc.want {
			t.Errorf("%s = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

func TestCompileRefuses(t *testing.T) {
	for expr, want := range map[string]string{
		`request.hots`:         "request.hots is not provided",
		`upstream_peer.app`:    "undeclared reference",
		`request.host +`:       "Syntax error",
		`filter_state['x']`:    "undeclared reference",
		`source.port`:          "source.port is not provided",
		`has(response.flags)`:  "response.flags is not provided",
		`[request.host, 1][0]`: "",
	} {
		_, err := Compile(expr)
		switch {
		case want == "" && err != nil:
			t.Errorf("Compile(%s): %v", expr, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("Compile(%s) = %v, want an error with %q", expr, err, want)
		}
	}
}
