// Package dashboard is weft-control's built-in live mesh page: it scrapes
// the mesh's own proxies (node agents and waypoints, nothing else), turns
// two successive scrapes into a service graph with rates and mTLS status
// per edge (Build, a pure function), and serves the graph as JSON and as a
// self-contained HTML page.
package dashboard

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/weft-mesh/weft/control/server/access"
)

// Metric and label names, as the proxies export them: Istio's standard
// names, so existing dashboards work (docs/reference/metrics.md).
const (
	metricTCPOpened   = "istio_tcp_connections_opened_total"
	metricTCPClosed   = "istio_tcp_connections_closed_total"
	metricTCPSent     = "istio_tcp_sent_bytes_total"
	metricTCPReceived = "istio_tcp_received_bytes_total"
	metricRequests    = "istio_requests_total"
	metricDuration    = "istio_request_duration_milliseconds"
	// The request duration histogram's cumulative buckets (label le).
	metricDurationBucket = metricDuration + "_bucket"

	reporterSource      = "source"
	reporterDestination = "destination"
	reporterWaypoint    = "waypoint"
	securityMutualTLS   = "mutual_tls"
	unknown             = "unknown"
)

// mTLS status of an edge.
const (
	MTLS      = "mtls"      // every counted sample was mutual TLS
	Plaintext = "plaintext" // none was
	Mixed     = "mixed"     // some were
)

// Target kinds.
const (
	KindNodeAgent = "node-agent"
	KindWaypoint  = "waypoint"
)

// Target is one proxy to scrape.
type Target struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	Node      string `json:"node,omitempty"`
	// Workload is the waypoint's workload name (its Gateway), "" for node
	// agents: it marks the waypoint's node in the graph.
	Workload string `json:"workload,omitempty"`
	URL      string `json:"-"`
	// Speaks, for a waypoint, are the namespaces whose traffic it may
	// report: its own and those the control plane sends through it. What
	// it reports about other destinations is dropped (a tenant can
	// tamper with its own namespace's waypoint). nil: a node agent, which
	// may report any.
	Speaks map[string]bool `json:"-"`
}

func (t Target) key() string { return t.Namespace + "/" + t.Pod }

// Sample is one counter value of a scrape.
type Sample struct {
	Metric string
	Labels map[string]string
	Value  float64
}

// Scrape is one target's samples at one time, or the error that prevented
// them.
type Scrape struct {
	Target  Target
	Time    time.Time
	Samples []Sample
	Err     error
}

// Graph is what the page shows.
type Graph struct {
	GeneratedAt time.Time `json:"generatedAt"`
	// WindowSeconds is the time between the two scrapes the rates come
	// from (0: only one scrape so far, rates are not known yet).
	WindowSeconds float64        `json:"windowSeconds"`
	Nodes         []Node         `json:"nodes"`
	Edges         []Edge         `json:"edges"`
	Targets       []TargetStatus `json:"targets"`
}

