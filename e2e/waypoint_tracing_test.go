package e2e

import (
	"compress/gzip"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/weft-mesh/weft/pkg/netns"
)

// TestWaypointTracing: with the chart's waypoint.tracing.otlpEndpoint set,
// the waypoints the control plane deploys send OTLP/HTTP spans, and one
// Bookinfo request that arrives with a traceparent yields one trace whose
// waypoint spans for productpage, reviews and ratings chain into each other
// (productpage -> reviews v3 -> ratings) under the caller's span. The OTLP
// receiver runs in this process, listening in node-0's network namespace
// on node-0's address, where the waypoint pods reach it.
func TestWaypointTracing(t *testing.T) {
	e := startCluster(t, "e2etrace", 2, 4)
	root := repoRoot()
	manifest := func(f string) string { return filepath.Join(root, "samples/bookinfo/networking", f) }

	nodeIP := strings.TrimSpace(e.mustKubectl(t, "get", "node", "node-0", "-o", `jsonpath={.status.addresses[?(@.type=="InternalIP")].address}`))
	if net.ParseIP(nodeIP) == nil {
		t.Fatalf("node-0 InternalIP %q", nodeIP)
	}
	recv := startOTLPReceiver(t, "/run/netns/"+e.c.NodeNetns(0), net.JoinHostPort(nodeIP, "4318"))
	endpoint := "http://" + net.JoinHostPort(nodeIP, "4318")
	t.Logf("OTLP/HTTP receiver on %s (node-0's network namespace)", endpoint)

	// The Telemetry subtest's provider: Istio's opentelemetry provider
	// over HTTP to a Service in front of the same receiver; the Zipkin
	// subtest's: Istio's zipkin provider on the Jaeger addon's zipkin
	// Service.
	e.installControlPlaneWith(t, "--set", "waypoint.tracing.otlpEndpoint="+endpoint, "--set-json",
		`meshConfig.extensionProviders=[{"name":"otel","opentelemetry":{"service":"otel-collector.observability.svc.cluster.local","port":4318,"http":{"path":"/v1/traces"}}},`+
			`{"name":"zipkin","zipkin":{"service":"zipkin.istio-system.svc.cluster.local","port":9411}}]`)
	e.installNodeAgent(t)
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/bookinfo/platform/kube/bookinfo.yaml"))
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/curl/curl.yaml"))
	e.mustKubectl(t, "wait", "--for=condition=Available", "deployment", "--all", "--timeout=180s")
	e.mustKubectl(t, "label", "namespace", "default", "istio.io/dataplane-mode=ambient")
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/waypoint/waypoint.yaml"))
	e.mustKubectl(t, "label", "namespace", "default", "istio.io/use-waypoint=waypoint")
	e.mustKubectl(t, "wait", "--for=condition=Programmed", "gateway/waypoint", "--timeout=120s")
	e.mustKubectl(t, "apply", "-f", manifest("destination-rule-all.yaml"))
	e.mustKubectl(t, "apply", "-f", manifest("virtual-service-reviews-v3.yaml"))

	// The chart value reached the waypoint pods through weft-control.
	env := map[string]string{}
	var vars []struct{ Name, Value string }
	if err := json.Unmarshal([]byte(e.mustKubectl(t, "get", "deployment", "waypoint", "-o", "jsonpath={.spec.template.spec.containers[0].env}")), &vars); err != nil {
		t.Fatal(err)
	}
	for _, v := range vars {
		env[v.Name] = v.Value
	}
	if env["OTEL_EXPORTER_OTLP_ENDPOINT"] != endpoint || env["OTEL_SERVICE_NAME"] != "waypoint.default" {
		t.Fatalf("waypoint env %v: want OTEL_EXPORTER_OTLP_ENDPOINT=%s OTEL_SERVICE_NAME=waypoint.default", env, endpoint)
	}

	eventually(t, "reviews routed to v3 only", 60*time.Second, func() error {
		return wantVersions(e.reviewsVersions(t, "", 10), map[string]bool{"v3": true})
	})

	traceID, callerSpan := randomHex(t, 16), randomHex(t, 8)
	traceparent := "00-" + traceID + "-" + callerSpan + "-01"
	page, err := e.kubectl("exec", "deploy/curl", "--", "curl", "-sS", "-m", "20", "-H", "traceparent: "+traceparent, "http://productpage:9080/productpage")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page, `color="red"`) {
		t.Fatalf("productpage did not show reviews v3's red stars (ratings via reviews v3):\n%s", pageSummary(page))
	}
	sent := time.Now()
	t.Logf("sent GET /productpage with traceparent %s", traceparent)

	// The waypoint batches spans (up to 5 s); its inbound spans end after
	// the response, so wait for the whole chain, not the first export.
	var tr *trace
	eventually(t, "the trace's waypoint spans for productpage, reviews and ratings", 30*time.Second, func() error {
		tr = newTrace(recv.spansOf(traceID))
		return tr.check(callerSpan)
	})
	t.Logf("trace %s: %d spans received within %s:\n%s", traceID, len(tr.spans), time.Since(sent).Round(100*time.Millisecond), tr.tree())
	for _, s := range tr.spans {
		if s.Service != "waypoint.default" || s.Kind != "SPAN_KIND_SERVER" || s.Attrs["component"] != "weft-waypoint" {
			t.Errorf("span %s: service.name %q kind %s component %q; want waypoint.default, a server span, weft-waypoint",
				s.SpanID, s.Service, s.Kind, s.Attrs["component"])
		}
	}

	t.Run("Telemetry API: Istio's tracing task with an OpenTelemetry provider; access log off in a namespace", func(t *testing.T) {
		testTelemetryAPI(t, e, recv, nodeIP)
	})

	t.Run("the ingress gateway starts the trace of a request that comes without one", func(t *testing.T) {
		e.mustRun(t, "helm", "install", "weft-ingress", filepath.Join(root, "charts/gateway"), "-n", "weft-ingress", "--create-namespace",
			"--set", "tracing.otlpEndpoint="+endpoint)
		e.mustKubectl(t, "-n", "weft-ingress", "rollout", "status", "deployment/weft-ingress", "--timeout=120s")
		e.mustKubectl(t, "apply", "-f", manifest("bookinfo-gateway.yaml"))
		addr := e.ingressAddr(t)
		// No trace headers at all: the gateway is the root.
		eventually(t, "/productpage through the ingress gateway", 30*time.Second, func() error {
			resp, err := http.Get("http://" + addr + "/productpage")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("HTTP %d", resp.StatusCode)
			}
			return nil
		})
		var root recvSpan
		var tr *trace
		eventually(t, "a trace rooted at the gateway with reviews and ratings below it", 30*time.Second, func() error {
			for _, s := range recv.all() {
				if s.Service == "weft-ingress.weft-ingress" && s.ParentID == "" && s.Attrs["url.path"] == "/productpage" {
					tr = newTrace(recv.spansOf(s.TraceID))
					if err := tr.chainBelow(s.SpanID); err == nil {
						root = s
						return nil
					}
				}
			}
			return errors.New("not yet")
		})
		if root.Attrs["guid:x-request-id"] == "" {
			t.Errorf("the gateway's root span has no x-request-id: %v", root.Attrs)
		}
		t.Logf("trace %s rooted at the gateway (x-request-id %s):\n%s", root.TraceID, root.Attrs["guid:x-request-id"], tr.tree())
	})

	if errs := recv.errors(); len(errs) > 0 {
		t.Errorf("the receiver rejected exports: %v", errs)
	}

	// Last: it points the waypoints and the gateway away from recv.
	jaegerOK := t.Run("Jaeger addon: one request as jason through the ingress gateway is one trace in Jaeger", func(t *testing.T) {
		testJaeger(t, e)
	})
	// After it: it uses the addon and turns the OTLP endpoints off.
	t.Run("Jaeger addon: a Telemetry's zipkin provider reports the same trace over Zipkin", func(t *testing.T) {
		if !jaegerOK {
			t.Skip("the Jaeger subtest failed")
		}
		testJaegerZipkin(t, e)
	})
}

