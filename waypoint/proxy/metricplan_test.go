package proxy

import (
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statsapi "istio.io/api/envoy/extensions/stats"

	"github.com/weft-mesh/weft/internal/await"
)

// withStats is fc (an HCM chain) with an istio.stats HTTP filter of cfg
// before its router, as control/waypoint renders Telemetry metrics.
func withStats(t *testing.T, fc *listenerv3.FilterChain, cfg *statsapi.PluginConfig) *listenerv3.FilterChain {
	t.Helper()
	hcm := &hcmv3.HttpConnectionManager{}
	if err := fc.Filters[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	f := &hcmv3.HttpFilter{Name: "istio.stats", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, cfg)}}
	hcm.HttpFilters = append([]*hcmv3.HttpFilter{f}, hcm.HttpFilters...)
	fc.Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, hcm)}
	return fc
}

// seriesLabels are the label names of name's first series ("" when the
// metric is not reported).
func seriesLabels(t *testing.T, e *env, name string) string {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			var names []string
			for n := range labelMap(mf.GetMetric()[0]) {
				names = append(names, n)
			}
			slices.Sort(names)
			return strings.Join(names, ",")
		}
	}
	return ""
}

// TestMetricOverrides: an istio.stats filter reshapes the standard
// metrics (a tag from a request header, a recomputed response_code, a
// removed tag, a dropped metric), and taking it away restores them.
func TestMetricOverrides(t *testing.T) {
	e := newEnv(t)
	b := startBackend(t, "reviews-v1", nil)
	e.simple(nil, b)
	c := e.httpClient(vipAuthority())
	cfg := &statsapi.PluginConfig{Metrics: []*statsapi.MetricConfig{
		{Name: "requests_total", TagsToRemove: []string{"request_protocol"}, Dimensions: map[string]string{
			"user": "request.headers['x-user']", "response_code": "response.code >= 500 ? 'error' : 'ok'"}},
		{Name: "request_duration_milliseconds", Drop: true},
	}}
	e.mustPush(resourcev3.ListenerType, listener(withStats(t, hcmChain(t, chainKey, vip, vipPort, chainKey), cfg)))
	if code, _ := get(t, c, "/", map[string]string{"x-user": "jason"}); code != 200 {
		t.Fatalf("status %d", code)
	}
	await.True(t, "the request counted", func() bool { return counterValue(t, e, nil) == 1 })
	if v := counterValue(t, e, map[string]string{"user": "jason", "response_code": "ok", "source_workload": "productpage-v1"}); v != 1 {
		t.Errorf("istio_requests_total{user=jason,response_code=ok} = %v, want 1", v)
	}
	if l := seriesLabels(t, e, "istio_requests_total"); strings.Contains(l, "request_protocol") {
		t.Errorf("istio_requests_total labels %s: request_protocol was removed", l)
	}
	if l := seriesLabels(t, e, "istio_request_duration_milliseconds"); l != "" {
		t.Errorf("istio_request_duration_milliseconds reported (labels %s); it is dropped", l)
	}
	if l := seriesLabels(t, e, "istio_request_bytes"); !strings.Contains(l, "request_protocol") || strings.Contains(l, "user") {
		t.Errorf("istio_request_bytes labels %s: want the standard ones", l)
	}

	e.mustPush(resourcev3.ListenerType, listener(hcmChain(t, chainKey, vip, vipPort, chainKey)))
	if code, _ := get(t, c, "/", map[string]string{"x-user": "jason"}); code != 200 {
		t.Fatalf("status %d", code)
	}
	await.True(t, "the request counted without overrides", func() bool { return counterValue(t, e, map[string]string{"request_protocol": "http"}) == 1 })
	if l := seriesLabels(t, e, "istio_requests_total"); strings.Contains(l, "user") {
		t.Errorf("istio_requests_total labels %s after the overrides went", l)
	}
	if l := seriesLabels(t, e, "istio_request_duration_milliseconds"); l == "" {
		t.Error("istio_request_duration_milliseconds not reported after the overrides went")
	}
}

// TestMetricOverridesRefused: a stats configuration the waypoint cannot
// apply whole is refused and the listener keeps its previous version.
func TestMetricOverridesRefused(t *testing.T) {
	e := newEnv(t)
	b := startBackend(t, "reviews-v1", nil)
	e.simple(nil, b)
	for name, cfg := range map[string]*statsapi.PluginConfig{
		"bad expression":   {Metrics: []*statsapi.MetricConfig{{Dimensions: map[string]string{"x": "request.host +"}}}},
		"unknown metric":   {Metrics: []*statsapi.MetricConfig{{Name: "request_messages_total", Drop: true}}},
		"bad tag name":     {Metrics: []*statsapi.MetricConfig{{Dimensions: map[string]string{"a-b": "'x'"}}}},
		"unknown attr":     {Metrics: []*statsapi.MetricConfig{{Dimensions: map[string]string{"x": "request.hots"}}}},
		"match":            {Metrics: []*statsapi.MetricConfig{{Match: "true", Drop: true}}},
		"custom metric":    {Definitions: []*statsapi.MetricDefinition{{Name: "x", Value: "1"}}},
		"chains disagree ": nil,
	} {
		l := listener(withStats(t, hcmChain(t, chainKey, vip, vipPort, chainKey), cfg))
		if cfg == nil {
			drop := &statsapi.PluginConfig{Metrics: []*statsapi.MetricConfig{{Drop: true}}}
			l = listener(withStats(t, hcmChain(t, chainKey, vip, vipPort, chainKey), drop), hcmChain(t, "other", "10.96.0.99", vipPort, chainKey))
		}
		if err := e.push(resourcev3.ListenerType, l); err == nil || !strings.Contains(err.Error(), "stats") {
			t.Errorf("%s: push = %v, want refused", name, err)
		}
	}
	c := e.httpClient(vipAuthority())
	if code, _ := get(t, c, "/", nil); code != 200 {
		t.Fatalf("status %d", code)
	}
	await.True(t, "the request counted with the standard labels", func() bool { return counterValue(t, e, map[string]string{"request_protocol": "http"}) == 1 })
}
