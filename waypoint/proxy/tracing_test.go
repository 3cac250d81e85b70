package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// TestTracingFromEnvServiceName: spans go over OTLP/HTTP to
// OTEL_EXPORTER_OTLP_ENDPOINT, and OTEL_SERVICE_NAME names the service
// (the control plane sets it to <gateway>.<namespace>); without it the
// caller's default does.
func TestTracingFromEnvServiceName(t *testing.T) {
	for _, c := range []struct{ env, want string }{{"wp.shop", "wp.shop"}, {"", "weft-waypoint.shop"}} {
		t.Run("OTEL_SERVICE_NAME="+c.env, func(t *testing.T) {
			got := make(chan *coltracepb.ExportTraceServiceRequest, 10)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				req := &coltracepb.ExportTraceServiceRequest{}
				if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, req) != nil {
					t.Errorf("%s %s: not an OTLP/HTTP protobuf export", r.Method, r.URL.Path)
					w.WriteHeader(http.StatusBadRequest)
					return
				}
				got <- req
				w.Header().Set("Content-Type", "application/x-protobuf")
				b, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
				w.Write(b)
			}))
			defer srv.Close()
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
			t.Setenv("OTEL_SERVICE_NAME", c.env)
			tr, err := NewTracingFromEnv(context.Background(), "weft-waypoint.shop")
			if err != nil || tr == nil {
				t.Fatalf("NewTracingFromEnv = %v, %v", tr, err)
			}
			_, end := tr.start(context.Background(), httptest.NewRequest("GET", "http://reviews:9080/reviews/0", nil), "chain", nil)
			end(200)
			if err := tr.Shutdown(context.Background()); err != nil { // flushes the batch
				t.Fatal(err)
			}
			select {
			case req := <-got:
				rs := req.GetResourceSpans()
				if len(rs) != 1 {
					t.Fatalf("%d resource spans", len(rs))
				}
				name := ""
				for _, kv := range rs[0].GetResource().GetAttributes() {
					if kv.GetKey() == "service.name" {
						name = kv.GetValue().GetStringValue()
					}
				}
				if name != c.want {
					t.Errorf("service.name %q, want %q", name, c.want)
				}
			default:
				t.Fatal("no export received")
			}
		})
	}
}

// TestTraceContextWithoutBackend: with no tracing endpoint the waypoint
// records nothing but still gives every request an x-request-id and a
// trace context upstream, as Istio's proxies do: a new unsampled trace,
// or a new span in the caller's trace with the caller's sampling kept.
func TestTraceContextWithoutBackend(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	tr, err := NewTracingFromEnv(context.Background(), "weft-waypoint.test")
	if err != nil || tr == nil {
		t.Fatalf("NewTracingFromEnv = %v, %v; want a propagating tracer", tr, err)
	}
	e := newEnv(t, func(o *Options) { o.Tracing = tr })
	b := startBackend(t, "a", nil)
	e.simple(nil, b)
	c := e.httpClient(vipAuthority())
	traceparent := regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$`)

	if code, _ := get(t, c, "/fresh", nil); code != 200 {
		t.Fatalf("status %d", code)
	}
	m := traceparent.FindStringSubmatch(b.seenHeader("Traceparent"))
	if m == nil || m[3] != "00" {
		t.Fatalf("upstream traceparent %q, want a new unsampled context", b.seenHeader("Traceparent"))
	}
	if got := b.seenHeader("X-B3-Traceid"); got != m[1] {
		t.Errorf("upstream x-b3-traceid %q, want the traceparent's trace %s", got, m[1])
	}
	if !regexp.MustCompile(`^[0-9a-f-]{36}$`).MatchString(b.seenHeader("X-Request-Id")) {
		t.Errorf("upstream x-request-id %q, want a generated UUID", b.seenHeader("X-Request-Id"))
	}

	const traceID, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	if code, _ := get(t, c, "/continued", map[string]string{"traceparent": "00-" + traceID + "-" + parent + "-01", "x-request-id": "req-7"}); code != 200 {
		t.Fatalf("status %d", code)
	}
	m = traceparent.FindStringSubmatch(b.seenHeader("Traceparent"))
	if m == nil || m[1] != traceID || m[2] == parent || m[3] != "01" {
		t.Errorf("upstream traceparent %q, want trace %s, a new span id, sampled", b.seenHeader("Traceparent"), traceID)
	}
	if got := b.seenHeader("X-Request-Id"); got != "req-7" {
		t.Errorf("upstream x-request-id %q, want the caller's req-7", got)
	}
}
