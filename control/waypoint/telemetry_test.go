package waypoint

import (
	"slices"
	"strings"
	"testing"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	telemetryapi "istio.io/api/telemetry/v1alpha1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/control/workload"
	"github.com/weft-mesh/weft/control/xds"
)

// chainTelemetry is what a snapshot's chains say about telemetry: per
// chain name, whether it logs and its tracing (HTTP chains).
type chainTelemetry struct {
	logged  bool
	tracing *hcmv3.HttpConnectionManager_Tracing
}

func telemetryOf(t *testing.T, res *xds.Resources) map[string]chainTelemetry {
	t.Helper()
	out := map[string]chainTelemetry{}
	for fc, f := range networkFilters(res) {
		switch f.Name {
		case wellknown.HTTPConnectionManager:
			hcm := &hcmv3.HttpConnectionManager{}
			if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
				t.Fatal(err)
			}
			out[fc.Name] = chainTelemetry{logged: len(hcm.AccessLog) > 0, tracing: hcm.Tracing}
		case wellknown.TCPProxy:
			tp := &tcpproxyv3.TcpProxy{}
			if err := f.GetTypedConfig().UnmarshalTo(tp); err != nil {
				t.Fatal(err)
			}
			out[fc.Name] = chainTelemetry{logged: len(tp.AccessLog) > 0}
		}
	}
	if len(out) == 0 {
		t.Fatal("no chain in the snapshot")
	}
	return out
}

// otelConfig is the OpenTelemetry config of a tracing provider.
func otelConfig(t *testing.T, tr *hcmv3.HttpConnectionManager_Tracing) *tracev3.OpenTelemetryConfig {
	t.Helper()
	if tr.GetProvider() == nil {
		return nil
	}
	cfg := &tracev3.OpenTelemetryConfig{}
	if err := tr.GetProvider().GetTypedConfig().UnmarshalTo(cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestNoTelemetryKeepsTheDefaults: without Telemetries every chain of
// every waypoint and gateway logs, and none carries tracing (the proxy's
// own, from its environment).
func TestNoTelemetryKeepsTheDefaults(t *testing.T) {
	for _, dir := range []string{"testdata/tcp", "testdata/ingress-bookinfo"} {
		out := Translate(caseConfig(t, dir), loadCase(t, dir).in)
		all := map[string]*xds.Resources{}
		for k, r := range out.Waypoints {
			all["waypoint "+k] = r
		}
		for k, r := range out.GatewayProxies {
			all["gateway "+k] = r
		}
		for proxy, res := range all {
			for chain, c := range telemetryOf(t, res) {
				if !c.logged || c.tracing != nil {
					t.Errorf("%s, %s chain %s: logged %v, tracing %v; want logged, no tracing", dir, proxy, chain, c.logged, c.tracing)
				}
			}
		}
	}
}

// TestTelemetryLevels: testdata/telemetry's Telemetries merged per proxy,
// least specific first (root, namespace, then selector or targetRefs).
func TestTelemetryLevels(t *testing.T) {
	dir := "testdata/telemetry"
	out := Translate(caseConfig(t, dir), loadCase(t, dir).in)

	for chain, c := range telemetryOf(t, out.Waypoints["default/waypoint"]) {
		cfg := otelConfig(t, c.tracing)
		switch {
		case c.logged:
			t.Errorf("waypoint chain %s logs; default's Telemetry turned the access log off", chain)
		case strings.Contains(chain, "|") || chain == "passthrough":
			// TCP and workload chains: access log only
		case c.tracing.GetRandomSampling().GetValue() != 100 ||
			cfg.GetHttpService().GetHttpUri().GetUri() != "http://otel.observability.svc.cluster.local:4318/v1/traces" ||
			cfg.GetServiceName() != "waypoint.default" || tagNames(c.tracing) != "cluster,user":
			t.Errorf("waypoint chain %s tracing %v: want 100%% to otel-http as waypoint.default, tags cluster (mesh) and user (waypoint)", chain, c.tracing)
		}
	}
	for chain, c := range telemetryOf(t, out.GatewayProxies["weft-ingress/weft-ingress"]) {
		if !c.logged || c.tracing.GetRandomSampling().GetValue() != 10 || c.tracing.GetProvider() != nil || tagNames(c.tracing) != "cluster" {
			t.Errorf("gateway chain %s: logged %v, tracing %v; want logged, 10%% (mesh), no provider (reporting off), tag cluster", chain, c.logged, c.tracing)
		}
	}
	var problems []string
	for _, p := range out.Problems {
		if p.Kind == kindTelemetry {
			problems = append(problems, p.Name+": "+p.Message)
		}
	}
	for _, want := range []string{"logs-on-but-newer: applies to no", "selects-nothing: applies to no", "service-target: spec.targetRefs[0]: core/Service",
		"ingress: spec.accessLogging[0].filter", `zipkin: spec.tracing[0].providers[0]: provider "zipkin"'s maxTagLength: not supported`} {
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.HasPrefix(p, want) }) {
			t.Errorf("no problem %q in %q", want, problems)
		}
	}
	if len(problems) != 5 {
		t.Errorf("%d Telemetry problems, want 5: %q", len(problems), problems)
	}
}

