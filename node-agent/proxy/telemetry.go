package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/node-agent/config"
	"github.com/weft-mesh/weft/node-agent/policy"
	"github.com/weft-mesh/weft/pkg/hbone"
	"github.com/weft-mesh/weft/pkg/istiolabels"
)

// Label values, as Istio uses them.
const (
	ReporterSource      = "source"
	ReporterDestination = "destination"
	SecurityMutualTLS   = "mutual_tls"
	SecurityNone        = "none"
	unknown             = istiolabels.Unknown

	// Response flags (Envoy's short codes where one exists).
	FlagNone            = "-"
	FlagUpstreamFailure = "UF"   // could not connect to the destination / tunnel
	FlagDenied          = "DENY" // refused by authorization policy
	FlagNoEndpoint      = "NR"   // service without a healthy endpoint
	// FlagNotConfigured: a pod captured before the control plane
	// described it (held at CNI ADD) sends or is sent to.
	FlagNotConfigured = "NC"
)

// Metrics are the node agent's L4 metrics with Istio's names and labels,
// and the registry of open connections behind the admin /connections page.
// A nil *Metrics records nothing.
type Metrics struct {
	opened, closed, sent, received *prometheus.CounterVec
	forwardedIgnoredTotal          prometheus.Counter
	revokedTotal                   prometheus.Counter
	dryRunTotal                    *prometheus.CounterVec
	// active maps *connRecord to the Connection captured when it opened
	// (immutable, so readers never race with the proxying goroutine).
	active sync.Map
}

// Connection is one open proxied connection as the admin endpoint shows it.
type Connection struct {
	Direction            string         `json:"direction"`
	Src                  netip.AddrPort `json:"src"`
	Dst                  netip.AddrPort `json:"dst"`
	SourceWorkload       string         `json:"sourceWorkload,omitempty"`
	SourceNamespace      string         `json:"sourceNamespace,omitempty"`
	SourcePrincipal      string         `json:"sourcePrincipal,omitempty"`
	DestinationWorkload  string         `json:"destinationWorkload,omitempty"`
	DestinationPrincipal string         `json:"destinationPrincipal,omitempty"`
	Service              string         `json:"service,omitempty"`
	Security             string         `json:"security"`
	Tunnel               string         `json:"tunnel,omitempty"`
	Start                time.Time      `json:"start"`
}

// Connections lists the open connections, oldest first.
func (m *Metrics) Connections() []Connection {
	if m == nil {
		return nil
	}
	var out []Connection
	m.active.Range(func(_, v any) bool {
		out = append(out, v.(Connection))
		return true
	})
	slices.SortFunc(out, func(a, b Connection) int { return a.Start.Compare(b.Start) })
	return out
}

// OpenFor counts open connections with ip at either end: the node agent
// waits for it to reach zero before it stops steering a drained pod.
func (m *Metrics) OpenFor(ip netip.Addr) int {
	if m == nil {
		return 0
	}
	ip = ip.Unmap()
	n := 0
	m.active.Range(func(_, v any) bool {
		c := v.(Connection)
		if c.Src.Addr().Unmap() == ip || c.Dst.Addr().Unmap() == ip {
			n++
		}
		return true
	})
	return n
}

// NewMetrics registers the istio_tcp_* counters on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	mk := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, istiolabels.TCP)
	}
	m := &Metrics{
		opened:   mk("istio_tcp_connections_opened_total", "TCP connections opened."),
		closed:   mk("istio_tcp_connections_closed_total", "TCP connections closed."),
		sent:     mk("istio_tcp_sent_bytes_total", "Bytes sent during response (destination to source)."),
		received: mk("istio_tcp_received_bytes_total", "Bytes received during request (source to destination)."),
		forwardedIgnoredTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_node_agent_forwarded_ignored_total",
			Help: "HBONE streams whose Forwarded address was ignored because the tunnel's peer may not speak for it (see docs/security)."}),
		revokedTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_node_agent_policy_revoked_connections_total",
			Help: "Open connections closed because a policy change denies them."}),
		dryRunTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_node_agent_rbac_dry_run_total",
			Help: "Connections admitted with dry-run policies (istio.io/dry-run) applying, by what those policies would have decided (allowed, denied); never enforced."},
			[]string{"decision"}),
	}
	for _, c := range []prometheus.Collector{m.opened, m.closed, m.sent, m.received, m.forwardedIgnoredTotal, m.revokedTotal, m.dryRunTotal} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// dryRun counts a dry-run decision (policy.Decision.DryRun; "" is none).
func (m *Metrics) dryRun(d string) {
	if m == nil || d == "" {
		return
	}
	decision := "denied"
	if d == policy.DryRunAllowed {
		decision = d
	}
	m.dryRunTotal.WithLabelValues(decision).Inc()
}

func (m *Metrics) revokedConn() {
	if m != nil {
		m.revokedTotal.Inc()
	}
}