// otelCollectorYAML is a Service without selector in front of the OTLP
// receiver at %[1]s:4318 (node-0's address), as a collector's Service.
const otelCollectorYAML = `apiVersion: v1
kind: Namespace
metadata: {name: observability}
---
apiVersion: v1
kind: Service
metadata: {name: otel-collector, namespace: observability}
spec:
  ports: [{name: otlp-http, port: 4318, targetPort: 4318}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: otel-collector-receiver
  namespace: observability
  labels: {kubernetes.io/service-name: otel-collector}
addressType: IPv4
ports: [{name: otlp-http, port: 4318}]
endpoints: [{addresses: ["%[1]s"]}]
`

// Istio's tracing task (a mesh default naming the provider, 100%%) with a
// custom tag that only this Telemetry adds, and a namespace Telemetry
// that turns the access log off.
const (
	telemetryNoAccessLogYAML = `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: no-access-log, namespace: default}
spec:
  accessLogging:
  - providers: [{name: envoy}]
    disabled: true
`
	telemetryTracingYAML = `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: weft-system}
spec:
  tracing:
  - providers: [{name: otel}]
    randomSamplingPercentage: 100
    customTags:
      weft.e2e: {literal: {value: telemetry-api}}
`
)

// testTelemetryAPI: with the Telemetries applied, a request that comes
// without trace context is sampled (100%) and reported to the named
// provider with the Telemetry's tag; the waypoint writes no access log line
// for it; without the access-log Telemetry, it logs again.
func testTelemetryAPI(t *testing.T, e *env, recv *otlpReceiver, nodeIP string) {
	e.applyYAML(t, fmt.Sprintf(otelCollectorYAML, nodeIP))
	// Applied first: a configuration with the tracing Telemetry has it too.
	e.applyYAML(t, telemetryNoAccessLogYAML)
	e.applyYAML(t, telemetryTracingYAML)
	request := func() string {
		id := "telemetry-" + randomHex(t, 8)
		if _, err := e.kubectl("exec", "deploy/curl", "--", "curl", "-sS", "-m", "20", "-o", "/dev/null", "-H", "x-request-id: "+id,
			"http://productpage:9080/productpage"); err != nil {
			t.Fatal(err)
		}
		return id
	}
	tagged := func(id string) error {
		for _, s := range recv.all() {
			if s.Attrs["guid:x-request-id"] == id && s.Attrs["weft.e2e"] == "telemetry-api" && s.Service == "waypoint.default" {
				return nil
			}
		}
		return fmt.Errorf("no span of request %s tagged weft.e2e=telemetry-api from waypoint.default", id)
	}
	// Each attempt sends a request; any one reported with the tag will do
	// (spans are batched for up to 5 s, the configuration may be on its way).
	var id string
	var sent []string
	eventually(t, "a request without trace context sampled and reported to the Telemetry's provider", 90*time.Second, func() error {
		sent = append(sent, request())
		for _, s := range sent {
			if tagged(s) == nil {
				id = s
				return nil
			}
		}
		return tagged(sent[len(sent)-1])
	})
	for _, name := range []string{"weft-system/mesh-default", "default/no-access-log"} {
		ns, n, _ := strings.Cut(name, "/")
		if got := e.mustKubectl(t, "-n", ns, "get", "telemetry", n, "-o", `jsonpath={.status.conditions[?(@.type=="WeftAccepted")].status}`); got != "True" {
			t.Errorf("Telemetry %s: WeftAccepted %q, want True", name, got)
		}
	}
	e.mustKubectl(t, "delete", "telemetry", "no-access-log")
	sent = nil
	var logs string
	eventually(t, "the waypoint logs again without the access-log Telemetry", 60*time.Second, func() error {
		sent = append(sent, request())
		logs = e.mustKubectl(t, "logs", "deploy/waypoint")
		if !slices.ContainsFunc(sent, func(id string) bool { return strings.Contains(logs, id) }) {
			return fmt.Errorf("none of the requests %v in the waypoint's access log", sent)
		}
		return nil
	})
	// Checked only now: the access log is buffered (up to a second), and a
	// later request's line in it means every earlier line is out too.
	if strings.Contains(logs, id) {
		t.Errorf("the waypoint logged request %s although default's Telemetry turned its access log off", id)
	}
	e.mustKubectl(t, "delete", "telemetry", "-n", "weft-system", "mesh-default")
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// recvSpan is a received span, ids in hex.
type recvSpan struct {
	TraceID, SpanID, ParentID string
	Name, Kind, Service       string
	Attrs                     map[string]string
}

// dest is the service a waypoint span is for: the first label of its
// server.address (the request's Host, e.g. reviews:9080).
func (s recvSpan) dest() string {
	h := s.Attrs["server.address"]
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h, _, _ = strings.Cut(h, ".")
	return h
}

// otlpReceiver is a minimal OTLP/HTTP trace receiver (POST /v1/traces,
// protobuf or JSON).
type otlpReceiver struct {
	mu    sync.Mutex
	spans []recvSpan
	errs  []string
}

// startOTLPReceiver listens on addr inside the network namespace at path
// (a socket keeps its namespace, so it is served from any goroutine) until
// the test ends.
func startOTLPReceiver(t *testing.T, nsPath, addr string) *otlpReceiver {
	t.Helper()
	var ln net.Listener
	if err := netns.Do(nsPath, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("OTLP receiver: %v", err)
	}
	r := &otlpReceiver{}
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("OTLP receiver: %v", err)
		}
	}()
	t.Cleanup(func() {
		srv.Close() // closes ln
		<-done
	})
	return r
}

