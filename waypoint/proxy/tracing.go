package proxy

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"

	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	//lint:ignore SA1019 OpenTelemetry's Zipkin exporter is deprecated (removal planned for early 2027) but still released with the SDK; Istio's zipkin provider needs v2 JSON
	"go.opentelemetry.io/otel/exporters/zipkin"
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
	tracer      trace.Tracer // the process's, for chains without tracing config
	prop        propagation.TextMapPropagator
	serviceName string
	// Log reports a tracer that cannot export (nil: slog.Default()).
	Log *slog.Logger

	// tracers are the chains' (traceConfig.exporter), made on first use
	// and kept: a mesh names few providers. A chain's sampling is not
	// part of the key (chainSampler), so changing it makes no tracer.
	tracers   sync.Map // exporterKey -> trace.Tracer
	mu        sync.Mutex
	providers []*sdktrace.TracerProvider // all made, for Shutdown
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

const tracerName = "github.com/weft-mesh/weft/waypoint/proxy"

func newTracing(serviceName string, opts ...sdktrace.TracerProviderOption) *Tracing {
	tp := sdktrace.NewTracerProvider(append(opts, sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(serviceName))))...)
	return &Tracing{
		tracer:      tp.Tracer(tracerName),
		prop:        propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, b3.New(b3.WithInjectEncoding(b3.B3MultipleHeader))),
		serviceName: serviceName,
		providers:   []*sdktrace.TracerProvider{tp},
	}
}

// Shutdown flushes pending spans.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for _, tp := range t.providers {
		errs = append(errs, tp.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// tracerFor is the tracer of the chains that export to k. Its sampler is
// chainSampler: requests without a sampling decision are sampled with the
// fraction of their chain's config, the others keep theirs (Envoy's
// random_sampling).
func (t *Tracing) tracerFor(k exporterKey) trace.Tracer {
	if tr, ok := t.tracers.Load(k); ok {
		return tr.(trace.Tracer)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr, ok := t.tracers.Load(k); ok {
		return tr.(trace.Tracer)
	}
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithSampler(sdktrace.ParentBased(chainSampler{})),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(cmp.Or(k.serviceName, t.serviceName)))),
	}
	if k.traceID64 {
		opts = append(opts, sdktrace.WithIDGenerator(ids64{}))
	}
	if exp, err := newExporter(k); err != nil {
		cmp.Or(t.Log, slog.Default()).Warn("tracing: spans of this provider are not reported", "protocol", k.protocol, "endpoint", k.endpoint, "err", err)
	} else if exp != nil {
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	t.providers = append(t.providers, tp)
	tr := tp.Tracer(tracerName)
	t.tracers.Store(k, tr)
	return tr
}

// newExporter is k's OTLP or Zipkin exporter (nil: spans are not
// reported). It connects lazily.
func newExporter(k exporterKey) (sdktrace.SpanExporter, error) {
	ctx := context.Background()
	switch k.protocol {
	case "grpc":
		return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(k.endpoint), otlptracegrpc.WithInsecure())
	case "http":
		return otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(k.endpoint))
	case "zipkin":
		return zipkin.New(k.endpoint)
	}
	return nil, nil
}

// start opens the server span of r and writes its context into r's
// headers (which the pipeline forwards upstream). end records the status.
func (t *Tracing) start(ctx context.Context, r *http.Request, chain string, tc *traceConfig) (context.Context, func(code int)) {
	if t == nil {
		return ctx, func(int) {}
	}
	tracer := t.tracer
	ctx = t.prop.Extract(ctx, propagation.HeaderCarrier(r.Header))
	if tc != nil {
		tracer = t.tracerFor(tc.exporter)
		ctx = context.WithValue(ctx, samplingFraction{}, tc.fraction)
	}
	ctx, span := tracer.Start(ctx, r.Host+r.URL.Path, trace.WithSpanKind(trace.SpanKindServer),
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
	if tc != nil && span.IsRecording() {
		span.SetAttributes(tc.attributes(r.Header)...)
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

// samplingFraction is the context key of the fraction chainSampler
// samples with.
type samplingFraction struct{}

// chainSampler samples a root span with the fraction its context carries
// (the chain's random_sampling), by trace id as TraceIDRatioBased does,
// so every proxy on the way decides the same.
type chainSampler struct{}

func (chainSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	fraction, _ := p.ParentContext.Value(samplingFraction{}).(float64)
	decision := sdktrace.Drop
	if bound := uint64(fraction * (1 << 63)); fraction >= 1 || binary.BigEndian.Uint64(p.TraceID[8:16])>>1 < bound {
		decision = sdktrace.RecordAndSample
	}
	return sdktrace.SamplingResult{Decision: decision, Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState()}
}

func (chainSampler) Description() string { return "ChainRandomSampling" }

// ids64 makes 64-bit trace ids (the upper 8 bytes zero), as Envoy's
// Zipkin tracer does without trace_id_128bit; span ids are random.
type ids64 struct{}

func (ids64) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	var tid trace.TraceID
	binary.BigEndian.PutUint64(tid[8:], nonZero())
	return tid, ids64{}.NewSpanID(ctx, tid)
}

func (ids64) NewSpanID(context.Context, trace.TraceID) trace.SpanID {
	var sid trace.SpanID
	binary.BigEndian.PutUint64(sid[:], nonZero())
	return sid
}

// nonZero is a random uint64 other than 0 (an invalid id).
func nonZero() uint64 {
	for {
		if v := rand.Uint64(); v != 0 {
			return v
		}
	}
}
