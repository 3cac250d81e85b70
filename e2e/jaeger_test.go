package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// jaegerCollector is samples/addons/jaeger.yaml's OTLP/HTTP receiver, as
// docs/guides/telemetry.md points the waypoints and gateways at it.
const jaegerCollector = "http://jaeger-collector.istio-system:4318"

// testJaeger is issue #16's real Jaeger: Istio's addon, applied unchanged,
// receives the OTLP spans of the waypoints and the ingress gateway, and one
// request through the gateway as jason (productpage's login cookie, so
// reviews v2 calls ratings) is one trace in it, read back through Jaeger's
// HTTP API: the gateway's span for /productpage at the root, details and
// reviews (called by productpage, which forwards the trace headers) below
// it, ratings below reviews. Ingress goes straight to productpage, not
// through its waypoint (no istio.io/ingress-use-waypoint label), so the
// gateway's span is the productpage hop.
func testJaeger(t *testing.T, e *env) {
	requireAsset(t, "jaeger", "jaegertracing/jaeger")
	root := repoRoot()
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/addons/jaeger.yaml"))
	e.mustRun(t, "helm", "upgrade", "weft-control", filepath.Join(root, "charts/control"), "-n", controlNS, "--reuse-values",
		"--set", "waypoint.tracing.otlpEndpoint="+jaegerCollector)
	e.mustRun(t, "helm", "upgrade", "--install", "weft-ingress", filepath.Join(root, "charts/gateway"), "-n", "weft-ingress",
		"--create-namespace", "--reuse-values", "--set", "tracing.otlpEndpoint="+jaegerCollector)
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/bookinfo/networking/bookinfo-gateway.yaml"))
	e.mustKubectl(t, "apply", "-f", filepath.Join(root, "samples/bookinfo/networking/virtual-service-reviews-test-v2.yaml"))
	eventually(t, "weft-control rolls the waypoint out with Jaeger's endpoint", 60*time.Second, func() error {
		env := e.mustKubectl(t, "get", "deployment", "waypoint", "-o", "jsonpath={.spec.template.spec.containers[0].env}")
		if !strings.Contains(env, `"value":"`+jaegerCollector+`"`) {
			return fmt.Errorf("waypoint env %s", env)
		}
		return nil
	})
	for _, d := range []string{"-n istio-system deployment/jaeger", "deployment/waypoint", "-n weft-ingress deployment/weft-ingress"} {
		e.mustKubectl(t, append(append([]string{"rollout", "status"}, strings.Fields(d)...), "--timeout=120s")...)
	}
	// The tutorial's rule takes effect: jason to reviews v2, which calls ratings.
	eventually(t, "jason routed to reviews v2", 60*time.Second, func() error {
		return wantVersions(e.reviewsVersions(t, "jason", 5), map[string]bool{"v2": true})
	})
	waitJaegerTrace(t, e)
}

// testJaegerZipkin: the waypoints and the ingress gateway lose their OTLP
// endpoint, and a root-namespace Telemetry names Istio's zipkin provider
// (the addon's zipkin Service, port 9411; see TestWaypointTracing's
// meshConfig.extensionProviders) at 100%: a request as jason is again one
// trace in Jaeger, the same spans as over OTLP, now received as Zipkin v2
// JSON. Its service names are the proxies' own (Zipkin's tracer names
// none), the same as the chart's OTEL_SERVICE_NAME.
func testJaegerZipkin(t *testing.T, e *env) {
	requireAsset(t, "jaeger", "jaegertracing/jaeger")
	root := repoRoot()
	e.mustRun(t, "helm", "upgrade", "weft-control", filepath.Join(root, "charts/control"), "-n", controlNS, "--reuse-values",
		"--set", "waypoint.tracing.otlpEndpoint=")
	e.mustRun(t, "helm", "upgrade", "weft-ingress", filepath.Join(root, "charts/gateway"), "-n", "weft-ingress",
		"--reuse-values", "--set", "tracing.otlpEndpoint=")
	eventually(t, "weft-control rolls the waypoint out without an OTLP endpoint", 60*time.Second, func() error {
		env := e.mustKubectl(t, "get", "deployment", "waypoint", "-o", "jsonpath={.spec.template.spec.containers[0].env}")
		if strings.Contains(env, "OTEL_EXPORTER_OTLP_ENDPOINT") {
			return fmt.Errorf("waypoint env %s", env)
		}
		return nil
	})
	// Rolled out: no pod with an OTLP endpoint is left to report a span.
	for _, d := range []string{"deployment/waypoint", "-n weft-ingress deployment/weft-ingress"} {
		e.mustKubectl(t, append(append([]string{"rollout", "status"}, strings.Fields(d)...), "--timeout=120s")...)
	}
	if env := e.mustKubectl(t, "-n", "weft-ingress", "get", "deployment", "weft-ingress", "-o", "jsonpath={.spec.template.spec.containers[0].env}"); strings.Contains(env, "OTEL_EXPORTER_OTLP_ENDPOINT") {
		t.Fatalf("the ingress gateway still has an OTLP endpoint: %s", env)
	}
	e.applyYAML(t, telemetryZipkinYAML)
	waitJaegerTrace(t, e)
	if got := e.mustKubectl(t, "-n", "weft-system", "get", "telemetry", "zipkin", "-o", `jsonpath={.status.conditions[?(@.type=="WeftAccepted")].status}`); got != "True" {
		t.Errorf("Telemetry weft-system/zipkin: WeftAccepted %q, want True", got)
	}
}

