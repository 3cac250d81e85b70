package proxy

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weft-mesh/weft/pkg/istiolabels"
)

// TestHTTPSeriesCache: requests with the same standard label values share
// one series of each HTTP metric, other values get their own, values that
// only concatenate alike stay apart, and concurrent first requests of a
// label set make one series.
func TestHTTPSeriesCache(t *testing.T) {
	set := newMetricSet(standardPlan)
	if set.http == nil {
		t.Fatal("the standard plan has no series cache")
	}
	values := func(code string) []string {
		v := make([]string, len(istiolabels.HTTP))
		for i := range v {
			v[i] = fmt.Sprintf("v%d", i)
		}
		v[len(v)-2] = code
		return v
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				for _, obs := range set.httpSeries(values("200")).obs {
					obs(1)
				}
			}
		})
	}
	wg.Wait()
	a, b := values("2"), values("20")
	a[len(a)-1], b[len(b)-1] = "00", "0" // "2","00" and "20","0": the same bytes in a row
	for _, v := range [][]string{values("503"), a, b} {
		for _, obs := range set.httpSeries(v).obs {
			obs(1)
		}
	}
	requests := set.vecs[metricRequests].c
	if n := testutil.CollectAndCount(requests); n != 4 {
		t.Errorf("%d series of istio_requests_total, want 4", n)
	}
	if v := testutil.ToFloat64(requests.WithLabelValues(values("200")...)); v != 800 {
		t.Errorf("requests with code 200 = %v, want 800", v)
	}
	if n := testutil.CollectAndCount(set.vecs[metricDuration].h); n != 4 {
		t.Errorf("%d series of istio_request_duration_milliseconds, want 4", n)
	}
	entries := 0
	for _, ss := range set.http.series {
		entries += len(ss)
	}
	if entries != 4 {
		t.Errorf("%d cached series, want 4", entries)
	}
}

// BenchmarkHTTPMetrics: recording one request's four HTTP metrics with
// Istio's standard labels, through the series cache (what a request does
// without Telemetry overrides) and metric by metric (with overrides).
func BenchmarkHTTPMetrics(b *testing.B) {
	set := newMetricSet(standardPlan)
	std := make([]string, len(istiolabels.HTTP))
	for i := range std {
		std[i] = fmt.Sprintf("productpage-v1.default.svc.cluster.local-%d", i)
	}
	values := func() []string { return slices.Clone(std) } // a request makes its own
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, obs := range set.httpSeries(values()).obs {
				obs(1)
			}
		}
	})
	b.Run("per-metric", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			l := values()
			for _, m := range httpMetrics {
				set.vecs[m].record(l, nil, 1)
			}
		}
	})
}
