package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	"go.opentelemetry.io/otel/attribute"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// A chain's telemetry settings come from its Envoy config, as Envoy's do:
// access_log on the HTTP connection manager or tcp_proxy (the chain writes
// the access log only when it lists a logger), and the connection
// manager's tracing (sampling, provider, custom tags). control/waypoint
// sets them from the Telemetry API.

// Access loggers the waypoint runs: its JSON access log on stdout.
const (
	stdoutAccessLogger = "envoy.access_loggers.stdout"
	fileAccessLogger   = "envoy.access_loggers.file"
	otelTracer         = "envoy.tracers.opentelemetry"
	zipkinTracer       = "envoy.tracers.zipkin"
)

// accessLogged reports whether the access_log list asks for the access log:
// a stdout logger, or a file logger on /dev/stdout (what Istio's "envoy"
// provider renders). Any other logger is an error, not ignored: the
// configuration would lose logs it asked for.
func accessLogged(logs []*accesslogv3.AccessLog) (bool, error) {
	for i, l := range logs {
		if l.GetFilter() != nil {
			return false, fmt.Errorf("access_log[%d] (%s): filter is not supported", i, l.GetName())
		}
		msg, err := l.GetTypedConfig().UnmarshalNew()
		if err != nil {
			return false, fmt.Errorf("access_log[%d] (%s): %w", i, l.GetName(), err)
		}
		switch c := msg.(type) {
		case *streamv3.StdoutAccessLog:
		case *filev3.FileAccessLog:
			if c.GetPath() != "/dev/stdout" {
				return false, fmt.Errorf("access_log[%d] (%s): path %q: the waypoint logs to /dev/stdout only", i, l.GetName(), c.GetPath())
			}
		default:
			return false, fmt.Errorf("access_log[%d] (%s): logger %T is not supported (want %s, or %s to /dev/stdout)",
				i, l.GetName(), msg, stdoutAccessLogger, fileAccessLogger)
		}
	}
	return len(logs) > 0, nil
}

// traceConfig is a chain's tracing, from the connection manager's
// tracing field. A chain without one uses the process's tracer (set up
// from the environment, NewTracingFromEnv).
type traceConfig struct {
	// fraction of the requests without a sampling decision that are
	// sampled; requests that carry a decision keep it.
	fraction float64
	exporter exporterKey
	tags     []customTag
}

// exporterKey names one tracer: spans are exported to endpoint over
// protocol ("": not reported, as Envoy without a provider) as
// serviceName's.
type exporterKey struct {
	protocol    string // "grpc", "http" (OTLP) or "zipkin"; "" with an empty endpoint
	endpoint    string // gRPC target host:port, or the OTLP/HTTP or Zipkin URL
	serviceName string
	// traceID64: new traces get 64-bit ids (the upper half zero), as
	// Envoy's Zipkin tracer without trace_id_128bit.
	traceID64 bool
}

// customTag is a span attribute: a literal, an environment variable read
// when the configuration arrives, or a request header.
type customTag struct {
	key, header, fallback string
	literal               *attribute.KeyValue
}

// parseTracing reads the connection manager's tracing: random_sampling
// (Envoy's default 100%), custom_tags and an OpenTelemetry provider over
// gRPC (google_grpc target_uri) or HTTP (http_uri) or a Zipkin provider.
// No provider: spans are made and propagated but not reported.
func parseTracing(t *hcmv3.HttpConnectionManager_Tracing) (*traceConfig, error) {
	if t == nil {
		return nil, nil
	}
	if t.GetClientSampling() != nil || t.GetOverallSampling() != nil {
		return nil, errors.New("tracing: client_sampling and overall_sampling are not supported")
	}
	c := &traceConfig{fraction: 1}
	if s := t.GetRandomSampling(); s != nil {
		if v := s.GetValue(); v < 0 || v > 100 {
			return nil, fmt.Errorf("tracing.random_sampling %v: want 0-100", v)
		}
		c.fraction = s.GetValue() / 100
	}
	if p := t.GetProvider(); p != nil {
		if err := parseTraceProvider(p, &c.exporter); err != nil {
			return nil, fmt.Errorf("tracing.provider %q: %w", p.GetName(), err)
		}
	}
	for i, ct := range t.GetCustomTags() {
		tag, err := parseCustomTag(ct)
		if err != nil {
			return nil, fmt.Errorf("tracing.custom_tags[%d] (%s): %w", i, ct.GetTag(), err)
		}
		c.tags = append(c.tags, tag)
	}
	return c, nil
}