// telemetryZipkinYAML: Istio's tracing task with its zipkin provider.
const telemetryZipkinYAML = `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: zipkin, namespace: weft-system}
spec:
  tracing:
  - providers: [{name: zipkin}]
    randomSamplingPercentage: 100
`

// waitJaegerTrace sends requests as jason through the ingress gateway
// until one of them is one complete trace in Jaeger (checkIngress).
func waitJaegerTrace(t *testing.T, e *env) {
	jaeger := "http://" + net.JoinHostPort(e.serviceIP(t, "istio-system", "tracing"), "80") + "/jaeger"
	// A request sent while an old waypoint or gateway pod still serves
	// reports to the previous collector: one more is sent when the last
	// has had time to be exported (the proxies batch for up to 5 s).
	addr := e.ingressAddr(t)
	get := func(u string) (string, error) { return e.httpGet(strings.TrimPrefix(u, "http://")) }
	var sent []string
	var last time.Time
	var tr *trace
	eventually(t, "a request's one trace in Jaeger, complete", 90*time.Second, func() error {
		if time.Since(last) > 6*time.Second {
			rid := "jaeger-" + randomHex(t, 8)
			if page := jasonProductpage(t, addr, rid); !strings.Contains(page, `color="black"`) {
				t.Fatalf("productpage as jason did not show reviews v2's black stars:\n%s", pageSummary(page))
			}
			sent, last = append(sent, rid), time.Now()
		}
		var err error
		for _, rid := range sent {
			if tr, err = jaegerTraceOf(get, jaeger, rid); err == nil {
				if err = tr.checkIngress(); err == nil {
					return nil
				}
			}
			err = fmt.Errorf("x-request-id %s: %w", rid, err)
		}
		return err
	})
	t.Logf("trace %s in Jaeger (%d requests sent):\n%s", tr.spans[0].TraceID, len(sent), tr.tree())
}

