package proxy

import (
	"cmp"
	"context"
	"io"
	"net/http"
	"net/netip"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/zap/zapcore"

	"github.com/weft-mesh/weft/pkg/istiolabels"
	"github.com/weft-mesh/weft/pkg/mesh"
	"github.com/weft-mesh/weft/pkg/statsexpr"
)

// Label values as Istio uses them.
const (
	ReporterWaypoint  = "waypoint"
	ReporterSource    = "source" // an ingress gateway
	SecurityMutualTLS = "mutual_tls"
	unknown           = istiolabels.Unknown
)

// Metrics are the waypoint's L7 metrics, and the L4 ones of its TCP
// streams, with Istio's names and labels, shaped by the stats filter's
// metric plan. A nil *Metrics records nothing.
type Metrics struct {
	current atomic.Pointer[metricSet]

	gatewayTLS         *prometheus.CounterVec // gateway_tls.go
	tcpDenied          *prometheus.CounterVec // TCP streams a network RBAC filter refused
	dryRun             *prometheus.CounterVec // would-be decisions of dry-run policies
	forwarded, baggage prometheus.Counter     // ignored claims of HBONE streams (peer.go)
}

// NewMetrics registers the istio_request* and istio_tcp_* metrics on reg
// (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		gatewayTLS: newGatewayTLSMetric(),
		// Envoy counts these as <stat_prefix>rbac.denied; TCP streams have
		// no istio_requests_total to carry a 403.
		tcpDenied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_waypoint_tcp_rbac_denied_total",
			Help: "TCP streams refused (CONNECT 403) by a filter chain's network RBAC (AuthorizationPolicy), by filter chain."},
			[]string{"filter_chain"}),
		// Envoy counts these as <shadow_rules_stat_prefix>rbac.shadow_{allowed,denied}.
		dryRun: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_waypoint_rbac_dry_run_total",
			Help: "HTTP requests evaluated by istio.io/dry-run AuthorizationPolicies (never enforced), by filter chain and would-be decision (allowed, denied)."},
			[]string{"filter_chain", "decision"}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_waypoint_forwarded_ignored_total",
			Help: "HBONE streams whose Forwarded client address was ignored: the tunnel's peer did not prove it may speak for that address."}),
		baggage: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_waypoint_baggage_ignored_total",
			Help: "HBONE streams whose baggage was ignored: it named another namespace than the peer's SPIFFE identity."}),
	}
	m.current.Store(newMetricSet(standardPlan))
	if reg != nil {
		for _, c := range []prometheus.Collector{currentMetrics{m}, m.gatewayTLS, m.tcpDenied, m.dryRun, m.forwarded, m.baggage} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *Metrics) forwardedIgnored() {
	if m != nil {
		m.forwarded.Inc()
	}
}

func (m *Metrics) baggageIgnored() {
	if m != nil {
		m.baggage.Inc()
	}
}

// record is one request (or TCP stream) as telemetry reports it.
type record struct {
	start          time.Time
	rs             *requestState
	chain, route   string
	logged         bool // the chain writes the access log
	cluster        string
	authority      string
	method, path   string
	protocol       string // http, grpc, tcp
	code           int
	grpcStatus     string // grpc_response_status; "" unless gRPC
	flags          string
	received, sent int64 // body bytes downstream->upstream, upstream->downstream
	headerIn       int64
	headerOut      int64
	userAgent      string
	requestID      string
	traceID        string
	attempts       int
	err            error
	// dryRun is the would-be decision of dry-run policies (route.Info.DryRun).
	dryRun string
	// audit is the AUDIT policy that matched (route.Info.Audit).
	audit string
	// termination is Envoy's connection termination details, e.g. why a
	// network RBAC filter closed the stream.
	termination string
	// tcpValues are a TCP stream's label values, computed when it opens
	// (only response_flags may change by its end).
	tcpValues []string
	// req is the HTTP request (nil for TCP) and attrs the attributes
	// tag expressions see (made when first needed).
	req   *http.Request
	attrs *statsexpr.Attributes
}

