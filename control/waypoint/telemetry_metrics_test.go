package waypoint

import (
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/types/known/wrapperspb"
	meshapi "istio.io/api/mesh/v1alpha1"
	telemetryapi "istio.io/api/telemetry/v1alpha1"
)

// TestMergeMetrics: levels merge as istiod's mergeMetrics does for its
// Prometheus provider, for the proxy's mode.
func TestMergeMetrics(t *testing.T) {
	tr := &translator{cfg: Config{ExtensionProviders: []*meshapi.MeshConfig_ExtensionProvider{
		{Name: "prom", Provider: &meshapi.MeshConfig_ExtensionProvider_Prometheus{
			Prometheus: &meshapi.MeshConfig_ExtensionProvider_PrometheusMetricsProvider{}}},
		{Name: "sd", Provider: &meshapi.MeshConfig_ExtensionProvider_Stackdriver{
			Stackdriver: &meshapi.MeshConfig_ExtensionProvider_StackdriverProvider{}}},
	}}}
	sel := func(m telemetryapi.MetricSelector_IstioMetric, mode telemetryapi.WorkloadMode) *telemetryapi.MetricSelector {
		return &telemetryapi.MetricSelector{MetricMatch: &telemetryapi.MetricSelector_Metric{Metric: m}, Mode: mode}
	}
	off := func(s *telemetryapi.MetricSelector, v bool) *telemetryapi.Metrics {
		return &telemetryapi.Metrics{Overrides: []*telemetryapi.MetricsOverrides{{Match: s, Disabled: wrapperspb.Bool(v)}}}
	}
	providers := func(names ...string) *telemetryapi.Metrics {
		m := &telemetryapi.Metrics{}
		for _, n := range names {
			m.Providers = append(m.Providers, &telemetryapi.ProviderRef{Name: n})
		}
		return m
	}
	all, both := telemetryapi.MetricSelector_ALL_METRICS, telemetryapi.WorkloadMode_CLIENT_AND_SERVER
	server, client := telemetryapi.WorkloadMode_SERVER, telemetryapi.WorkloadMode_CLIENT
	for _, tc := range []struct {
		name   string
		levels [][]*telemetryapi.Metrics
		mode   telemetryapi.WorkloadMode
		want   string // the stats config in text form; "" for none
	}{
		{"nothing", nil, server, ""},
		{"all off", [][]*telemetryapi.Metrics{{off(nil, true)}}, server, `metrics:{drop:true} reporter:SERVER_GATEWAY`},
		{"all off, then on in the namespace", [][]*telemetryapi.Metrics{{off(nil, true)}, {off(sel(all, both), false)}}, server, ""},
		{"all off for clients only, a waypoint", [][]*telemetryapi.Metrics{{off(sel(all, client), true)}}, server, ""},
		{"all off for clients only, a gateway", [][]*telemetryapi.Metrics{{off(sel(all, client), true)}}, client, `metrics:{drop:true}`},
		{"one off, then on at the workload", [][]*telemetryapi.Metrics{
			{off(sel(telemetryapi.MetricSelector_REQUEST_COUNT, both), true)}, {}, {off(sel(telemetryapi.MetricSelector_REQUEST_COUNT, server), false)}}, server, ""},
		{"one off", [][]*telemetryapi.Metrics{{off(sel(telemetryapi.MetricSelector_TCP_SENT_BYTES, both), true)}}, client,
			`metrics:{name:"tcp_sent_bytes_total" drop:true}`},
		{"a namespace names only a provider that is not Prometheus", [][]*telemetryapi.Metrics{{}, {providers("sd")}}, server, `metrics:{drop:true} reporter:SERVER_GATEWAY`},
		{"and the workload names Prometheus again", [][]*telemetryapi.Metrics{{}, {providers("sd")}, {providers("prom")}}, server, ""},
	} {
		overrides, dropAll := tr.mergeMetrics(tc.levels, tc.mode)
		got := ""
		if cfg := statsConfig(overrides, dropAll, tc.mode == server); cfg != nil {
			got = prototext.MarshalOptions{}.Format(cfg)
		}
		if normalize(got) != normalize(tc.want) {
			t.Errorf("%s: stats config %q, want %q", tc.name, got, tc.want)
		}
	}
}

// normalize drops prototext's randomized spacing.
func normalize(s string) string {
	var out []rune
	for _, r := range s {
		if r != ' ' && r != '\n' {
			out = append(out, r)
		}
	}
	return string(out)
}
