package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
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
			_, end := tr.start(context.Background(), httptest.NewRequest("GET", "http://reviews:9080/reviews/0", nil), "chain")
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
