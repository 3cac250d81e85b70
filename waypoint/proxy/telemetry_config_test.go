package proxy

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	grpcalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/weft-mesh/weft/pkg/mesh"
)

func TestAccessLogged(t *testing.T) {
	log := func(m proto.Message, filter bool) *accesslogv3.AccessLog {
		l := &accesslogv3.AccessLog{Name: "l", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: anyOf(t, m)}}
		if filter {
			l.Filter = &accesslogv3.AccessLogFilter{}
		}
		return l
	}
	for _, c := range []struct {
		name    string
		logs    []*accesslogv3.AccessLog
		want    bool
		wantErr string
	}{
		{"none: off", nil, false, ""},
		{"stdout", stdoutAccessLog(t), true, ""},
		{"file on /dev/stdout (Istio's envoy provider)", []*accesslogv3.AccessLog{log(&filev3.FileAccessLog{Path: "/dev/stdout"}, false)}, true, ""},
		{"file elsewhere", []*accesslogv3.AccessLog{log(&filev3.FileAccessLog{Path: "/var/log/access"}, false)}, false, "/dev/stdout only"},
		{"filtered", []*accesslogv3.AccessLog{log(&filev3.FileAccessLog{Path: "/dev/stdout"}, true)}, false, "filter is not supported"},
		{"gRPC access log service", []*accesslogv3.AccessLog{log(&grpcalsv3.HttpGrpcAccessLogConfig{}, false)}, false, "not supported"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := accessLogged(c.logs)
			if got != c.want || (err == nil) != (c.wantErr == "") || err != nil && !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("accessLogged = %v, %v; want %v, error containing %q", got, err, c.want, c.wantErr)
			}
		})
	}
}

// otelProvider is an OpenTelemetry tracer over HTTP to uri, or over gRPC
// to target.
func otelProvider(t testing.TB, uri, target string) *tracev3.Tracing_Http {
	cfg := &tracev3.OpenTelemetryConfig{ServiceName: "waypoint.shop"}
	if uri != "" {
		cfg.HttpService = &corev3.HttpService{HttpUri: &corev3.HttpUri{Uri: uri}}
	} else {
		cfg.GrpcService = &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_GoogleGrpc_{GoogleGrpc: &corev3.GrpcService_GoogleGrpc{TargetUri: target}}}
	}
	return &tracev3.Tracing_Http{Name: otelTracer, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: anyOf(t, cfg)}}
}

// zipkinProvider is a Zipkin tracer configured as cfg.
func zipkinProvider(t testing.TB, cfg *tracev3.ZipkinConfig) *tracev3.Tracing_Http {
	return &tracev3.Tracing_Http{Name: zipkinTracer, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: anyOf(t, cfg)}}
}