func (r *otlpReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	fail := func(code int, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		r.mu.Lock()
		r.errs = append(r.errs, msg)
		r.mu.Unlock()
		http.Error(w, msg, code)
	}
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		fail(http.StatusNotFound, "%s %s: want POST /v1/traces", req.Method, req.URL.Path)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(req.Body)
		if err != nil {
			fail(http.StatusBadRequest, "gzip: %v", err)
			return
		}
		body = gz
	}
	data, err := io.ReadAll(body)
	if err != nil {
		fail(http.StatusBadRequest, "read: %v", err)
		return
	}
	isJSON := strings.HasPrefix(req.Header.Get("Content-Type"), "application/json")
	export := &coltracepb.ExportTraceServiceRequest{}
	if isJSON {
		err = unmarshalOTLPJSON(data, export)
	} else {
		err = proto.Unmarshal(data, export)
	}
	if err != nil {
		fail(http.StatusBadRequest, "decode %s: %v", req.Header.Get("Content-Type"), err)
		return
	}
	var got []recvSpan
	for _, rs := range export.GetResourceSpans() {
		service := attrMap(rs.GetResource().GetAttributes())["service.name"]
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				got = append(got, recvSpan{
					TraceID: hex.EncodeToString(s.GetTraceId()), SpanID: hex.EncodeToString(s.GetSpanId()),
					ParentID: hex.EncodeToString(s.GetParentSpanId()), Name: s.GetName(), Kind: s.GetKind().String(),
					Service: service, Attrs: attrMap(s.GetAttributes()),
				})
			}
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	r.mu.Unlock()
	resp := &coltracepb.ExportTraceServiceResponse{}
	if isJSON {
		w.Header().Set("Content-Type", "application/json")
		data, _ = protojson.Marshal(resp)
	} else {
		w.Header().Set("Content-Type", "application/x-protobuf")
		data, _ = proto.Marshal(resp)
	}
	w.Write(data)
}