// jasonProductpage signs in as jason through the ingress gateway at addr
// (POST /login, productpage's cookie) and loads /productpage with the
// given x-request-id.
func jasonProductpage(t *testing.T, addr, requestID string) string {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	// Not following /login's redirect: one /productpage request only.
	client := &http.Client{Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.PostForm("http://"+addr+"/login", url.Values{"username": {"jason"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/productpage", nil)
	req.Header.Set("x-request-id", requestID)
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /productpage as jason: %s %v", resp.Status, err)
	}
	return string(body)
}

// jaegerTraceOf finds the one trace whose gateway span carries the
// request id (Jaeger's /api/traces, searched by tag) and reads it back by
// id (/api/traces/<id>), with get fetching a URL.
func jaegerTraceOf(get func(string) (string, error), jaeger, requestID string) (*trace, error) {
	q := url.Values{"service": {"weft-ingress.weft-ingress"}, "tags": {`{"guid:x-request-id":"` + requestID + `"}`}}
	found, err := jaegerTraces(get, jaeger+"/api/traces?"+q.Encode())
	if err != nil {
		return nil, err
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("%d traces with x-request-id %s, want one", len(found), requestID)
	}
	byID, err := jaegerTraces(get, jaeger+"/api/traces/"+found[0].TraceID)
	if err != nil {
		return nil, err
	}
	if len(byID) != 1 {
		return nil, fmt.Errorf("/api/traces/%s: %d traces", found[0].TraceID, len(byID))
	}
	return newTrace(byID[0].spans()), nil
}

// jaegerTrace is a trace in the JSON of Jaeger's query HTTP API.
type jaegerTrace struct {
	TraceID string `json:"traceID"`
	Spans   []struct {
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		References    []struct {
			RefType string `json:"refType"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
		Tags []struct {
			Key   string
			Value any
		} `json:"tags"`
		ProcessID string `json:"processID"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

func jaegerTraces(get func(string) (string, error), u string) ([]jaegerTrace, error) {
	body, err := get(u)
	if err != nil {
		return nil, err
	}
	var resp struct {
		Data   []jaegerTrace `json:"data"`
		Errors []any         `json:"errors"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		return nil, fmt.Errorf("%s: %v: %.300s", u, err, body)
	}
	if len(resp.Errors) > 0 {
		return nil, fmt.Errorf("%s: %v", u, resp.Errors)
	}
	return resp.Data, nil
}

// spans converts to the receiver's span type (the parent is the CHILD_OF
// reference, the kind Jaeger's span.kind tag).
func (jt jaegerTrace) spans() []recvSpan {
	var out []recvSpan
	for _, s := range jt.Spans {
		r := recvSpan{TraceID: jt.TraceID, SpanID: s.SpanID, Name: s.OperationName,
			Service: jt.Processes[s.ProcessID].ServiceName, Attrs: map[string]string{}}
		for _, ref := range s.References {
			if ref.RefType == "CHILD_OF" {
				r.ParentID = ref.SpanID
			}
		}
		for _, tag := range s.Tags {
			r.Attrs[tag.Key] = fmt.Sprint(tag.Value)
		}
		r.Kind = r.Attrs["span.kind"]
		out = append(out, r)
	}
	return out
}

// checkIngress wants exactly the gateway's root span for /productpage,
// the waypoint's details and reviews spans as its children and its
// ratings span as the child of reviews.
func (tr *trace) checkIngress() error {
	if len(tr.spans) != 4 {
		return fmt.Errorf("%d spans, want gateway, details, reviews, ratings: %v", len(tr.spans), tr.names())
	}
	var gw recvSpan
	for _, s := range tr.spans {
		if s.Service == "weft-ingress.weft-ingress" && s.ParentID == "" && s.Attrs["url.path"] == "/productpage" {
			gw = s
		}
	}
	if gw.SpanID == "" {
		return fmt.Errorf("no root span of weft-ingress.weft-ingress for /productpage: %v", tr.names())
	}
	rv := tr.dest("reviews")
	if len(rv) != 1 {
		return fmt.Errorf("%d reviews spans, want one: %v", len(rv), tr.names())
	}
	parentOf := map[string]string{"details": gw.SpanID, "reviews": gw.SpanID, "ratings": rv[0].SpanID}
	for dest, parent := range parentOf {
		s := tr.dest(dest)
		if len(s) != 1 || s[0].ParentID != parent || s[0].Service != "waypoint.default" {
			return fmt.Errorf("%s: spans %v, want one of waypoint.default, child of %s: %v", dest, s, parent, tr.names())
		}
	}
	return nil
}

// ingressAddr is the ingress gateway's load balancer address, port 80.
func (e *env) ingressAddr(t *testing.T) string {
	t.Helper()
	var host string
	eventually(t, "the ingress load balancer address", 30*time.Second, func() error {
		host = strings.TrimSpace(e.mustKubectl(t, "-n", "weft-ingress", "get", "service", "weft-ingress", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"))
		if host == "" {
			return errors.New("none yet")
		}
		return nil
	})
	return net.JoinHostPort(host, "80")
}

// requireAsset skips (fails under WEFT_E2E_REQUIRE=1) when the kube asset
// that runs image is not built.
func requireAsset(t *testing.T, name, image string) {
	t.Helper()
	bin := filepath.Join(assetsDir(), name)
	if _, err := os.Stat(bin); err != nil {
		msg := fmt.Sprintf("%s missing (the local cluster's %s image): run hack/kube-assets.sh", bin, image)
		if os.Getenv("WEFT_E2E_REQUIRE") == "1" && !testing.Short() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}