// Node is a workload ("namespace/name"), or "unknown" for peers the
// proxies could not identify.
type Node struct {
	ID        string `json:"id"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Waypoint  bool   `json:"waypoint,omitempty"`
}

// Edge is traffic from one workload to another. Rates are per second over
// the window; totals are the counters' current sums.
type Edge struct {
	ID          string `json:"id"` // "source->destination"
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Protocol    string `json:"protocol"` // http when a waypoint reported requests, else tcp
	// Reporter is whose TCP samples were counted: destination, or source
	// when no destination proxy reported the edge (a peer outside the
	// mesh).
	Reporter             string  `json:"reporter,omitempty"`
	MTLS                 string  `json:"mtls"`
	RequestsPerSecond    float64 `json:"requestsPerSecond"`
	ErrorRate            float64 `json:"errorRate"` // share of 5xx responses (0..1)
	ConnectionsPerSecond float64 `json:"connectionsPerSecond"`
	BytesPerSecond       float64 `json:"bytesPerSecond"`
	OpenConnections      float64 `json:"openConnections"`
	Requests             float64 `json:"requests"`
	Errors               float64 `json:"errors"`
	Connections          float64 `json:"connections"`
	Bytes                float64 `json:"bytes"`
	// LatencyP50 and LatencyP99 are quantiles of the request durations
	// in the window (milliseconds, from the waypoint's histogram as
	// Prometheus's histogram_quantile computes them); absent without
	// requests in the window.
	LatencyP50 *float64 `json:"latencyP50Ms,omitempty"`
	LatencyP99 *float64 `json:"latencyP99Ms,omitempty"`
}

// TargetStatus says whether a target was scraped.
type TargetStatus struct {
	Target
	OK        bool      `json:"ok"`
	Error     string    `json:"error,omitempty"`
	ScrapedAt time.Time `json:"scrapedAt"`
	// Dropped counts the samples of the last scrape (a histogram's
	// buckets each count) about destinations the waypoint does not serve
	// (Target.Speaks): someone made it lie.
	Dropped int `json:"dropped,omitempty"`
}

// counts accumulates one kind of side (TCP per reporter, or HTTP) of an
// edge over the proxies that reported it: totals, their growth over the
// window, and how many sides were mutual TLS or not (all, and active in
// the window).
type counts struct {
	present                              bool
	total, delta                         totals
	secure, insecure, dSecure, dInsecure int
}

func (c *counts) add(secure bool, total, delta totals) {
	c.present = true
	c.total.plus(total)
	c.delta.plus(delta)
	active := delta.active()
	switch {
	case secure && active:
		c.secure, c.dSecure = c.secure+1, c.dSecure+1
	case secure:
		c.secure++
	case active:
		c.insecure, c.dInsecure = c.insecure+1, c.dInsecure+1
	default:
		c.insecure++
	}
}

type edgeCounts struct{ dst, src, http counts }

func (ec *edgeCounts) of(k sideKind) *counts {
	switch k {
	case sideTCPDestination:
		return &ec.dst
	case sideTCPSource:
		return &ec.src
	}
	return &ec.http
}

// Build turns the previous and current scrapes of every target into the
// graph (see build).
func Build(prev, cur []Scrape, now time.Time) Graph {
	return build(reduceAll(prev), reduceAll(cur), now)
}

// build turns a base and the current reading of every target into the
// graph. Rates come from targets read successfully both times; a counter
// that went down (the proxy restarted) counts from zero, never negative.
// TCP edges count the destination proxy's samples, the source's only when
// no destination reported the edge, so a connection is counted once; HTTP
// comes from waypoints.
func build(base, cur []reading, now time.Time) Graph {
	g := Graph{GeneratedAt: now, Nodes: []Node{}, Edges: []Edge{}, Targets: []TargetStatus{}}
	t := tally(base, cur)
	g.Targets = append(g.Targets, t.targets...)
	secs := t.window.Seconds()
	g.WindowSeconds = secs
	rate := func(d float64) float64 {
		if secs <= 0 {
			return 0
		}
		return d / secs
	}
	nodes := map[string]Node{}
	for k, ec := range t.edges {
		g.Edges = append(g.Edges, newEdge(k, ec, rate))
		for _, id := range k {
			if _, ok := nodes[id]; !ok {
				nodes[id] = newNode(id, t.waypoints[id])
			}
		}
	}
	for _, n := range nodes {
		g.Nodes = append(g.Nodes, n)
	}
	slices.SortFunc(g.Nodes, func(a, b Node) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortFunc(g.Edges, func(a, b Edge) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortFunc(g.Targets, func(a, b TargetStatus) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.key(), b.key()))
	})
	return g
}

// tallied is what tally reads from the readings.
type tallied struct {
	targets   []TargetStatus
	waypoints map[string]bool // "<namespace>/<workload>" of waypoint targets
	edges     map[[2]string]*edgeCounts
	window    time.Duration // the longest time between a target's two readings
}

// tally counts the current readings' sides per edge, with their growth
// since the target's base reading (none without a successful one).
func tally(base, cur []reading) tallied {
	before := make(map[string]reading, len(base))
	for _, r := range base {
		if r.Err == nil {
			before[r.Target.key()] = r
		}
	}
	t := tallied{waypoints: map[string]bool{}, edges: map[[2]string]*edgeCounts{}}
	for _, r := range cur {
		st := TargetStatus{Target: r.Target, OK: r.Err == nil, ScrapedAt: r.Time, Dropped: r.dropped}
		if r.Target.Kind == KindWaypoint && r.Target.Workload != "" {
			t.waypoints[r.Target.Namespace+"/"+r.Target.Workload] = true
		}
		if r.Err != nil {
			st.Error = r.Err.Error()
			t.targets = append(t.targets, st)
			continue
		}
		t.targets = append(t.targets, st)
		b, haveBase := before[r.Target.key()]
		haveBase = haveBase && r.Time.After(b.Time)
		if haveBase {
			t.window = max(t.window, r.Time.Sub(b.Time))
		}
		for k, tot := range r.sides {
			var delta totals
			if haveBase {
				delta = tot.since(b.sides[k])
			}
			t.edgeCounts(k.edge).of(k.kind).add(k.secure, *tot, delta)
		}
	}
	return t
}

func (t tallied) edgeCounts(k [2]string) *edgeCounts {
	ec := t.edges[k]
	if ec == nil {
		ec = &edgeCounts{}
		t.edges[k] = ec
	}
	return ec
}

// newEdge is the edge k of ec's counts, with rates from rate.
func newEdge(k [2]string, ec *edgeCounts, rate func(float64) float64) Edge {
	tcp, reporter := ec.dst, reporterDestination
	if !tcp.present {
		tcp, reporter = ec.src, reporterSource
	}
	e := Edge{ID: k[0] + "->" + k[1], Source: k[0], Destination: k[1], Protocol: "tcp",
		ConnectionsPerSecond: rate(tcp.delta.opened), BytesPerSecond: rate(tcp.delta.bytes),
		OpenConnections: max(tcp.total.opened-tcp.total.closed, 0), Connections: tcp.total.opened, Bytes: tcp.total.bytes}
	if tcp.present {
		e.Reporter = reporter
	}
	if h := ec.http; h.present {
		e.Protocol = "http"
		e.RequestsPerSecond, e.Requests, e.Errors = rate(h.delta.reqs), h.total.reqs, h.total.errs
		switch {
		case h.delta.reqs > 0:
			e.ErrorRate = h.delta.errs / h.delta.reqs
		case h.total.reqs > 0:
			e.ErrorRate = h.total.errs / h.total.reqs
		}
		e.LatencyP50, e.LatencyP99 = latency(0.5, h.delta.buckets), latency(0.99, h.delta.buckets)
	}
	e.MTLS = mtls(tcp, ec.http)
	return e
}

// latency is the q-quantile of the window's request durations in
// milliseconds, nil without requests in the window.
func latency(q float64, buckets map[float64]float64) *float64 {
	v, ok := quantile(q, buckets)
	if !ok {
		return nil
	}
	return &v
}

// mtls classifies the sides counted for an edge: those active in the
// window when any was (the edge's current state), else all of them.
func mtls(cs ...counts) string {
	var secure, insecure, dSecure, dInsecure int
	for _, c := range cs {
		secure, insecure = secure+c.secure, insecure+c.insecure
		dSecure, dInsecure = dSecure+c.dSecure, dInsecure+c.dInsecure
	}
	if dSecure+dInsecure > 0 {
		secure, insecure = dSecure, dInsecure
	}
	switch {
	case insecure == 0:
		return MTLS
	case secure == 0:
		return Plaintext
	}
	return Mixed
}

func nodeID(ns, name string) string {
	if name == "" || name == unknown {
		return unknown
	}
	if ns == "" {
		ns = unknown
	}
	return ns + "/" + name
}

func newNode(id string, waypoint bool) Node {
	ns, name, ok := strings.Cut(id, "/")
	if !ok {
		return Node{ID: id, Name: id}
	}
	return Node{ID: id, Namespace: ns, Name: name, Waypoint: waypoint}
}

// For is the part of g that scope may see: the edges with at least one end
// in a namespace it sees, their nodes, and the proxies (targets) of those
// namespaces. Peers without a namespace ("unknown") are shown only as the
// other end of a visible edge. Everything sees g unchanged.
func (g Graph) For(scope access.Scope) Graph {
	if scope.All() {
		return g
	}
	ns := make(map[string]string, len(g.Nodes))
	for _, n := range g.Nodes {
		ns[n.ID] = n.Namespace
	}
	out := Graph{GeneratedAt: g.GeneratedAt, WindowSeconds: g.WindowSeconds, Nodes: []Node{}, Edges: []Edge{}, Targets: []TargetStatus{}}
	shown := map[string]bool{}
	for _, e := range g.Edges {
		if scope.Sees(ns[e.Source]) || scope.Sees(ns[e.Destination]) {
			out.Edges = append(out.Edges, e)
			shown[e.Source], shown[e.Destination] = true, true
		}
	}
	for _, n := range g.Nodes {
		if shown[n.ID] {
			out.Nodes = append(out.Nodes, n)
		}
	}
	for _, t := range g.Targets {
		if scope.Sees(t.Namespace) {
			out.Targets = append(out.Targets, t)
		}
	}
	return out
}
