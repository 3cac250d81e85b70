package proxy

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// labelNames lists, for every istio_* series of g, the metric, its
// reporter and its label names, sorted and deduplicated: what the golden
// files pin, so that no label goes missing silently.
func labelNames(tb testing.TB, g prometheus.Gatherer) []byte {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var lines []string
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "istio_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			names := make([]string, 0, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				names = append(names, l.GetName())
			}
			slices.Sort(names)
			lines = append(lines, fmt.Sprintf("%s reporter=%s:\n  %s", mf.GetName(), labelMap(m)["reporter"], strings.Join(names, "\n  ")))
		}
	}
	slices.Sort(lines)
	return []byte(strings.Join(slices.Compact(lines), "\n") + "\n")
}

func TestGRPCStatus(t *testing.T) {
	trailer := http.Header{}
	trailer.Set(http.TrailerPrefix+"Grpc-Status", "5")
	for _, c := range []struct {
		h    http.Header
		code int
		want string
	}{
		{http.Header{"Grpc-Status": {"0"}}, 200, "0"}, // declared trailer, or trailers-only header
		{trailer, 200, "5"},                           // undeclared trailer
		{http.Header{}, 503, "14"},                    // no status: mapped from HTTP
		{http.Header{}, 200, "2"},
		{http.Header{}, 0, ""}, // no response
	} {
		if got := grpcStatus(c.h, c.code); got != c.want {
			t.Errorf("grpcStatus(%v, %d) = %q, want %q", c.h, c.code, got, c.want)
		}
	}
}

func TestServiceOf(t *testing.T) {
	for _, tc := range []struct{ cluster, host, name, ns string }{
		{"outbound|9080|v1|reviews.bookinfo.svc.cluster.local", "reviews.bookinfo.svc.cluster.local", "reviews", "bookinfo"},
		{"outbound|80||api.example.com", "api.example.com", "api", "example"},
		{"outbound|80||localhost", "localhost", "localhost", ""},
		{"PassthroughCluster", "", "", ""},
	} {
		host, name, ns := serviceOf(tc.cluster)
		if host != tc.host || name != tc.name || ns != tc.ns {
			t.Errorf("serviceOf(%q) = %q %q %q, want %q %q %q", tc.cluster, host, name, ns, tc.host, tc.name, tc.ns)
		}
	}
}

// Generated x-request-ids are random (version 4) UUIDs, as Envoy's.
func TestNewRequestID(t *testing.T) {
	a, b := newRequestID(), newRequestID()
	u, err := uuid.Parse(a)
	if err != nil || u.Version() != 4 || u.Variant() != uuid.RFC4122 || len(a) != 36 || a == b {
		t.Fatalf("request ids %q, %q: %v", a, b, err)
	}
}