// unmarshalOTLPJSON decodes OTLP/JSON, whose trace and span ids are hex,
// not the base64 of protobuf's JSON mapping.
func unmarshalOTLPJSON(data []byte, m proto.Message) error {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	var fix func(any) error
	fix = func(v any) error {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "traceId" || k == "spanId" || k == "parentSpanId") {
					b, err := hex.DecodeString(s)
					if err != nil {
						return fmt.Errorf("%s %q: %w", k, s, err)
					}
					v[k] = base64.StdEncoding.EncodeToString(b)
				} else if err := fix(x); err != nil {
					return err
				}
			}
		case []any:
			for _, x := range v {
				if err := fix(x); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := fix(v); err != nil {
		return err
	}
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, m)
}

func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	out := map[string]string{}
	for _, kv := range kvs {
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			out[kv.GetKey()] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			out[kv.GetKey()] = strconv.FormatInt(v.IntValue, 10)
		case *commonpb.AnyValue_BoolValue:
			out[kv.GetKey()] = strconv.FormatBool(v.BoolValue)
		case *commonpb.AnyValue_DoubleValue:
			out[kv.GetKey()] = strconv.FormatFloat(v.DoubleValue, 'g', -1, 64)
		default:
			out[kv.GetKey()] = kv.GetValue().String()
		}
	}
	return out
}

