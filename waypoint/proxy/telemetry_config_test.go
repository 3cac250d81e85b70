package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
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
	if c, err := parseTracing(&hcmv3.HttpConnectionManager_Tracing{}); err != nil || c.fraction != 1 || c.exporter != (exporterKey{}) {
		t.Errorf("no provider = %+v, %v; want spans made, not reported", c, err)
	}
	for name, bad := range map[string]*hcmv3.HttpConnectionManager_Tracing{
		"sampling above 100": {RandomSampling: &typev3.Percent{Value: 101}},
		"client sampling":    {ClientSampling: &typev3.Percent{Value: 1}},
		"not a URL":          {Provider: otelProvider(t, "otel:4318", "")},
		"envoy_grpc cluster": {Provider: &tracev3.Tracing_Http{Name: otelTracer, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: anyOf(t, &tracev3.OpenTelemetryConfig{
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "otel"}}}})}}},
		"zipkin":             {Provider: &tracev3.Tracing_Http{Name: "envoy.tracers.zipkin", ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: anyOf(t, &tracev3.ZipkinConfig{})}}},
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
