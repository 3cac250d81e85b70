// Package proxystatus joins the proxies that should be connected (node
// agent and waypoint pods) with weft-control's view of its xDS clients
// (/debug/syncz of every replica) into `weftctl proxy-status`.
package proxystatus

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/weft-mesh/weft/pkg/mesh"
	"github.com/weft-mesh/weft/weftctl/internal/output"
)

// Syncz is weft-control's /debug/syncz (control/server.Syncz; decoded
// here so that weftctl does not link the control plane).
type Syncz struct {
	Pod     string         `json:"pod"`
	Clients []ClientStatus `json:"clients"`
}

// ClientStatus is one xDS stream (control/ClientStatus).
type ClientStatus struct {
	Node      string       `json:"node"`
	Stream    int64        `json:"stream"`
	Delta     bool         `json:"delta"`
	Connected time.Time    `json:"connected"`
	Types     []TypeStatus `json:"types"`
	Synced    bool         `json:"synced"`
}

// TypeStatus is one resource type of a stream (control/TypeStatus).
type TypeStatus struct {
	Type    string `json:"type"`
	Sent    string `json:"sent"`
	Acked   string `json:"acked"`
	Latest  string `json:"latest"`
	Pending int    `json:"pending"`
	NACK    string `json:"nack,omitempty"`
}

// The states of a proxy.
const (
	Synced       = "SYNCED"        // acknowledged the latest configuration
	Stale        = "STALE"         // connected, behind the latest version
	NACKed       = "NACK"          // rejected the latest configuration
	NotConnected = "NOT CONNECTED" // no replica has a stream from it
	Unknown      = "UNKNOWN"       // a replica could not be asked
)

// Kinds of proxies.
const (
	NodeAgent = string(mesh.KindNodeAgent)
	Waypoint  = string(mesh.KindWaypoint)
	Gateway   = string(mesh.KindGateway) // ingress and egress gateways (charts/gateway)
	Other     = "other"
)

// Expected is a pod that should hold an xDS stream.
type Expected struct {
	Kind           string // NodeAgent, Waypoint or Gateway
	Namespace      string
	Pod            string
	Node           string // the pod's node
	Gateway        string // waypoints: the Gateway
	ServiceAccount string // gateways: the pod's service account
	Ready          bool
}

// NodeID is the xDS node ID the pod connects with (node-agent/agent,
// waypoint/README.md).
func (e Expected) NodeID() string {
	switch e.Kind {
	case NodeAgent:
		return mesh.NodeAgentID(e.Node).String()
	case Gateway:
		return mesh.GatewayID(e.Namespace, e.ServiceAccount, e.Pod).String()
	}
	return mesh.WaypointID(e.Namespace, e.Gateway, e.Pod).String()
}

// Replica is one weft-control pod's answer (Err when it could not be read).
type Replica struct {
	Pod   string
	Syncz *Syncz
	Err   error
}

// Row is one proxy.
type Row struct {
	Kind         string       `json:"kind"`
	Namespace    string       `json:"namespace,omitempty"`
	Pod          string       `json:"pod,omitempty"`
	Node         string       `json:"node,omitempty"`
	XDSNode      string       `json:"xdsNode"`
	ControlPlane string       `json:"controlPlane,omitempty"` // replica holding the stream
	Status       string       `json:"status"`
	Connected    time.Time    `json:"connected,omitzero"`
	Types        []TypeStatus `json:"types,omitempty"`
	Message      string       `json:"message,omitempty"`
}

// Report is `proxy-status`'s output.
type Report struct {
	Proxies []Row `json:"proxies"`
	// Errors are replicas that could not be asked.
	Errors []string `json:"errors,omitempty"`
	now    time.Time
}