func (m *Metrics) forwardedIgnored() {
	if m != nil {
		m.forwardedIgnoredTotal.Inc()
	}
}

// workloadInfo describes w as one end of a connection for telemetry.
func workloadInfo(w *config.Workload) istiolabels.Peer {
	if w == nil {
		return istiolabels.Peer{}
	}
	p := w.Proto
	return istiolabels.Peer{Workload: cmp.Or(p.GetWorkloadName(), p.GetName()), Namespace: p.GetNamespace(), Principal: spiffeString(w.Identity),
		CanonicalService: p.GetCanonicalName(), CanonicalRevision: p.GetCanonicalRevision(), Cluster: p.GetClusterId()}
}

// serviceInfo describes svc as destination_service*.
func serviceInfo(svc *config.Service) istiolabels.Service {
	return istiolabels.Service{Host: svc.Proto.GetHostname(), Name: svc.Proto.GetName(), Namespace: svc.Proto.GetNamespace()}
}

func spiffeString(id spiffeid.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

// principal renders id in Istio's authorization form "td/ns/x/sa/y".
func principal(id spiffeid.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.TrustDomain().Name() + id.Path()
}

// baggage encodes source workload metadata the way ztunnel does.
func baggage(w *config.Workload) string {
	p := w.Proto
	return hbone.Baggage{Cluster: p.GetClusterId(), Namespace: p.GetNamespace(), WorkloadType: p.GetWorkloadType(), Workload: cmp.Or(p.GetWorkloadName(), p.GetName()),
		Service: p.GetCanonicalName(), Version: p.GetCanonicalRevision()}.String()
}

// connRecord is what one proxied connection reports when it ends. The
// handler that owns it fills in what it learns on the way (peers, service,
// tunnel, policy verdict, bytes); how the connection ended is the handler's
// result, which Env.record turns into the response flag and error.
type connRecord struct {
	Direction string // outbound, inbound, inbound_local, inbound_plaintext, passthrough
	Reporter  string
	Src, Dst  netip.AddrPort
	Source    istiolabels.Peer
	Dest      istiolabels.Peer
	Service   istiolabels.Service
	Security  string
	Flags     string
	verdict
	Tunnel     string // HBONE tunnel address, if any
	Start      time.Time
	SentBytes  int64 // destination -> source
	RecvBytes  int64 // source -> destination
	Err        error
	openedSent bool
	// values are the metric label values, computed once when the
	// connection opens (only response_flags may change by its end).
	values []string
}

// verdict is an L4 policy decision as telemetry reports it.
type verdict struct {
	Decision string // allow, deny, "" when no policy was evaluated
	Policy   string // deciding policy, "" if none
	Reason   string
	DryRun   string // policy.Decision.DryRun
}

func verdictOf(d policy.Decision) verdict {
	v := verdict{Decision: "deny", Policy: d.Policy, Reason: d.Reason, DryRun: d.DryRun}
	if d.Allowed {
		v.Decision = "allow"
	}
	return v
}

// refusal is a handler's result for a connection the proxy refused or
// could not set up (no byte crossed it), or closed because a policy change
// denies it (errRevoked). Any other non-nil result is the error that ended
// a connection that did run (hbone.Pipe's).
type refusal struct {
	// Flag is the response flag (FlagDenied, FlagUpstreamFailure, ...).
	Flag string
	// Status is the HTTP status an HBONE CONNECT is refused with; 0 when
	// the stream is not answered with a refusal (see Inbound.answer).
	// Transparent listeners reset the client whatever the status.
	Status int
	// Cause is why (the access log's error).
	Cause error
}

func (r *refusal) Error() string { return r.Cause.Error() }
func (r *refusal) Unwrap() error { return r.Cause }

// refused reports whether err is a refusal, and which.
func refused(err error) (*refusal, bool) {
	var r *refusal
	ok := errors.As(err, &r)
	return r, ok
}

// notHere refuses a connection to dst, which is not an enrolled workload on
// this node.
func (e *Env) notHere(dst netip.Addr) error {
	return &refusal{Flag: FlagUpstreamFailure, Status: http.StatusServiceUnavailable,
		Cause: fmt.Errorf("destination %s is not an enrolled workload on node %q", dst, e.NodeName)}
}

// notConfigured refuses a connection of or to a held pod.
func notConfigured(ip netip.Addr) error {
	return &refusal{Flag: FlagNotConfigured, Status: http.StatusServiceUnavailable,
		Cause: fmt.Errorf("pod %s is captured but the control plane has not described it yet", ip)}
}

// record ends r with the handler's result err (nil: the connection ran to
// its end; a refusal sets the response flag): it counts the close and the
// bytes and writes the access-log line. Every handler calls it once, in a
// deferred call.
func (e *Env) record(r *connRecord, err error) {
	if rf, ok := refused(err); ok {
		r.Flags = rf.Flag
	}
	var rv *errRevoked
	if errors.As(err, &rv) { // the verdict that ended it, not the one that let it in
		r.verdict = verdictOf(rv.Decision)
	}
	r.Err = err
	finish(e.Metrics, e.AccessLog, r)
}

// end records a connection of a transparent listener: a refused one is
// reset first (RST, the TCP way of saying "refused"); one that ran was
// already closed the way its peers closed it (hbone.Pipe).
func (e *Env) end(c net.Conn, r *connRecord, err error) {
	if _, ok := refused(err); ok {
		reset(c)
	}
	e.record(r, err)
}

// servingService is the destination_service a destination reports for a
// connection to w's port: the Service the client addressed (addressed, its
// hostname: known in-process, claimed in an HBONE Forwarded header) if w
// serves it, as ztunnel bounds the claim; else the snapshot's guess; none
// if neither.
func servingService(snap *config.Snapshot, w *config.Workload, port uint16, addressed string) istiolabels.Service {
	if addressed != "" {
		for key := range w.Proto.GetServices() {
			if svc := snap.Service(key); svc != nil && svc.Proto.GetHostname() == addressed {
				return serviceInfo(svc)
			}
		}
	}
	if svc := snap.ServiceServing(w, port); svc != nil {
		return serviceInfo(svc)
	}
	return istiolabels.Service{}
}

// flagsLabel is the index of response_flags in the label values.
var flagsLabel = slices.Index(istiolabels.TCP, "response_flags")

// labelValues are r's metric label values, computed on first use.
func (r *connRecord) labelValues() []string {
	if r.values == nil {
		r.values = istiolabels.TCPValues(r.Reporter, &r.Source, &r.Dest, &r.Service, "tcp", cmp.Or(r.Flags, unknown), cmp.Or(r.Security, unknown))
	}
	r.values[flagsLabel] = cmp.Or(r.Flags, unknown)
	return r.values
}

// opened counts the connection as opened (once).
func (m *Metrics) open(r *connRecord) {
	if m == nil || r.openedSent {
		return
	}
	r.openedSent = true
	if r.Flags == "" {
		r.Flags = FlagNone
	}
	m.opened.WithLabelValues(r.labelValues()...).Inc()
	m.active.Store(r, Connection{
		Direction: r.Direction, Src: r.Src, Dst: r.Dst,
		SourceWorkload: r.Source.Workload, SourceNamespace: r.Source.Namespace, SourcePrincipal: r.Source.Principal,
		DestinationWorkload: r.Dest.Workload, DestinationPrincipal: r.Dest.Principal,
		Service: r.Service.Host, Security: r.Security, Tunnel: r.Tunnel, Start: r.Start,
	})
}

// finish counts the close and bytes and writes the access-log line.
func finish(m *Metrics, log *slog.Logger, r *connRecord) {
	if r.Flags == "" {
		r.Flags = FlagNone
	}
	if m != nil {
		m.open(r)
		m.active.Delete(r)
		l := r.labelValues()
		// Bytes before the close: whoever sees the close counted (a
		// scrape, a test awaiting it) sees the connection's bytes too.
		m.sent.WithLabelValues(l...).Add(float64(r.SentBytes))
		m.received.WithLabelValues(l...).Add(float64(r.RecvBytes))
		m.closed.WithLabelValues(l...).Inc()
	}
	if log == nil {
		return
	}
	attrs := []slog.Attr{
		slog.String("direction", r.Direction),
		slog.String("reporter", r.Reporter),
		slog.String("src.addr", r.Src.String()),
		slog.String("src.workload", r.Source.Workload),
		slog.String("src.namespace", r.Source.Namespace),
		slog.String("src.identity", r.Source.Principal),
		slog.String("dst.addr", r.Dst.String()),
		slog.String("dst.workload", r.Dest.Workload),
		slog.String("dst.namespace", r.Dest.Namespace),
		slog.String("dst.identity", r.Dest.Principal),
		slog.String("dst.service", r.Service.Host),
		slog.String("security", r.Security),
		slog.String("response_flags", r.Flags),
		slog.String("policy.decision", r.Decision),
		slog.String("policy.name", r.Policy),
		slog.String("policy.reason", r.Reason),
		slog.Int64("bytes_sent", r.SentBytes),
		slog.Int64("bytes_received", r.RecvBytes),
		slog.Duration("duration", time.Since(r.Start)),
	}
	if r.Tunnel != "" {
		attrs = append(attrs, slog.String("tunnel", r.Tunnel))
	}
	if r.DryRun != "" {
		attrs = append(attrs, slog.String("policy.dry_run", r.DryRun))
	}
	if r.Err != nil {
		attrs = append(attrs, slog.String("error", r.Err.Error()))
	}
	log.LogAttrs(context.Background(), slog.LevelInfo, "connection complete", attrs...)
}