func (r *otlpReceiver) spansOf(traceID string) []recvSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []recvSpan
	for _, s := range r.spans {
		if s.TraceID == traceID {
			out = append(out, s)
		}
	}
	return out
}

func (r *otlpReceiver) all() []recvSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.spans)
}

func (r *otlpReceiver) errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.errs)
}

// trace is the spans of one trace, by span id.
type trace struct {
	spans []recvSpan
	byID  map[string]recvSpan
}

func newTrace(spans []recvSpan) *trace {
	tr := &trace{spans: spans, byID: map[string]recvSpan{}}
	for _, s := range spans {
		tr.byID[s.SpanID] = s
	}
	return tr
}

// ancestors are the received spans above s, nearest first.
func (tr *trace) ancestors(s recvSpan) []recvSpan {
	var out []recvSpan
	for seen := map[string]bool{s.SpanID: true}; ; {
		p, ok := tr.byID[s.ParentID]
		if !ok || seen[p.SpanID] {
			return out
		}
		seen[p.SpanID] = true
		out = append(out, p)
		s = p
	}
}

func (tr *trace) dest(d string) []recvSpan {
	var out []recvSpan
	for _, s := range tr.spans {
		if s.dest() == d {
			out = append(out, s)
		}
	}
	return out
}

// check wants one productpage span, child of the caller's span, and a
// ratings span below a reviews span below it.
func (tr *trace) check(callerSpan string) error {
	pp := tr.dest("productpage")
	if len(pp) != 1 {
		return fmt.Errorf("%d productpage spans among %d: %v", len(pp), len(tr.spans), tr.names())
	}
	if pp[0].ParentID != callerSpan {
		return fmt.Errorf("productpage span's parent is %q, want the caller's span %s", pp[0].ParentID, callerSpan)
	}
	return tr.chainBelow(pp[0].SpanID)
}

// chainBelow checks that a reviews span descends from span top and a
// ratings span from one of those.
func (tr *trace) chainBelow(top string) error {
	var reviewsOK []string
	for _, s := range tr.dest("reviews") {
		if slices.ContainsFunc(tr.ancestors(s), func(a recvSpan) bool { return a.SpanID == top }) {
			reviewsOK = append(reviewsOK, s.SpanID)
		}
	}
	if len(reviewsOK) == 0 {
		return fmt.Errorf("no reviews span below span %s: %v", top, tr.names())
	}
	for _, s := range tr.dest("ratings") {
		anc := tr.ancestors(s)
		if slices.ContainsFunc(anc, func(a recvSpan) bool { return slices.Contains(reviewsOK, a.SpanID) }) {
			return nil
		}
	}
	return fmt.Errorf("no ratings span below a reviews span: %v", tr.names())
}

func (tr *trace) names() []string {
	var out []string
	for _, s := range tr.spans {
		out = append(out, s.Name+"("+s.SpanID+"<-"+s.ParentID+")")
	}
	return out
}

// tree renders the spans indented under their parents.
func (tr *trace) tree() string {
	children := map[string][]recvSpan{}
	var roots []recvSpan
	for _, s := range tr.spans {
		if _, ok := tr.byID[s.ParentID]; ok && s.ParentID != s.SpanID {
			children[s.ParentID] = append(children[s.ParentID], s)
		} else {
			roots = append(roots, s)
		}
	}
	var b strings.Builder
	var walk func(s recvSpan, depth int)
	walk = func(s recvSpan, depth int) {
		fmt.Fprintf(&b, "%s%s span %s parent %s service %s %s %s -> %s (chain %s)\n", strings.Repeat("  ", depth+1),
			s.Name, s.SpanID, s.ParentID, s.Service, s.Kind, s.Attrs["http.request.method"], s.Attrs["http.response.status_code"], s.Attrs["weft.filter_chain"])
		for _, c := range children[s.SpanID] {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return b.String()
}
