package proxy

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/node-agent/config"
	"github.com/weft-mesh/weft/pkg/golden"
)

// labelNames lists, for every istio_* series of the registries, the
// metric, its reporter and its label names, sorted and deduplicated.
func labelNames(tb testing.TB, regs ...prometheus.Gatherer) []byte {
	tb.Helper()
	var lines []string
	for _, g := range regs {
		mfs, err := g.Gather()
		if err != nil {
			tb.Fatal(err)
		}
		for _, mf := range mfs {
			if !strings.HasPrefix(mf.GetName(), "istio_") {
				continue
			}
			for _, m := range mf.GetMetric() {
				var names []string
				reporter := ""
				for _, l := range m.GetLabel() {
					names = append(names, l.GetName())
					if l.GetName() == "reporter" {
						reporter = l.GetValue()
					}
				}
				slices.Sort(names)
				lines = append(lines, fmt.Sprintf("%s reporter=%s:\n  %s", mf.GetName(), reporter, strings.Join(names, "\n  ")))
			}
		}
	}
	slices.Sort(lines)
	return []byte(strings.Join(slices.Compact(lines), "\n") + "\n")
}

// TestMetricLabelsGolden pins the label names of every istio_tcp_* metric
// of both reporters (Istio's standard set, as ztunnel emits it), and the
// values of the ones Kiali joins on.
func TestMetricLabelsGolden(t *testing.T) {
	m := newMesh(t)
	if got, err := roundTrip(m.fromA(t, ap(vip, 80)), "x"); err != nil || got != "x" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	want := map[string]string{
		"destination_service": svcHost, "destination_service_name": "echo", "destination_service_namespace": "b",
		"source_canonical_service": "a", "source_canonical_revision": "v1", "source_app": "a", "source_version": "v1", "source_cluster": "Kubernetes",
		"destination_canonical_service": "b", "destination_canonical_revision": "v1", "destination_app": "b", "destination_version": "v1",
		"destination_cluster": "Kubernetes", "request_protocol": "tcp",
	}
	for _, n := range []*node{m.a, m.b} {
		await.True(t, "connection closed", func() bool { return counter(t, n.reg, "istio_tcp_connections_closed_total", want) == 1 })
	}
	golden.Assert(t, "testdata/metric-labels.golden", labelNames(t, m.a.reg, m.b.reg))
}

// TestServingService: the destination reports the Service the client
// addressed when the pod serves it, whatever the guess from the port
// would be; a claim of another Service is not believed.
func TestServingService(t *testing.T) {
	s := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)})
	ports := &workloadv1.PortList{Ports: []*workloadv1.Port{{ServicePort: 80, TargetPort: 8080}}}
	res := map[string]proto.Message{"Kubernetes//Pod/b/b": &workloadv1.Address{Type: &workloadv1.Address_Workload{Workload: &workloadv1.Workload{
		Uid: "Kubernetes//Pod/b/b", Name: "b", Namespace: "b", Addresses: []string{"10.0.0.3"},
		Services: map[string]*workloadv1.PortList{"b/a.b.svc.cluster.local": ports, "b/" + svcHost: ports},
	}}}}
	for _, name := range []string{"a", "echo", "other"} {
		host := name + ".b.svc.cluster.local"
		res["b/"+host] = &workloadv1.Address{Type: &workloadv1.Address_Service{Service: &workloadv1.Service{
			Name: name, Namespace: "b", Hostname: host, Ports: []*workloadv1.Port{{ServicePort: 80, TargetPort: 8080}}}}}
	}
	if err := s.Handle(config.AddressType, res, nil); err != nil {
		t.Fatal(err)
	}
	snap := s.Snapshot()
	w := snap.Workload("Kubernetes//Pod/b/b")
	for addressed, want := range map[string]string{
		svcHost:                     svcHost,
		"":                          "a.b.svc.cluster.local", // the guess: smallest name
		"other.b.svc.cluster.local": "a.b.svc.cluster.local", // not b's
	} {
		if got := servingService(snap, w, 8080, addressed); got.Host != want || got.Namespace != "b" {
			t.Errorf("servingService(%q) = %+v, want %s", addressed, got, want)
		}
	}
	if got := servingService(snap, w, 9999, ""); got.Host != "" {
		t.Errorf("servingService on a port no Service targets = %+v", got)
	}
}