// serviceOf derives destination_service from a cluster name of
// mesh.OutboundCluster's form.
func serviceOf(cluster string) (host, name, namespace string) {
	host, _, _, ok := mesh.ParseOutboundCluster(cluster)
	if !ok {
		return "", "", ""
	}
	name, rest, ok := strings.Cut(host, ".")
	if !ok {
		return host, host, ""
	}
	namespace, _, _ = strings.Cut(rest, ".")
	return host, name, namespace
}

// destination describes the endpoint r was sent to: the workload at its
// address as workload discovery describes it (precomputed labels), else
// what the endpoint's EDS metadata says.
func (r *record) destination(ix *workloadIndex) *istiolabels.Peer {
	use := r.rs.upstream(r.cluster)
	if w := ix.at(use.addr.Addr()); w != nil {
		return &w.labels
	}
	if use.e == nil {
		return &istiolabels.Peer{}
	}
	m := &use.e.meta
	return &istiolabels.Peer{Workload: m.Workload, Namespace: m.Namespace, Principal: idString(m.Identity), CanonicalRevision: m.Version}
}

// service is destination_service*: the route's cluster's host, its
// namespace defaulting to the destination workload's.
func (r *record) service(dst *istiolabels.Peer) *istiolabels.Service {
	host, name, ns := serviceOf(r.cluster)
	return &istiolabels.Service{Host: host, Name: name, Namespace: cmp.Or(ns, dst.Namespace)}
}

func (r *record) httpValues(ix *workloadIndex) []string {
	code := "0"
	if r.code > 0 {
		code = strconv.Itoa(r.code)
	}
	dst := r.destination(ix)
	return istiolabels.HTTPValues(reporter(r.rs), &r.rs.source, dst, r.service(dst), r.protocol, orDash(r.flags), SecurityMutualTLS, code, r.grpcStatus)
}

// flagsLabel is the index of response_flags in the TCP label values.
var flagsLabel = slices.Index(istiolabels.TCP, "response_flags")

func (r *record) tcpLabelValues(ix *workloadIndex) []string {
	if r.tcpValues == nil {
		dst := r.destination(ix)
		r.tcpValues = istiolabels.TCPValues(reporter(r.rs), &r.rs.source, dst, r.service(dst), r.protocol, orDash(r.flags), SecurityMutualTLS)
	}
	r.tcpValues[flagsLabel] = orDash(r.flags)
	return r.tcpValues
}

func reporter(rs *requestState) string {
	if rs.edge {
		return ReporterSource
	}
	return ReporterWaypoint
}

