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
}

// TargetStatus says whether a target was scraped.
type TargetStatus struct {
	Target
	OK        bool      `json:"ok"`
	Error     string    `json:"error,omitempty"`
	ScrapedAt time.Time `json:"scrapedAt"`
}

// counts accumulates one kind of sample (TCP per reporter, or HTTP) of an
// edge: window deltas and totals.
type counts struct {
	present                              bool
	opened, closed, bytes, reqs, errs    float64 // totals
	dOpened, dBytes, dReqs, dErrs        float64 // deltas over the window
	secure, insecure, dSecure, dInsecure int     // series by security (all, active in the window)
}

func (c *counts) add(metric string, labels map[string]string, total, delta float64) {
	c.present = true
	switch metric {
	case metricTCPOpened:
		c.opened += total
		c.dOpened += delta
	case metricTCPClosed:
		c.closed += total
	case metricTCPSent, metricTCPReceived:
		c.bytes += total
		c.dBytes += delta
	case metricRequests:
		c.reqs += total
		c.dReqs += delta
		if strings.HasPrefix(labels["response_code"], "5") {
			c.errs += total
			c.dErrs += delta
		}
	}
	secure := labels["connection_security_policy"] == securityMutualTLS
	if secure {
		c.secure++
	} else {
		c.insecure++
	}
	if delta > 0 {
		if secure {
			c.dSecure++
		} else {
			c.dInsecure++
		}
	}
}

type edgeCounts struct{ dst, src, http counts }

// Build turns the previous and current scrapes of every target into the
// graph. Rates come from targets scraped successfully both times; a
// counter that went down (the proxy restarted) counts from zero, never
// negative. TCP edges count the destination proxy's samples, the source's
// only when no destination reported the edge, so a connection is counted
// once; HTTP comes from waypoints.
func Build(prev, cur []Scrape, now time.Time) Graph {
	g := Graph{GeneratedAt: now, Nodes: []Node{}, Edges: []Edge{}, Targets: []TargetStatus{}}
	t := tally(prev, cur)
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
		e, ok := newEdge(k, ec, rate)
		if !ok {
			continue // only HTTP samples of other reporters
		}
		g.Edges = append(g.Edges, e)
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

// tallied is what tally reads from the scrapes.
type tallied struct {
	targets   []TargetStatus
	waypoints map[string]bool // "<namespace>/<workload>" of waypoint targets
	edges     map[[2]string]*edgeCounts
	window    time.Duration // the longest time between two scrapes of a target
}

// tally counts the current scrapes' samples per edge, with their increase
// since the target's previous successful scrape (none without one).
func tally(prev, cur []Scrape) tallied {
	before := make(map[string]Scrape, len(prev))
	for _, s := range prev {
		if s.Err == nil {
			before[s.Target.key()] = s
		}
	}
	t := tallied{waypoints: map[string]bool{}, edges: map[[2]string]*edgeCounts{}}
	for _, s := range cur {
		st := TargetStatus{Target: s.Target, OK: s.Err == nil, ScrapedAt: s.Time}
		if s.Target.Kind == KindWaypoint && s.Target.Workload != "" {
			t.waypoints[s.Target.Namespace+"/"+s.Target.Workload] = true
		}
		if s.Err != nil {
			st.Error = s.Err.Error()
			t.targets = append(t.targets, st)
			continue
		}
		t.targets = append(t.targets, st)
		p, havePrev := before[s.Target.key()]
		var old map[string]float64
		if havePrev && s.Time.After(p.Time) {
			old = make(map[string]float64, len(p.Samples))
			for _, ps := range p.Samples {
				old[seriesKey(ps)] = ps.Value
			}
			t.window = max(t.window, s.Time.Sub(p.Time))
		}
		addSamples(t.edges, s.Samples, old)
	}
	return t
}

// addSamples adds each sample to its edge's counts by reporter: HTTP from
// waypoints, TCP from the destination or source proxy; other samples are
// not counted. old holds the previous values by series (nil: no deltas).
func addSamples(edges map[[2]string]*edgeCounts, samples []Sample, old map[string]float64) {
	for _, smp := range samples {
		var c *counts
		ec := edgeFor(edges, smp.Labels)
		switch {
		case smp.Metric == metricRequests && smp.Labels["reporter"] == reporterWaypoint:
			c = &ec.http
		case smp.Metric == metricRequests:
			continue
		case smp.Labels["reporter"] == reporterDestination:
			c = &ec.dst
		case smp.Labels["reporter"] == reporterSource:
			c = &ec.src
		default:
			continue
		}
		var delta float64
		if old != nil {
			delta = increase(old, smp)
		}
		c.add(smp.Metric, smp.Labels, smp.Value, delta)
	}
}

// newEdge is the edge k of ec's counts, with rates from rate; false when
// ec has neither TCP samples nor waypoint HTTP samples.
func newEdge(k [2]string, ec *edgeCounts, rate func(float64) float64) (Edge, bool) {
	tcp, reporter := ec.dst, reporterDestination
	if !tcp.present {
		tcp, reporter = ec.src, reporterSource
	}
	if !tcp.present && !ec.http.present {
		return Edge{}, false
	}
	e := Edge{ID: k[0] + "->" + k[1], Source: k[0], Destination: k[1], Protocol: "tcp",
		ConnectionsPerSecond: rate(tcp.dOpened), BytesPerSecond: rate(tcp.dBytes),
		OpenConnections: max(tcp.opened-tcp.closed, 0), Connections: tcp.opened, Bytes: tcp.bytes}
	if tcp.present {
		e.Reporter = reporter
	}
	h := ec.http
	if h.present {
		e.Protocol = "http"
		e.RequestsPerSecond, e.Requests, e.Errors = rate(h.dReqs), h.reqs, h.errs
		switch {
		case h.dReqs > 0:
			e.ErrorRate = h.dErrs / h.dReqs
		case h.reqs > 0:
			e.ErrorRate = h.errs / h.reqs
		}
	}
	e.MTLS = mtls(tcp, h)
	return e, true
}

// mtls classifies the series counted for an edge: those active in the
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

// increase is the counter's growth since old, treating a decrease as a
// reset (the new value counted from zero) and a new series as grown from
// zero: the proxies create a series on its first observation.
func increase(old map[string]float64, s Sample) float64 {
	v, ok := old[seriesKey(s)]
	if !ok || s.Value < v {
		return s.Value
	}
	return s.Value - v
}

func edgeFor(edges map[[2]string]*edgeCounts, l map[string]string) *edgeCounts {
	k := [2]string{
		nodeID(l["source_workload_namespace"], l["source_workload"]),
		nodeID(l["destination_workload_namespace"], l["destination_workload"]),
	}
	ec := edges[k]
	if ec == nil {
		ec = &edgeCounts{}
		edges[k] = ec
	}
	return ec
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

func seriesKey(s Sample) string {
	keys := make([]string, 0, len(s.Labels))
	for k := range s.Labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString(s.Metric)
	for _, k := range keys {
		b.WriteString("\x00" + k + "\x00" + s.Labels[k])
	}
	return b.String()
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