func tagNames(tr *hcmv3.HttpConnectionManager_Tracing) string {
	var names []string
	for _, ct := range tr.GetCustomTags() {
		names = append(names, ct.Tag)
	}
	return strings.Join(names, ",")
}

// TestTelemetryTracingWithoutProvider: tracing without a provider sends
// spans to the mesh's tracing endpoint (the chart's
// waypoint.tracing.otlpEndpoint), at Istio's 1% unless set; with no
// endpoint, nowhere.
func TestTelemetryTracingWithoutProvider(t *testing.T) {
	dir := "testdata/bookinfo-default"
	in := loadCase(t, dir).in
	in.Telemetries = []*telemetryv1.Telemetry{{
		ObjectMeta: metav1.ObjectMeta{Name: "mesh-default", Namespace: "weft-system"},
		Spec:       telemetryapi.Telemetry{Tracing: []*telemetryapi.Tracing{{}}},
	}}
	for _, c := range []struct{ endpoint, wantURI string }{{"http://otel.observability:4318/", "http://otel.observability:4318/v1/traces"}, {"", ""}} {
		out := Translate(Config{TracingEndpoint: c.endpoint}, in)
		for chain, ct := range telemetryOf(t, out.Waypoints["default/waypoint"]) {
			if ct.tracing == nil {
				continue // TCP chains
			}
			if got := otelConfig(t, ct.tracing).GetHttpService().GetHttpUri().GetUri(); got != c.wantURI || ct.tracing.GetRandomSampling().GetValue() != defaultSamplingPercentage {
				t.Errorf("endpoint %q, chain %s: tracing %v; want %q at %v%%", c.endpoint, chain, ct.tracing, c.wantURI, defaultSamplingPercentage)
			}
		}
	}
	in.Telemetries[0].Spec.Tracing[0].RandomSamplingPercentage = wrapperspb.Double(250)
	out := Translate(Config{}, in)
	if !slices.ContainsFunc(out.Problems, func(p workload.Problem) bool { return strings.Contains(p.Message, "randomSamplingPercentage 250") }) {
		t.Errorf("a sampling percentage of 250 was not reported: %v", out.Problems)
	}
}

// TestTelemetryZipkinProvider: a zipkin provider is rendered as Istio
// renders it (envoy.tracers.zipkin posting v2 JSON to the outbound cluster
// of its service port), with its path and trace id width; no service name
// is set (the proxy's own, as Envoy's local service cluster).
func TestTelemetryZipkinProvider(t *testing.T) {
	dir := "testdata/bookinfo-default"
	in := loadCase(t, dir).in
	in.Telemetries = []*telemetryv1.Telemetry{{
		ObjectMeta: metav1.ObjectMeta{Name: "mesh-default", Namespace: "weft-system"},
		Spec:       telemetryapi.Telemetry{Tracing: []*telemetryapi.Tracing{{Providers: []*telemetryapi.ProviderRef{{Name: "zipkin"}}}}},
	}}
	for _, c := range []struct {
		provider string
		want     *tracev3.ZipkinConfig
	}{
		{`{"service": "zipkin.istio-system.svc.cluster.local", "port": 9411}`, &tracev3.ZipkinConfig{
			CollectorCluster: "outbound|9411||zipkin.istio-system.svc.cluster.local", CollectorEndpoint: "/api/v2/spans",
			CollectorHostname: "zipkin.istio-system.svc.cluster.local", TraceId_128Bit: true}},
		{`{"service": "tracing/zipkin.tracing.svc.cluster.local", "port": 9000, "path": "/zipkin/api/v2/spans", "enable64bitTraceId": true,
		   "traceContextOption": "USE_B3_WITH_W3C_PROPAGATION"}`, &tracev3.ZipkinConfig{
			CollectorCluster: "outbound|9000||zipkin.tracing.svc.cluster.local", CollectorEndpoint: "/zipkin/api/v2/spans",
			CollectorHostname: "zipkin.tracing.svc.cluster.local", TraceContextOption: tracev3.ZipkinConfig_USE_B3_WITH_W3C_PROPAGATION}},
	} {
		providers, err := ParseExtensionProviders([]byte(`[{"name": "zipkin", "zipkin": ` + c.provider + `}]`))
		if err != nil {
			t.Fatal(err)
		}
		c.want.CollectorEndpointVersion, c.want.SharedSpanContext = tracev3.ZipkinConfig_HTTP_JSON, wrapperspb.Bool(false)
		out := Translate(Config{ExtensionProviders: providers}, in)
		if len(out.Problems) > 0 {
			t.Errorf("provider %s: problems %v", c.provider, out.Problems)
		}
		traced := 0
		for chain, ct := range telemetryOf(t, out.Waypoints["default/waypoint"]) {
			if ct.tracing == nil {
				continue // TCP chains
			}
			traced++
			got := &tracev3.ZipkinConfig{}
			if p := ct.tracing.GetProvider(); p.GetName() != zipkinTracer || p.GetTypedConfig().UnmarshalTo(got) != nil || !proto.Equal(got, c.want) {
				t.Errorf("provider %s, chain %s: tracing provider %v, want %s %v", c.provider, chain, p, zipkinTracer, c.want)
			}
		}
		if traced == 0 {
			t.Errorf("provider %s: no traced chain", c.provider)
		}
	}
}