func idString(id spiffeid.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

// observe records a finished HTTP request.
func (m *Metrics) observe(r *record, ix *workloadIndex) {
	if m == nil {
		return
	}
	set, l := m.current.Load(), r.httpValues(ix)
	x := [len(httpMetrics)]float64{float64(time.Since(r.start).Microseconds()) / 1000,
		float64(r.headerIn + r.received), float64(r.headerOut + r.sent), 1}
	if set.http != nil {
		for i, obs := range set.httpSeries(l).obs {
			if obs != nil {
				obs(x[i])
			}
		}
	} else {
		for i, m := range httpMetrics {
			set.vecs[m].record(l, r.attributes, x[i])
		}
	}
	if r.dryRun != "" {
		decision, _, _ := strings.Cut(r.dryRun, "[")
		m.dryRun.WithLabelValues(r.chain, decision).Inc()
	}
}

// openTCP counts a TCP stream as opened.
func (m *Metrics) openTCP(r *record, ix *workloadIndex) {
	if m != nil {
		m.current.Load().vecs[metricTCPOpened].record(r.tcpLabelValues(ix), r.attributes, 1)
	}
}

// closeTCP counts a TCP stream's close and bytes (and its opening, if it
// ended before it opened: refused).
func (m *Metrics) closeTCP(r *record, ix *workloadIndex) {
	if m == nil {
		return
	}
	if r.tcpValues == nil {
		m.openTCP(r, ix)
	}
	set, l := m.current.Load(), r.tcpLabelValues(ix)
	set.vecs[metricTCPClosed].record(l, r.attributes, 1)
	set.vecs[metricTCPSent].record(l, r.attributes, float64(r.sent))
	set.vecs[metricTCPReceived].record(l, r.attributes, float64(r.received))
}

func (p *Proxy) log1(r *record) {
	if p.accessLog == nil || !r.logged {
		return
	}
	fp := logFields.Get().(*[]zapcore.Field)
	use := r.rs.upstream(r.cluster)
	f := append((*fp)[:0],
		strField("start_time", r.start.UTC().Format(time.RFC3339Nano)),
		strField("protocol", r.protocol),
		strField("authority", r.authority),
		intField("response_code", int64(r.code)),
		strField("response_flags", orDash(r.flags)),
		intField("bytes_received", r.received),
		intField("bytes_sent", r.sent),
		floatField("duration_ms", float64(time.Since(r.start).Microseconds())/1000),
		strField("filter_chain", r.chain),
		strField("route_name", r.route),
		strField("upstream_cluster", r.cluster),
		strField("downstream_peer", idString(r.rs.peer)),
		strField("downstream_remote_address", addrString(r.rs.clientIP)),
		strField("original_destination", r.rs.origDst.String()),
	)
	if use.addr.IsValid() {
		f = append(f, strField("upstream_host", use.addr.String()))
	}
	if r.method != "" {
		f = append(f, strField("method", r.method), strField("path", r.path),
			strField("user_agent", r.userAgent), strField("request_id", r.requestID), intField("attempts", int64(r.attempts)))
	}
	for _, o := range [...]struct{ k, v string }{{"trace_id", r.traceID}, {"error", errString(r.err)},
		{"connection_termination_details", r.termination}, {"rbac_audit", r.audit}, {"rbac_dry_run", r.dryRun}} {
		if o.v != "" {
			f = append(f, strField(o.k, o.v))
		}
	}
	p.accessLog.write("access", f)
	clear(f)
	*fp = f[:0]
	logFields.Put(fp)
}

// errString is err's message, "" for nil.
func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// appendXFF appends the client address to X-Forwarded-For, as Envoy does
// with use_remote_address: what the client sent is kept (its own claims,
// for the application to weigh) and the last element is always the
// address the proxy vouches for (the tunnel's proven source, or a
// gateway's TCP peer). Several header lines become one, so no line of the
// client's can come after it. A Connection header that nominates
// X-Forwarded-For makes the client's value hop-by-hop: it is dropped with
// the nomination, which would otherwise strip the proxy's entry too.
func appendXFF(h http.Header, client netip.Addr) {
	const xff = "X-Forwarded-For"
	if c := h["Connection"]; len(c) > 0 {
		var keep []string
		nominated := false
		for _, v := range c {
			for _, f := range strings.Split(v, ",") {
				f = textproto.TrimString(f)
				switch {
				case f == "":
				case textproto.CanonicalMIMEHeaderKey(f) == xff:
					nominated = true
				default:
					keep = append(keep, f)
				}
			}
		}
		if nominated {
			delete(h, xff)
			if len(keep) == 0 {
				delete(h, "Connection")
			} else {
				h["Connection"] = []string{strings.Join(keep, ", ")}
			}
		}
	}
	if prev := h[xff]; len(prev) > 0 {
		h[xff] = []string{strings.Join(prev, ", ") + ", " + client.String()}
		return
	}
	h[xff] = []string{client.String()}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func addrString(a interface {
	IsValid() bool
	String() string
}) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func (p *Proxy) finishTCP(r *record) {
	p.Metrics.closeTCP(r, p.Store.workloads.Load())
	p.log1(r)
}

// serveRequest runs one HTTP request through the chain's pipeline with
// telemetry around it.
func (p *Proxy) serveRequest(w http.ResponseWriter, r *http.Request, c *chain, rs *requestState) {
	rec := newRecord(r, c, rs)
	setClientCertHeader(r.Header, rs)
	ctx := context.WithValue(r.Context(), requestStateKey{}, rs)
	ctx = withPeer(ctx, rs.peer, rs.clientIP, rs.origDst)
	ctx, info := withInfo(ctx)
	ctx, end := p.tracing.start(ctx, r, c.name, c.trace)
	rec.traceID = traceIDOf(ctx, r.Header)
	var idle *idleWatch
	if r.Header.Get("Upgrade") == "" { // an upgraded tunnel's bytes bypass rw and body
		ctx, idle = watchIdle(ctx, p.streamIdleTimeout, http.NewResponseController(w))
	}
	body := &countingBody{ReadCloser: r.Body, idle: idle}
	r = r.WithContext(ctx)
	r.Body = body
	rw := &recorder{ResponseWriter: w, idle: idle}
	if !rs.h2 {
		rw.draining = &p.draining
	}
	p.runPipeline(rw, r, c, info)
	idleReset := idle.stop(ctx) && replyStreamIdle(rw, info, rs.h2)
	rec.complete(rw, info, body)
	end(rec.code)
	p.Metrics.observe(rec, p.Store.workloads.Load())
	p.log1(rec)
	if idleReset {
		panic(http.ErrAbortHandler)
	}
}

// newRecord starts the telemetry of request r (see needsRequestID) and
// appends the client to X-Forwarded-For.
func newRecord(r *http.Request, c *chain, rs *requestState) *record {
	if needsRequestID(r.Header, rs) {
		r.Header.Set("X-Request-Id", newRequestID())
	}
	rec := &record{start: time.Now(), rs: rs, req: r, chain: c.name, logged: c.accessLog, authority: r.Host, method: r.Method,
		path: r.URL.Path, protocol: "http", userAgent: r.UserAgent(), requestID: r.Header.Get("X-Request-Id")}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		rec.protocol = "grpc"
	}
	rec.headerIn = headerSize(r.Header)
	if rs.clientIP.IsValid() {
		appendXFF(r.Header, rs.clientIP)
	}
	return rec
}

// runPipeline serves r with the chain's pipeline: 503 NR while its route
// configuration is missing, 500 if the pipeline panics before responding.
func (p *Proxy) runPipeline(rw *recorder, r *http.Request, c *chain, info *routeInfo) {
	if c.handler == nil {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		rw.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(rw, "waypoint: route configuration "+c.rcName+" not received yet\n")
		info.ResponseFlags = "NR"
		return
	}
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			p.log.Error("route pipeline panicked", "chain", c.name, "panic", v)
			if !rw.wrote {
				rw.WriteHeader(http.StatusInternalServerError)
			}
		}
	}()
	c.handler.ServeHTTP(rw, r)
}