// Build joins the expected pods with the replicas' clients. A proxy with
// streams on several replicas (a reconnect in progress) shows its best
// stream. Streams that match no expected pod are listed as well.
func Build(expected []Expected, replicas []Replica, now time.Time) Report {
	r := Report{Proxies: []Row{}, now: now}
	type stream struct {
		replica string
		c       ClientStatus
	}
	byNode := map[string][]stream{}
	failed := 0
	for _, rep := range replicas {
		if rep.Err != nil || rep.Syncz == nil {
			failed++
			r.Errors = append(r.Errors, fmt.Sprintf("weft-control pod %s: %v", rep.Pod, rep.Err))
			continue
		}
		for _, c := range rep.Syncz.Clients {
			byNode[c.Node] = append(byNode[c.Node], stream{replica: cmp.Or(rep.Syncz.Pod, rep.Pod), c: c})
		}
	}
	best := func(ss []stream) stream {
		slices.SortFunc(ss, func(a, b stream) int {
			return cmp.Or(cmp.Compare(rank(b.c), rank(a.c)), b.c.Connected.Compare(a.c.Connected))
		})
		return ss[0]
	}
	seen := map[string]bool{}
	for _, e := range expected {
		id := e.NodeID()
		seen[id] = true
		row := Row{Kind: e.Kind, Namespace: e.Namespace, Pod: e.Pod, Node: e.Node, XDSNode: id}
		if ss := byNode[id]; len(ss) > 0 {
			fill(&row, best(ss))
		} else if failed > 0 {
			row.Status, row.Message = Unknown, "not on the replicas that answered"
		} else {
			row.Status = NotConnected
			if !e.Ready {
				row.Message = "pod not ready"
			}
		}
		r.Proxies = append(r.Proxies, row)
	}
	for id, ss := range byNode {
		if seen[id] || id == "" {
			continue
		}
		row := Row{Kind: kindOf(id), XDSNode: id, Message: "no matching pod"}
		fill(&row, best(ss))
		r.Proxies = append(r.Proxies, row)
	}
	slices.SortFunc(r.Proxies, func(a, b Row) int {
		return cmp.Or(strings.Compare(a.Kind, b.Kind), strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Pod, b.Pod),
			strings.Compare(a.XDSNode, b.XDSNode))
	})
	slices.Sort(r.Errors)
	return r
}

func fill(row *Row, s struct {
	replica string
	c       ClientStatus
}) {
	row.ControlPlane, row.Connected, row.Types = s.replica, s.c.Connected, s.c.Types
	switch {
	case s.c.Synced:
		row.Status = Synced
	case slices.ContainsFunc(s.c.Types, func(t TypeStatus) bool { return t.NACK != "" }):
		row.Status = NACKed
		for _, t := range s.c.Types {
			if t.NACK != "" {
				row.Message = shortType(t.Type) + ": " + t.NACK
				break
			}
		}
	default:
		row.Status = Stale
	}
}

func rank(c ClientStatus) int {
	if c.Synced {
		return 2
	}
	if len(c.Types) > 0 {
		return 1
	}
	return 0
}

func kindOf(id string) string {
	switch k := mesh.KindOf(id); k {
	case mesh.KindNodeAgent, mesh.KindWaypoint, mesh.KindGateway:
		return string(k)
	}
	return Other
}

// shortType names a type URL briefly: Envoy's by their xDS service (LDS,
// RDS, CDS, EDS), Weft's by message name (Address, Authorization).
func shortType(url string) string {
	name := url[strings.LastIndex(url, ".")+1:]
	switch name {
	case "Listener":
		return "LDS"
	case "RouteConfiguration":
		return "RDS"
	case "Cluster":
		return "CDS"
	case "ClusterLoadAssignment":
		return "EDS"
	}
	return name
}

// versions renders the acknowledged versions, types with the same
// acknowledged and latest version together: "Address 9, Authorization 0",
// "CDS,EDS,LDS,RDS 12-a2d5e69b4ad5", "Address 8/9" (acked/latest).
func versions(ts []TypeStatus) string {
	type group struct {
		v     string
		types []string
	}
	var groups []*group
	for _, t := range ts {
		v := cmp.Or(t.Acked, "-")
		if t.Acked != t.Latest {
			v += "/" + cmp.Or(t.Latest, "-")
		}
		i := slices.IndexFunc(groups, func(g *group) bool { return g.v == v })
		if i < 0 {
			groups = append(groups, &group{v: v})
			i = len(groups) - 1
		}
		groups[i].types = append(groups[i].types, shortType(t.Type))
	}
	var out []string
	for _, g := range groups {
		slices.Sort(g.types)
		out = append(out, strings.Join(g.types, ",")+" "+g.v)
	}
	return strings.Join(out, ", ")
}

// Header implements output.Tabular.
func (Report) Header() []string {
	return []string{"KIND", "NAME", "NODE", "STATUS", "VERSIONS (ACKED/LATEST)", "CONTROL PLANE", "CONNECTED"}
}

// Rows implements output.Tabular.
func (r Report) Rows() [][]string {
	var out [][]string
	for _, p := range r.Proxies {
		name := p.XDSNode
		if p.Pod != "" {
			name = p.Namespace + "/" + p.Pod
		}
		vs := versions(p.Types)
		status := p.Status
		if p.Message != "" {
			status += " (" + p.Message + ")"
		}
		age := ""
		if !p.Connected.IsZero() {
			age = output.Age(r.now.Sub(p.Connected))
		}
		out = append(out, []string{p.Kind, name, p.Node, status, vs, p.ControlPlane, age})
	}
	return out
}