func parseTraceProvider(p *tracev3.Tracing_Http, k *exporterKey) error {
	msg, err := p.GetTypedConfig().UnmarshalNew()
	if err != nil {
		return err
	}
	switch c := msg.(type) {
	case *tracev3.OpenTelemetryConfig:
		return parseOTelProvider(c, k)
	case *tracev3.ZipkinConfig:
		return parseZipkinProvider(c, k)
	}
	return fmt.Errorf("tracer %T is not supported (want %s or %s)", msg, otelTracer, zipkinTracer)
}

func parseOTelProvider(otel *tracev3.OpenTelemetryConfig, k *exporterKey) error {
	k.serviceName = otel.GetServiceName()
	switch {
	case otel.GetGrpcService() != nil:
		target := otel.GetGrpcService().GetGoogleGrpc().GetTargetUri()
		if target == "" {
			return errors.New("grpc_service: want google_grpc.target_uri (host:port)")
		}
		k.protocol, k.endpoint = "grpc", target
	case otel.GetHttpService() != nil:
		u, err := url.Parse(otel.GetHttpService().GetHttpUri().GetUri())
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("http_service.http_uri.uri %q: want an http(s) URL", otel.GetHttpService().GetHttpUri().GetUri())
		}
		k.protocol, k.endpoint = "http", u.String()
	}
	return nil
}

// parseZipkinProvider reads a Zipkin tracer as Istio renders it: v2 JSON
// posted to collector_endpoint on the service port that collector_cluster
// (an outbound cluster) names, reached by its host name (the waypoint has
// no cluster of that name). Its spans carry the proxy's own service name,
// as Envoy's (its local service cluster). Whatever trace_context_option
// says, the waypoint propagates both W3C and B3 headers.
func parseZipkinProvider(z *tracev3.ZipkinConfig, k *exporterKey) error {
	switch {
	case z.GetCollectorService() != nil:
		return errors.New("zipkin: collector_service is not supported (want collector_cluster and collector_endpoint)")
	case z.GetCollectorEndpointVersion() != tracev3.ZipkinConfig_HTTP_JSON:
		return fmt.Errorf("zipkin: collector_endpoint_version %s is not supported (want HTTP_JSON)", z.GetCollectorEndpointVersion())
	//lint:ignore SA1019 a deprecated field is rejected, not ignored
	case z.GetSharedSpanContext().GetValue() || z.GetSplitSpansForRequest() || z.GetTimestampTraceIds():
		return errors.New("zipkin: shared_span_context, split_spans_for_request and timestamp_trace_ids are not supported")
	}
	host, port, _, ok := mesh.ParseOutboundCluster(z.GetCollectorCluster())
	if !ok || host == "" || port == 0 {
		return fmt.Errorf("zipkin: collector_cluster %q: want an outbound cluster (outbound|<port>|<subset>|<host>)", z.GetCollectorCluster())
	}
	endpoint := z.GetCollectorEndpoint()
	if !strings.HasPrefix(endpoint, "/") {
		return fmt.Errorf("zipkin: collector_endpoint %q: want a path", endpoint)
	}
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.FormatUint(uint64(port), 10)), Path: endpoint}
	k.protocol, k.endpoint, k.traceID64 = "zipkin", u.String(), !z.GetTraceId_128Bit()
	return nil
}

func parseCustomTag(ct *tracingv3.CustomTag) (customTag, error) {
	tag := customTag{key: ct.GetTag()}
	if tag.key == "" {
		return tag, errors.New("no tag name")
	}
	switch v := ct.GetType().(type) {
	case *tracingv3.CustomTag_Literal_:
		kv := attribute.String(tag.key, v.Literal.GetValue())
		tag.literal = &kv
	case *tracingv3.CustomTag_Environment_:
		val, ok := os.LookupEnv(v.Environment.GetName())
		if !ok {
			val = v.Environment.GetDefaultValue()
		}
		kv := attribute.String(tag.key, val)
		tag.literal = &kv
	case *tracingv3.CustomTag_RequestHeader:
		if v.RequestHeader.GetName() == "" {
			return tag, errors.New("request_header without a name")
		}
		tag.header, tag.fallback = v.RequestHeader.GetName(), v.RequestHeader.GetDefaultValue()
	default:
		return tag, fmt.Errorf("tag type %T is not supported (literal, environment, request_header)", v)
	}
	return tag, nil
}

// attributes are the custom tags' values for a request with header h; a
// header tag without the header and without a default is left out.
func (c *traceConfig) attributes(h http.Header) []attribute.KeyValue {
	out := make([]attribute.KeyValue, 0, len(c.tags))
	for _, tag := range c.tags {
		switch {
		case tag.literal != nil:
			out = append(out, *tag.literal)
		case h.Get(tag.header) != "":
			out = append(out, attribute.String(tag.key, h.Get(tag.header)))
		case tag.fallback != "":
			out = append(out, attribute.String(tag.key, tag.fallback))
		}
	}
	return out
}