// replyStreamIdle ends a request whose stream idle timeout fired, as Envoy
// does: a local 408 before the response started; true when it had
// started, and the stream must be reset instead.
func replyStreamIdle(rw *recorder, info *routeInfo, h2 bool) (reset bool) {
	info.ResponseFlags, info.Details = "SI", "stream_idle_timeout"
	if rw.wrote {
		return true
	}
	rw.Header().Set("Content-Type", "text/plain")
	if !h2 {
		// The rest of the request body may never come: close the
		// connection after the reply instead of draining it (Envoy
		// closes an HTTP/1.1 connection after a stream timeout).
		rw.Header().Set("Connection", "close")
	}
	rw.WriteHeader(http.StatusRequestTimeout)
	io.WriteString(rw, "stream timeout")
	return false
}

// complete records the request's outcome: what was written downstream, the
// pipeline's route info and the request body read.
func (rec *record) complete(rw *recorder, info *routeInfo, body *countingBody) {
	rec.code = rw.code
	if rec.code == 0 {
		rec.code = info.Status // a 101 goes out on the hijacked connection
	}
	if rec.code == 0 {
		rec.code = http.StatusOK
	}
	rec.route, rec.cluster, rec.flags, rec.attempts = info.Route, info.Cluster, info.ResponseFlags, info.Attempts
	rec.dryRun, rec.audit = info.DryRun, info.Audit
	rec.received, rec.sent = body.n.Load()+info.TunnelReceived, rw.bytes+info.TunnelSent
	rec.headerOut = headerSize(rw.Header())
	if rec.protocol == "grpc" {
		rec.grpcStatus = grpcStatus(rw.Header(), rec.code)
	}
}