func TestParseTracing(t *testing.T) {
	if c, err := parseTracing(nil); c != nil || err != nil {
		t.Errorf("no tracing = %v, %v; want nil (the process's tracer)", c, err)
	}
	c, err := parseTracing(&hcmv3.HttpConnectionManager_Tracing{RandomSampling: &typev3.Percent{Value: 25},
		Provider: otelProvider(t, "http://otel.observability:4318/v1/traces", "")})
	if err != nil || c.fraction != 0.25 || c.exporter != (exporterKey{protocol: "http", endpoint: "http://otel.observability:4318/v1/traces", serviceName: "waypoint.shop"}) {
		t.Errorf("HTTP provider at 25%% = %+v, %v", c, err)
	}
	c, err = parseTracing(&hcmv3.HttpConnectionManager_Tracing{Provider: otelProvider(t, "", "jaeger-collector.istio-system:4317")})
	if err != nil || c.fraction != 1 || c.exporter != (exporterKey{protocol: "grpc", endpoint: "jaeger-collector.istio-system:4317", serviceName: "waypoint.shop"}) {
		t.Errorf("gRPC provider, no sampling (Envoy's 100%%) = %+v, %v", c, err)
	}
	c, err = parseTracing(&hcmv3.HttpConnectionManager_Tracing{Provider: zipkinProvider(t, &tracev3.ZipkinConfig{
		CollectorCluster: "outbound|9411||zipkin.istio-system.svc.cluster.local", CollectorEndpoint: "/api/v2/spans",
		CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON, TraceId_128Bit: true, CollectorHostname: "zipkin.istio-system.svc.cluster.local"})})
	if err != nil || c.exporter != (exporterKey{protocol: "zipkin", endpoint: "http://zipkin.istio-system.svc.cluster.local:9411/api/v2/spans"}) {
		t.Errorf("Zipkin provider = %+v, %v; want v2 JSON to the cluster's service port, the proxy's service name", c, err)
	}
	if c, err := parseTracing(&hcmv3.HttpConnectionManager_Tracing{}); err != nil || c.fraction != 1 || c.exporter != (exporterKey{}) {
		t.Errorf("no provider = %+v, %v; want spans made, not reported", c, err)
	}
	for name, bad := range map[string]*hcmv3.HttpConnectionManager_Tracing{
		"sampling above 100": {RandomSampling: &typev3.Percent{Value: 101}},
		"client sampling":    {ClientSampling: &typev3.Percent{Value: 1}},
		"not a URL":          {Provider: otelProvider(t, "otel:4318", "")},
		"envoy_grpc cluster": {Provider: &tracev3.Tracing_Http{Name: otelTracer, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: anyOf(t, &tracev3.OpenTelemetryConfig{
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "otel"}}}})}}},
		"zipkin without a collector": {Provider: zipkinProvider(t, &tracev3.ZipkinConfig{})},
		"zipkin to a cluster that is not a service port": {Provider: zipkinProvider(t, &tracev3.ZipkinConfig{CollectorCluster: "zipkin",
			CollectorEndpoint: "/api/v2/spans", CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON})},
		"zipkin protobuf": {Provider: zipkinProvider(t, &tracev3.ZipkinConfig{CollectorCluster: "outbound|9411||zipkin.istio-system.svc.cluster.local",
			CollectorEndpoint: "/api/v2/spans", CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_PROTO})},
		"datadog": {Provider: &tracev3.Tracing_Http{Name: "envoy.tracers.datadog", ConfigType: &tracev3.Tracing_Http_TypedConfig{
			TypedConfig: anyOf(t, &tracev3.DatadogConfig{CollectorCluster: "outbound|8126||datadog-agent.datadog.svc.cluster.local"})}}},
		"tag without a name": {CustomTags: []*tracingv3.CustomTag{{Type: &tracingv3.CustomTag_Literal_{Literal: &tracingv3.CustomTag_Literal{Value: "x"}}}}},
	} {
		if c, err := parseTracing(bad); err == nil {
			t.Errorf("%s: accepted as %+v", name, c)
		}
	}
}

