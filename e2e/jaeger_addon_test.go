package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestJaegerAddonReceivers runs the jaeger binary that hack/kube-assets.sh
// builds (the local cluster's jaegertracing/jaeger) with the configuration
// of samples/addons/jaeger.yaml, moved to free loopback ports, and sends
// one span each over OTLP/gRPC, OTLP/HTTP and Zipkin: each is read back
// through the query HTTP API under the addon's base path. No cluster: it
// proves the manifest's configuration is one the pinned Jaeger accepts and
// serves.
func TestJaegerAddonReceivers(t *testing.T) {
	requireAsset(t, "jaeger", "jaegertracing/jaeger")
	ports := map[string]int{}
	cfg := loopbackConfig(t, jaegerAddonConfig(t), ports)
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command(filepath.Join(assetsDir(), "jaeger"), "--config", file)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("jaeger's log:\n%s", tail(logs.String(), 40))
		}
	})
	at := func(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }
	eventually(t, "jaeger healthy", 60*time.Second, func() error {
		select {
		case err := <-exited:
			t.Fatalf("jaeger exited: %v\n%s", err, tail(logs.String(), 40))
		default:
		}
		_, err := getOK(&http.Client{Timeout: 2 * time.Second}, "http://"+at(ports["13133"])+"/status")
		return err
	})

	sent := map[string]string{ // trace id -> service name
		sendOTLPGRPC(t, at(ports["4317"])): "otlp-grpc-client",
		sendOTLPHTTP(t, at(ports["4318"])): "otlp-http-client",
		sendZipkin(t, at(ports["9411"])):   "zipkin-client",
	}
	base := "http://" + at(ports["16686"]) + "/jaeger"
	query := base + "/api/traces/"
	for id, service := range sent {
		eventually(t, service+"'s span through the query API", 30*time.Second, func() error {
			body, err := getOK(&http.Client{Timeout: 5 * time.Second}, query+id)
			if err != nil {
				return err
			}
			if !strings.Contains(body, `"serviceName":"`+service+`"`) {
				return fmt.Errorf("trace %s: %.300s", id, body)
			}
			return nil
		})
	}

	t.Run("TestWaypointTracing's Jaeger query and trace shape on Jaeger's answers", func(t *testing.T) {
		testIngressTraceQuery(t, at(ports["4318"]), base)
	})
}

// testIngressTraceQuery sends spans shaped like the ingress gateway's and
// the waypoint's for one Bookinfo request, then finds them as
// TestWaypointTracing does: by request id, read back by trace id, checked
// by checkIngress, which must refuse ratings hung under the gateway.
func testIngressTraceQuery(t *testing.T, otlpHTTP, jaeger string) {
	get := func(u string) (string, error) { return getOK(&http.Client{Timeout: 5 * time.Second}, u) }
	for _, ratingsUnder := range []string{"reviews", "gateway"} {
		rid := "query-" + randomHex(t, 8)
		req := ingressTraceExport(t, rid, ratingsUnder)
		body, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		postOK(t, "http://"+otlpHTTP+"/v1/traces", "application/x-protobuf", body)
		var tr *trace
		eventually(t, "trace of "+rid+" in Jaeger", 30*time.Second, func() error {
			tr, err = jaegerTraceOf(get, jaeger, rid)
			if err == nil && len(tr.spans) != 4 {
				err = fmt.Errorf("%d spans: %v", len(tr.spans), tr.names())
			}
			return err
		})
		err = tr.checkIngress()
		if (err == nil) != (ratingsUnder == "reviews") {
			t.Errorf("ratings under %s: checkIngress = %v\n%s", ratingsUnder, err, tr.tree())
		}
	}
}

// ingressTraceExport is one trace: the gateway's root span for
// /productpage tagged with the request id, the waypoint's spans for
// details and reviews below it and for ratings below ratingsUnder.
func ingressTraceExport(t *testing.T, requestID, ratingsUnder string) *coltracepb.ExportTraceServiceRequest {
	t.Helper()
	traceID, _ := hex.DecodeString(randomHex(t, 16))
	id := map[string][]byte{}
	for _, n := range []string{"gateway", "details", "reviews", "ratings"} {
		id[n], _ = hex.DecodeString(randomHex(t, 8))
	}
	str := func(k, v string) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
	}
	now := uint64(time.Now().UnixNano())
	span := func(name string, parent []byte, attrs ...*commonpb.KeyValue) *tracepb.Span {
		return &tracepb.Span{TraceId: traceID, SpanId: id[name], ParentSpanId: parent, Name: name, Attributes: attrs,
			Kind: tracepb.Span_SPAN_KIND_SERVER, StartTimeUnixNano: now - 1e6, EndTimeUnixNano: now}
	}
	service := func(name string, spans ...*tracepb.Span) *tracepb.ResourceSpans {
		return &tracepb.ResourceSpans{Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", name)}},
			ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}}}
	}
	return &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{
		service("weft-ingress.weft-ingress", span("gateway", nil, str("url.path", "/productpage"), str("guid:x-request-id", requestID))),
		service("waypoint.default",
			span("details", id["gateway"], str("server.address", "details:9080")),
			span("reviews", id["gateway"], str("server.address", "reviews:9080")),
			span("ratings", id[ratingsUnder], str("server.address", "ratings:9080"))),
	}}
}