// grpcStatus is a gRPC response's status, as Envoy reports it: the
// grpc-status trailer, or header of a trailers-only response; without
// either, the status the HTTP status maps to (gRPC's HTTP mapping); ""
// when no response was received.
func grpcStatus(h http.Header, code int) string {
	if s := cmp.Or(h.Get("Grpc-Status"), h.Get(http.TrailerPrefix+"Grpc-Status")); s != "" {
		return s
	}
	switch code {
	case 0:
		return ""
	case http.StatusBadRequest:
		return "13" // INTERNAL
	case http.StatusUnauthorized:
		return "16" // UNAUTHENTICATED
	case http.StatusForbidden:
		return "7" // PERMISSION_DENIED
	case http.StatusNotFound:
		return "12" // UNIMPLEMENTED
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return "14" // UNAVAILABLE
	}
	return "2" // UNKNOWN
}

func headerSize(h http.Header) int64 {
	var n int64
	for k, vs := range h {
		for _, v := range vs {
			n += int64(len(k) + len(v) + 4)
		}
	}
	return n
}

type countingBody struct {
	io.ReadCloser
	n    atomic.Int64
	idle *idleWatch
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	if n > 0 {
		b.idle.touch()
	}
	return n, err
}

// recorder captures the status and body size the pipeline wrote; Flush
// and Unwrap keep streaming (gRPC) and http.ResponseController working.
type recorder struct {
	http.ResponseWriter
	code  int
	bytes int64
	wrote bool
	idle  *idleWatch
	// draining, for an HTTP/1.1 connection, is the proxy's (Drain): a
	// final response written while it is set closes the connection.
	draining *atomic.Bool
}

func (w *recorder) WriteHeader(code int) {
	if !w.wrote && code >= 200 {
		w.final(code)
	}
	w.idle.touch()
	w.ResponseWriter.WriteHeader(code)
}

// final records the status of the final response, as its header is
// written, and asks the client to close an HTTP/1.1 connection when the
// proxy drains (net/http closes it after the response).
func (w *recorder) final(code int) {
	w.code, w.wrote = code, true
	if w.draining != nil && w.draining.Load() {
		w.Header().Set("Connection", "close")
	}
}

func (w *recorder) Write(p []byte) (int, error) {
	if !w.wrote {
		w.final(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	w.idle.touch()
	return n, err
}

func (w *recorder) Flush() {
	if !w.wrote {
		w.final(http.StatusOK)
	}
	w.idle.touch()
	http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// needsRequestID: a request gets a new x-request-id when it has none, as
// Envoy does on every hop, and at a gateway when it comes from an external
// client (not a private or loopback address), as Envoy does at the edge
// (preserve_external_request_id off): an outside caller must not choose
// the id that joins the mesh's logs and traces.
func needsRequestID(h http.Header, rs *requestState) bool {
	if h.Get("X-Request-Id") == "" {
		return true
	}
	ip := rs.clientIP
	return rs.edge && ip.IsValid() && !ip.IsPrivate() && !ip.IsLoopback()
}

// newRequestID is a random (version 4) UUID, the form Envoy generates.
func newRequestID() string { return uuid.NewString() }