// otlpServer receives OTLP/HTTP exports.
func otlpServer(t *testing.T) (string, <-chan *coltracepb.ExportTraceServiceRequest) {
	got := make(chan *coltracepb.ExportTraceServiceRequest, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := &coltracepb.ExportTraceServiceRequest{}
		if err := proto.Unmarshal(body, req); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		got <- req
		b, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/v1/traces", got
}

// TestChainTracing: a chain's tracing config picks the sampling of
// requests without a decision (0%: a new unsampled trace; 100%: sampled),
// keeps a caller's decision, reports to the chain's provider under its
// service name, and adds the custom tags.
func TestChainTracing(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	uri, got := otlpServer(t)
	tr, err := NewTracingFromEnv(context.Background(), "weft-waypoint.shop")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("WEFT_TEST_CLUSTER", "east")
	tags := []*tracingv3.CustomTag{
		{Tag: "team", Type: &tracingv3.CustomTag_Literal_{Literal: &tracingv3.CustomTag_Literal{Value: "checkout"}}},
		{Tag: "cluster", Type: &tracingv3.CustomTag_Environment_{Environment: &tracingv3.CustomTag_Environment{Name: "WEFT_TEST_CLUSTER"}}},
		{Tag: "user", Type: &tracingv3.CustomTag_RequestHeader{RequestHeader: &tracingv3.CustomTag_Header{Name: "x-user", DefaultValue: "anonymous"}}},
	}
	config := func(percent float64) *traceConfig {
		c, err := parseTracing(&hcmv3.HttpConnectionManager_Tracing{RandomSampling: &typev3.Percent{Value: percent},
			Provider: otelProvider(t, uri, ""), CustomTags: tags})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	send := func(tc *traceConfig, traceparent string) string {
		r := httptest.NewRequest("GET", "http://reviews:9080/reviews/0", nil)
		if traceparent != "" {
			r.Header.Set("Traceparent", traceparent)
		}
		r.Header.Set("X-User", "jason")
		_, end := tr.start(context.Background(), r, "chain", tc)
		end(200)
		return r.Header.Get("Traceparent")
	}
	const caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	none, sampled, kept := send(config(0), ""), send(config(100), ""), send(config(0), caller)
	if !strings.HasSuffix(none, "-00") || !strings.HasSuffix(sampled, "-01") || !strings.HasSuffix(kept, "-01") || kept[3:35] != caller[3:35] {
		t.Errorf("traceparent upstream: 0%% %q (want unsampled), 100%% %q (want sampled), sampled caller at 0%% %q (want its trace, sampled)", none, sampled, kept)
	}
	tracers := 0
	tr.tracers.Range(func(any, any) bool { tracers++; return true })
	if tracers != 1 {
		t.Errorf("%d tracers for one provider at three samplings, want 1: a sampling change must not make another", tracers)
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := map[string]map[string]string{} // trace id -> attributes
	for len(got) > 0 {
		for _, rs := range (<-got).GetResourceSpans() {
			attrs := map[string]string{}
			for _, kv := range rs.GetResource().GetAttributes() {
				attrs["resource."+kv.GetKey()] = kv.GetValue().GetStringValue()
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					for _, kv := range s.GetAttributes() {
						attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
					}
					spans[traceHex(s.GetTraceId())] = attrs
				}
			}
		}
	}
	if len(spans) != 2 || spans[none[3:35]] != nil {
		t.Fatalf("reported traces %v: want the 100%% one and the caller's, not the unsampled one", spans)
	}
	for _, id := range []string{sampled[3:35], kept[3:35]} {
		a := spans[id]
		if a["resource.service.name"] != "waypoint.shop" || a["team"] != "checkout" || a["cluster"] != "east" || a["user"] != "jason" {
			t.Errorf("span of trace %s: attributes %v; want service waypoint.shop, team=checkout, cluster=east, user=jason", id, a)
		}
	}
}

func traceHex(id []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(id))
	for _, b := range id {
		out = append(out, digits[b>>4], digits[b&15])
	}
	return string(out)
}

// TestChainWithoutAccessLog: a chain whose connection manager lists no
// access logger (the Telemetry API turned it off) writes no access log line.
func TestChainWithoutAccessLog(t *testing.T) {
	e := newEnv(t)
	b := startBackend(t, "reviews-v1", nil)
	e.simple(nil, b)
	fc := hcmChain(t, chainKey, vip, vipPort, chainKey)
	hcm := &hcmv3.HttpConnectionManager{}
	if err := fc.Filters[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	hcm.AccessLog = nil
	fc.Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, hcm)}
	e.mustPush(resourcev3.ListenerType, listener(fc))
	c := e.httpClient(vipAuthority())
	// On one kept-alive connection the second response comes only once the
	// first request's handler, which logs last, has returned.
	for _, id := range []string{"unlogged-1", "unlogged-2"} {
		if code, _ := get(t, c, "/reviews/0", map[string]string{"x-request-id": id}); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	if log := e.accessLog(); strings.Contains(log, "unlogged-1") {
		t.Errorf("access log of a chain without access_log: %s", log)
	}
}

// zipkinSpan is a span of Zipkin's v2 JSON API.
type zipkinSpan struct {
	TraceID       string `json:"traceId"`
	ID            string `json:"id"`
	ParentID      string `json:"parentId"`
	Kind          string `json:"kind"`
	LocalEndpoint struct {
		ServiceName string `json:"serviceName"`
	} `json:"localEndpoint"`
	Tags map[string]string `json:"tags"`
}

// zipkinServer is a Zipkin collector: it receives POST /api/v2/spans.
func zipkinServer(t *testing.T) (host string, port uint32, spans <-chan zipkinSpan) {
	got := make(chan zipkinSpan, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var batch []zipkinSpan
		if r.Method != http.MethodPost || r.URL.Path != "/api/v2/spans" || json.NewDecoder(r.Body).Decode(&batch) != nil {
			t.Errorf("Zipkin collector: %s %s is not a v2 JSON export", r.Method, r.URL.Path)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		for _, s := range batch {
			got <- s
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	p, _ := strconv.ParseUint(u.Port(), 10, 32)
	return u.Hostname(), uint32(p), got
}

// TestChainTracingZipkin: a chain with a Zipkin tracer (as control/waypoint
// renders Istio's zipkin provider) reports its span to the collector in
// the caller's B3 trace, as the child of the caller's span, under the
// proxy's service name, and propagates W3C and B3 upstream; without
// trace_id_128bit a new trace gets a 64-bit id.
func TestChainTracingZipkin(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	t.Setenv("OTEL_SERVICE_NAME", "")
	host, port, got := zipkinServer(t)
	tr, err := NewTracingFromEnv(context.Background(), "waypoint.shop")
	if err != nil {
		t.Fatal(err)
	}
	config := func(traceID128 bool) *traceConfig {
		c, err := parseTracing(&hcmv3.HttpConnectionManager_Tracing{RandomSampling: &typev3.Percent{Value: 100},
			Provider: zipkinProvider(t, &tracev3.ZipkinConfig{CollectorCluster: mesh.OutboundCluster(host, port, ""), CollectorEndpoint: "/api/v2/spans",
				CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON, TraceId_128Bit: traceID128, CollectorHostname: host})})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	const callerTrace, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	r := httptest.NewRequest("GET", "http://reviews:9080/reviews/0", nil)
	r.Header.Set("X-B3-TraceId", callerTrace)
	r.Header.Set("X-B3-SpanId", callerSpan)
	r.Header.Set("X-B3-Sampled", "1")
	_, end := tr.start(context.Background(), r, "chain", config(true))
	end(200)
	upstream := r.Header.Clone()
	root := httptest.NewRequest("GET", "http://reviews:9080/reviews/1", nil)
	_, end = tr.start(context.Background(), root, "chain", config(false))
	end(200)
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := map[string]zipkinSpan{}
	for len(got) > 0 {
		s := <-got
		spans[s.TraceID] = s
	}
	s, ok := spans[callerTrace]
	if !ok || s.ParentID != callerSpan || s.LocalEndpoint.ServiceName != "waypoint.shop" || s.Kind != "SERVER" || s.Tags["url.path"] != "/reviews/0" {
		t.Errorf("Zipkin spans %+v: want one in trace %s, child of %s, a SERVER span of waypoint.shop for /reviews/0", spans, callerTrace, callerSpan)
	}
	if upstream.Get("X-B3-TraceId") != callerTrace || upstream.Get("X-B3-SpanId") != s.ID || upstream.Get("Traceparent") != "00-"+callerTrace+"-"+s.ID+"-01" {
		t.Errorf("upstream trace headers %v: want B3 and W3C with trace %s, span %s", upstream, callerTrace, s.ID)
	}
	if len(spans) != 2 {
		t.Fatalf("Zipkin spans %+v: want the caller's trace and a new one", spans)
	}
	delete(spans, callerTrace)
	for id := range spans {
		if len(id) != 16 || !strings.HasSuffix(root.Header.Get("X-B3-TraceId"), id) {
			t.Errorf("new trace without trace_id_128bit: Zipkin trace id %q, B3 upstream %q; want the same 64-bit id", id, root.Header.Get("X-B3-TraceId"))
		}
	}
}