// jaegerAddonConfig is the config.yaml of samples/addons/jaeger.yaml's
// ConfigMap.
func jaegerAddonConfig(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(), "samples/addons/jaeger.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		var cm corev1.ConfigMap
		if yaml.Unmarshal([]byte(doc), &cm) == nil && cm.Kind == "ConfigMap" && cm.Data["config.yaml"] != "" {
			return cm.Data["config.yaml"]
		}
	}
	t.Fatal("samples/addons/jaeger.yaml has no ConfigMap with config.yaml")
	return ""
}

// loopbackConfig moves every listener of cfg ("0.0.0.0:<port>", and the
// metrics reader's host/port) to a free port on 127.0.0.1, recording
// ports[<addon's port>] = <free port>.
func loopbackConfig(t *testing.T, cfg string, ports map[string]int) string {
	t.Helper()
	free := func(orig string) string {
		if p, ok := ports[orig]; ok {
			return strconv.Itoa(p)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports[orig] = ln.Addr().(*net.TCPAddr).Port
		return strconv.Itoa(ports[orig])
	}
	cfg = regexp.MustCompile(`0\.0\.0\.0:([0-9]+)`).ReplaceAllStringFunc(cfg, func(m string) string {
		return "127.0.0.1:" + free(strings.TrimPrefix(m, "0.0.0.0:"))
	})
	cfg = strings.ReplaceAll(cfg, `host: "0.0.0.0"`, `host: "127.0.0.1"`)
	cfg = regexp.MustCompile(`port: ([0-9]+)`).ReplaceAllStringFunc(cfg, func(m string) string {
		return "port: " + free(strings.TrimPrefix(m, "port: "))
	})
	if strings.Contains(cfg, "0.0.0.0") {
		t.Fatalf("a listener left on all addresses:\n%s", cfg)
	}
	return cfg
}

// otlpExport is one server span of service with a new trace id (hex).
func otlpExport(t *testing.T, service string) (*coltracepb.ExportTraceServiceRequest, string) {
	t.Helper()
	traceID, _ := hex.DecodeString(randomHex(t, 16))
	spanID, _ := hex.DecodeString(randomHex(t, 8))
	now := uint64(time.Now().UnixNano())
	return &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name",
			Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: service}}}}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{TraceId: traceID, SpanId: spanID, Name: "GET /",
			Kind: tracepb.Span_SPAN_KIND_SERVER, StartTimeUnixNano: now - 1e6, EndTimeUnixNano: now}}}},
	}}}, hex.EncodeToString(traceID)
}

func sendOTLPGRPC(t *testing.T, addr string) string {
	t.Helper()
	req, id := otlpExport(t, "otlp-grpc-client")
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := coltracepb.NewTraceServiceClient(conn).Export(ctx, req); err != nil {
		t.Fatalf("OTLP/gRPC export to %s: %v", addr, err)
	}
	return id
}

func sendOTLPHTTP(t *testing.T, addr string) string {
	t.Helper()
	req, id := otlpExport(t, "otlp-http-client")
	body, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	postOK(t, "http://"+addr+"/v1/traces", "application/x-protobuf", body)
	return id
}

// sendZipkin posts one span in Zipkin's v2 JSON.
func sendZipkin(t *testing.T, addr string) string {
	t.Helper()
	id := randomHex(t, 16)
	span := fmt.Sprintf(`[{"traceId":%q,"id":%q,"name":"get /","kind":"SERVER","timestamp":%d,"duration":1000,"localEndpoint":{"serviceName":"zipkin-client"}}]`,
		id, randomHex(t, 8), time.Now().UnixMicro())
	postOK(t, "http://"+addr+"/api/v2/spans", "application/json", []byte(span))
	return id
}

func postOK(t *testing.T, url, contentType string, body []byte) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Post(url, contentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST %s: %s", url, resp.Status)
	}
}
