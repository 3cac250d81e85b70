package proxy

import (
	"context"
	"fmt"
	"net/http"
	"os"

	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// Tracing emits one server span per request, continuing the incoming W3C
// (traceparent) or B3 (x-b3-*, b3) context and injecting the span into the
// request sent upstream. Without a Tracing (tests) the waypoint forwards
// those headers unchanged.
type Tracing struct {
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
	shutdown func(context.Context) error
}

// NewTracingFromEnv sends spans over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT
// (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; the exporter reads the standard
// OTEL_EXPORTER_OTLP_* variables, the sampler OTEL_TRACES_SAMPLER).
// OTEL_SERVICE_NAME, when set, wins over serviceName, as the OpenTelemetry
// specification has it (the resource given to the SDK would otherwise
// override it).
//
// Without an endpoint no span is recorded, but every request still gets a
// trace context, as from Istio's proxies: a new span id in the caller's
// trace with the caller's sampling decision, or a new unsampled trace.
// Applications that propagate the headers then produce whole traces
// wherever traces are collected.
func NewTracingFromEnv(ctx context.Context, serviceName string) (*Tracing, error) {
	if s := os.Getenv("OTEL_SERVICE_NAME"); s != "" {
		serviceName = s
	}
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return newTracing(serviceName, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample()))), nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter (OTEL_EXPORTER_OTLP_ENDPOINT): %w", err)
	}
	return NewTracing(sdktrace.NewBatchSpanProcessor(exp), serviceName), nil
}

// NewTracing emits spans through sp.
func NewTracing(sp sdktrace.SpanProcessor, serviceName string) *Tracing {
	return newTracing(serviceName, sdktrace.WithSpanProcessor(sp))
}

func newTracing(serviceName string, opts ...sdktrace.TracerProviderOption) *Tracing {
	tp := sdktrace.NewTracerProvider(append(opts, sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(serviceName))))...)
	return &Tracing{
		tracer:   tp.Tracer("github.com/weft-mesh/weft/waypoint/proxy"),
		prop:     propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, b3.New(b3.WithInjectEncoding(b3.B3MultipleHeader))),
		shutdown: tp.Shutdown,
	}
}

// Shutdown flushes pending spans.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.shutdown(ctx)
}

// start opens the server span of r and writes its context into r's
// headers (which the pipeline forwards upstream). end records the status.
func (t *Tracing) start(ctx context.Context, r *http.Request, chain string) (context.Context, func(code int)) {
	if t == nil {
		return ctx, func(int) {}
	}
	ctx = t.prop.Extract(ctx, propagation.HeaderCarrier(r.Header))
	ctx, span := t.tracer.Start(ctx, r.Host+r.URL.Path, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("url.path", r.URL.Path),
			attribute.String("server.address", r.Host),
			attribute.String("weft.filter_chain", chain),
			attribute.String("component", "weft-waypoint"),
		))
	if id := r.Header.Get("X-Request-Id"); id != "" {
		span.SetAttributes(attribute.String("guid:x-request-id", id)) // Envoy's tag name
	}
	// Replace whatever context came in with the span's, in every format.
	for _, h := range []string{"Traceparent", "Tracestate", "B3", "X-B3-Traceid", "X-B3-Spanid", "X-B3-Parentspanid", "X-B3-Sampled", "X-B3-Flags"} {
		r.Header.Del(h)
	}
	t.prop.Inject(ctx, propagation.HeaderCarrier(r.Header))
	return ctx, func(code int) {
		span.SetAttributes(attribute.Int("http.response.status_code", code))
		if code >= 500 {
			span.SetStatus(codes.Error, http.StatusText(code))
		}
		span.End()
	}
}

// traceIDOf returns the trace id of the request for the access log.
func traceIDOf(ctx context.Context, h http.Header) string {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return sc.TraceID().String()
	}
	if tp := h.Get("Traceparent"); len(tp) >= 35 {
		return tp[3:35]
	}
	return h.Get("X-B3-Traceid")
}
