// Package nodeconfig decodes a node agent's admin dumps (/config_dump and
// /connections, see node-agent/agent/admin.go) and turns them into
// weftctl's listings. Pure functions: the fetching is elsewhere.
package nodeconfig

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/pkg/mesh"
	"github.com/weft-mesh/weft/weftctl/internal/output"
)

// Dump is a decoded /config_dump.
type Dump struct {
	Synced         bool
	Version        uint64
	Workloads      []*workloadv1.Workload
	Services       []*workloadv1.Service
	Authorizations []*workloadv1.Authorization
	Certificates   []Certificate
	Enrolled       []string
}

// Certificate is one entry of the dump's certificates (identity, serial
// and validity only: the agent never exports keys or PEM).
type Certificate struct {
	ID                  string    `json:"id"`
	Serial              string    `json:"serial,omitempty"`
	NotBefore           time.Time `json:"notBefore,omitzero"`
	NotAfter            time.Time `json:"notAfter,omitzero"`
	NextRefresh         time.Time `json:"nextRefresh,omitzero"`
	LastError           string    `json:"lastError,omitempty"`
	ConsecutiveFailures int       `json:"consecutiveFailures,omitempty"`
}

type rawDump struct {
	XDS struct {
		Synced bool `json:"synced"`
	} `json:"xds"`
	Config struct {
		Version        uint64                     `json:"version"`
		Workloads      map[string]json.RawMessage `json:"workloads"`
		Services       map[string]json.RawMessage `json:"services"`
		Authorizations map[string]json.RawMessage `json:"authorizations"`
	} `json:"config"`
	Certificates []Certificate `json:"certificates"`
	Enrolled     []string      `json:"enrolled"`
}

// ParseDump decodes /config_dump's body.
func ParseDump(b []byte) (*Dump, error) {
	var raw rawDump
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("decode config dump: %w", err)
	}
	d := &Dump{Synced: raw.XDS.Synced, Version: raw.Config.Version, Certificates: raw.Certificates, Enrolled: raw.Enrolled}
	un := protojson.UnmarshalOptions{DiscardUnknown: true}
	for name, m := range raw.Config.Workloads {
		w := &workloadv1.Workload{}
		if err := un.Unmarshal(m, w); err != nil {
			return nil, fmt.Errorf("decode workload %s: %w", name, err)
		}
		d.Workloads = append(d.Workloads, w)
	}
	for name, m := range raw.Config.Services {
		s := &workloadv1.Service{}
		if err := un.Unmarshal(m, s); err != nil {
			return nil, fmt.Errorf("decode service %s: %w", name, err)
		}
		d.Services = append(d.Services, s)
	}
	for name, m := range raw.Config.Authorizations {
		a := &workloadv1.Authorization{}
		if err := un.Unmarshal(m, a); err != nil {
			return nil, fmt.Errorf("decode authorization %s: %w", name, err)
		}
		d.Authorizations = append(d.Authorizations, a)
	}
	slices.SortFunc(d.Workloads, func(a, b *workloadv1.Workload) int {
		return cmp.Or(strings.Compare(a.GetNamespace(), b.GetNamespace()), strings.Compare(a.GetName(), b.GetName()), strings.Compare(a.GetUid(), b.GetUid()))
	})
	slices.SortFunc(d.Services, func(a, b *workloadv1.Service) int {
		return cmp.Or(strings.Compare(a.GetNamespace(), b.GetNamespace()), strings.Compare(a.GetHostname(), b.GetHostname()))
	})
	slices.SortFunc(d.Authorizations, func(a, b *workloadv1.Authorization) int {
		return cmp.Or(strings.Compare(a.GetNamespace(), b.GetNamespace()), strings.Compare(a.GetName(), b.GetName()))
	})
	slices.SortFunc(d.Certificates, func(a, b Certificate) int { return strings.Compare(a.ID, b.ID) })
	return d, nil
}

// Filter narrows the listings.
type Filter struct {
	Namespace    string // "" = all
	WorkloadNode string // workloads only: "" = every node
}

// Identity is a workload's SPIFFE ID.
func Identity(w *workloadv1.Workload) string {
	sa := cmp.Or(w.GetServiceAccount(), "default")
	return "spiffe://" + cmp.Or(w.GetTrustDomain(), mesh.DefaultTrustDomain) + "/ns/" + w.GetNamespace() + "/sa/" + sa
}

// waypointName renders a GatewayAddress ("<ns>/<host>" hostnames as the
// host).
func waypointName(g *workloadv1.GatewayAddress) string {
	if g == nil {
		return ""
	}
	if h := g.GetHostname(); h != "" {
		if _, host, ok := strings.Cut(h, "/"); ok {
			return host
		}
		return h
	}
	return g.GetAddress()
}

// WorkloadRow is one workload.
type WorkloadRow struct {
	Name           string   `json:"name"`
	Namespace      string   `json:"namespace"`
	IPs            []string `json:"ips"`
	Node           string   `json:"node"`
	ServiceAccount string   `json:"serviceAccount"`
	Identity       string   `json:"identity"`
	Protocol       string   `json:"protocol"` // HBONE (in the mesh) or NONE
	Waypoint       string   `json:"waypoint,omitempty"`
	Enrolled       bool     `json:"enrolled"` // captured by this node's agent
	UID            string   `json:"uid"`
}

// Workloads is `node-config workloads`.
type Workloads []WorkloadRow

// WorkloadRows lists the workloads the agent knows.
func WorkloadRows(d *Dump, f Filter) Workloads {
	enrolled := map[string]bool{}
	for _, ip := range d.Enrolled {
		enrolled[ip] = true
	}
	out := Workloads{}
	for _, w := range d.Workloads {
		if (f.Namespace != "" && w.GetNamespace() != f.Namespace) || (f.WorkloadNode != "" && w.GetNode() != f.WorkloadNode) {
			continue
		}
		r := WorkloadRow{Name: w.GetName(), Namespace: w.GetNamespace(), IPs: append([]string{}, w.GetAddresses()...), Node: w.GetNode(),
			ServiceAccount: cmp.Or(w.GetServiceAccount(), "default"), Identity: Identity(w), Protocol: w.GetTunnelProtocol().String(),
			Waypoint: waypointName(w.GetWaypoint()), UID: w.GetUid()}
		for _, ip := range r.IPs {
			r.Enrolled = r.Enrolled || enrolled[ip]
		}
		out = append(out, r)
	}
	return out
}

// Header implements output.Tabular.
func (Workloads) Header() []string {
	return []string{"NAMESPACE", "NAME", "IP", "NODE", "IDENTITY", "PROTOCOL", "WAYPOINT"}
}

// Rows implements output.Tabular.
func (ws Workloads) Rows() [][]string {
	var out [][]string
	for _, w := range ws {
		out = append(out, []string{w.Namespace, w.Name, strings.Join(w.IPs, ","), w.Node, w.Identity, w.Protocol, w.Waypoint})
	}
	return out
}

// ServiceRow is one service.
type ServiceRow struct {
	Name      string   `json:"name"`
	Namespace string   `json:"namespace"`
	Hostname  string   `json:"hostname"`
	VIPs      []string `json:"vips"`
	Ports     []string `json:"ports"` // "<port>" or "<port>:<target>"
	Waypoint  string   `json:"waypoint,omitempty"`
	Endpoints int      `json:"endpoints"` // workloads that list the service
	Healthy   int      `json:"healthy"`
}

// Services is `node-config services`.
type Services []ServiceRow

// ServiceRows lists the services the agent knows, with their endpoint
// counts from the workloads.
func ServiceRows(d *Dump, f Filter) Services {
	type count struct{ all, healthy int }
	counts := map[string]*count{}
	for _, w := range d.Workloads {
		for key := range w.GetServices() {
			c := counts[key]
			if c == nil {
				c = &count{}
				counts[key] = c
			}
			c.all++
			if w.GetStatus() == workloadv1.WorkloadStatus_HEALTHY {
				c.healthy++
			}
		}
	}
	out := Services{}
	for _, s := range d.Services {
		if f.Namespace != "" && s.GetNamespace() != f.Namespace {
			continue
		}
		r := ServiceRow{Name: s.GetName(), Namespace: s.GetNamespace(), Hostname: s.GetHostname(),
			VIPs: append([]string{}, s.GetAddresses()...), Ports: []string{}, Waypoint: waypointName(s.GetWaypoint())}
		for _, p := range s.GetPorts() {
			if p.GetTargetPort() == 0 || p.GetTargetPort() == p.GetServicePort() {
				r.Ports = append(r.Ports, strconv.Itoa(int(p.GetServicePort())))
			} else {
				r.Ports = append(r.Ports, fmt.Sprintf("%d:%d", p.GetServicePort(), p.GetTargetPort()))
			}
		}
		if c := counts[s.GetNamespace()+"/"+s.GetHostname()]; c != nil {
			r.Endpoints, r.Healthy = c.all, c.healthy
		}
		out = append(out, r)
	}
	return out
}

// Header implements output.Tabular.
func (Services) Header() []string {
	return []string{"NAMESPACE", "HOSTNAME", "VIPS", "PORTS", "WAYPOINT", "ENDPOINTS"}
}

// Rows implements output.Tabular.
func (ss Services) Rows() [][]string {
	var out [][]string
	for _, s := range ss {
		out = append(out, []string{s.Namespace, s.Hostname, strings.Join(s.VIPs, ","), strings.Join(s.Ports, ","), s.Waypoint,
			fmt.Sprintf("%d/%d", s.Healthy, s.Endpoints)})
	}
	return out
}

// PolicyRow is one L4 authorization policy.
type PolicyRow struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Scope     string `json:"scope"`
	Action    string `json:"action"`
	Rules     int    `json:"rules"`
	// Summary renders the rules ("" = matches everything for ALLOW with
	// one empty rule, nothing with no rules).
	Summary string `json:"summary"`
}

// Policies is `node-config policies`.
type Policies []PolicyRow

// PolicyRows lists the authorization policies the agent enforces.
func PolicyRows(d *Dump, f Filter) Policies {
	out := Policies{}
	for _, a := range d.Authorizations {
		if f.Namespace != "" && a.GetNamespace() != f.Namespace {
			continue
		}
		out = append(out, PolicyRow{Name: a.GetName(), Namespace: a.GetNamespace(), Scope: a.GetScope().String(),
			Action: a.GetAction().String(), Rules: len(a.GetRules()), Summary: summarize(a)})
	}
	return out
}

func summarize(a *workloadv1.Authorization) string {
	if len(a.GetRules()) == 0 {
		return "(no rules: matches nothing)"
	}
	var rules []string
	for _, r := range a.GetRules() {
		var clauses []string
		for _, c := range r.GetClauses() {
			var ms []string
			for _, m := range c.GetMatches() {
				ms = append(ms, matchString(m))
			}
			clauses = append(clauses, strings.Join(ms, " or "))
		}
		if len(clauses) == 0 {
			rules = append(rules, "any")
			continue
		}
		rules = append(rules, strings.Join(clauses, " and "))
	}
	return strings.Join(rules, "; ")
}

func matchString(m *workloadv1.Match) string {
	var parts []string
	str := func(label string, ss []*workloadv1.StringMatch) {
		if len(ss) == 0 {
			return
		}
		var vs []string
		for _, s := range ss {
			switch v := s.GetMatchType().(type) {
			case *workloadv1.StringMatch_Exact:
				vs = append(vs, v.Exact)
			case *workloadv1.StringMatch_Prefix:
				vs = append(vs, v.Prefix+"*")
			case *workloadv1.StringMatch_Suffix:
				vs = append(vs, "*"+v.Suffix)
			case *workloadv1.StringMatch_Presence:
				vs = append(vs, "*")
			}
		}
		parts = append(parts, label+"="+strings.Join(vs, "|"))
	}
	list := func(label string, vs []string) {
		if len(vs) > 0 {
			parts = append(parts, label+"="+strings.Join(vs, "|"))
		}
	}
	ports := func(label string, ps []uint32) {
		var vs []string
		for _, p := range ps {
			vs = append(vs, strconv.Itoa(int(p)))
		}
		list(label, vs)
	}
	str("principals", m.GetPrincipals())
	str("!principals", m.GetNotPrincipals())
	str("namespaces", m.GetNamespaces())
	str("!namespaces", m.GetNotNamespaces())
	list("sourceIPs", m.GetSourceIps())
	list("!sourceIPs", m.GetNotSourceIps())
	list("destIPs", m.GetDestinationIps())
	list("!destIPs", m.GetNotDestinationIps())
	ports("ports", m.GetDestinationPorts())
	ports("!ports", m.GetNotDestinationPorts())
	if len(parts) == 0 {
		return "any"
	}
	return strings.Join(parts, ",")
}

// Header implements output.Tabular.
func (Policies) Header() []string {
	return []string{"NAMESPACE", "NAME", "SCOPE", "ACTION", "RULES"}
}

// Rows implements output.Tabular.
func (ps Policies) Rows() [][]string {
	var out [][]string
	for _, p := range ps {
		out = append(out, []string{p.Namespace, p.Name, p.Scope, p.Action, p.Summary})
	}
	return out
}

// CertificateRow is one workload certificate the agent holds.
type CertificateRow struct {
	Identity    string    `json:"identity"`
	Serial      string    `json:"serial,omitempty"`
	NotBefore   time.Time `json:"notBefore,omitzero"`
	NotAfter    time.Time `json:"notAfter,omitzero"`
	ExpiresIn   string    `json:"expiresIn,omitempty"`
	State       string    `json:"state"` // VALID, EXPIRED, PENDING (no certificate yet) or ERROR
	NextRefresh time.Time `json:"nextRefresh,omitzero"`
	LastError   string    `json:"lastError,omitempty"`
}

// Certificates is `node-config certificates`.
type Certificates struct {
	List []CertificateRow
	now  time.Time
}

// MarshalJSON lists the rows.
func (c Certificates) MarshalJSON() ([]byte, error) {
	if c.List == nil {
		return []byte("[]"), nil
	}
	return json.Marshal(c.List)
}

// CertificateRows lists the certificates; now decides EXPIRES IN.
func CertificateRows(d *Dump, f Filter, now time.Time) Certificates {
	out := Certificates{List: []CertificateRow{}, now: now}
	for _, c := range d.Certificates {
		if f.Namespace != "" && !strings.Contains(c.ID, "/ns/"+f.Namespace+"/") {
			continue
		}
		r := CertificateRow{Identity: c.ID, Serial: c.Serial, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
			NextRefresh: c.NextRefresh, LastError: c.LastError}
		switch {
		case c.NotAfter.IsZero() && c.LastError != "":
			r.State = "ERROR"
		case c.NotAfter.IsZero():
			r.State = "PENDING"
		case !now.Before(c.NotAfter):
			r.State = "EXPIRED"
		default:
			r.State = "VALID"
		}
		if !c.NotAfter.IsZero() {
			r.ExpiresIn = output.Age(c.NotAfter.Sub(now).Truncate(time.Second))
		}
		out.List = append(out.List, r)
	}
	return out
}

// Header implements output.Tabular.
func (Certificates) Header() []string {
	return []string{"IDENTITY", "STATE", "SERIAL", "NOT BEFORE", "NOT AFTER", "EXPIRES IN"}
}

// Rows implements output.Tabular.
func (c Certificates) Rows() [][]string {
	ts := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	}
	var out [][]string
	for _, r := range c.List {
		state := r.State
		if r.LastError != "" {
			state += " (" + r.LastError + ")"
		}
		out = append(out, []string{r.Identity, state, r.Serial, ts(r.NotBefore), ts(r.NotAfter), r.ExpiresIn})
	}
	return out
}

// Connection is one entry of /connections.
type Connection struct {
	Direction            string    `json:"direction"`
	Src                  string    `json:"src"`
	Dst                  string    `json:"dst"`
	SourceWorkload       string    `json:"sourceWorkload,omitempty"`
	SourceNamespace      string    `json:"sourceNamespace,omitempty"`
	SourcePrincipal      string    `json:"sourcePrincipal,omitempty"`
	DestinationWorkload  string    `json:"destinationWorkload,omitempty"`
	DestinationPrincipal string    `json:"destinationPrincipal,omitempty"`
	Service              string    `json:"service,omitempty"`
	Security             string    `json:"security"`
	Tunnel               string    `json:"tunnel,omitempty"`
	Start                time.Time `json:"start"`
}

// Connections is `node-config connections`.
type Connections struct {
	List []Connection
	now  time.Time
}

// MarshalJSON lists the rows.
func (c Connections) MarshalJSON() ([]byte, error) {
	if c.List == nil {
		return []byte("[]"), nil
	}
	return json.Marshal(c.List)
}

// ParseConnections decodes /connections; namespace "" keeps all.
func ParseConnections(b []byte, f Filter, now time.Time) (Connections, error) {
	var all []Connection
	if err := json.Unmarshal(b, &all); err != nil {
		return Connections{}, fmt.Errorf("decode connections: %w", err)
	}
	out := Connections{List: []Connection{}, now: now}
	for _, c := range all {
		if f.Namespace != "" && c.SourceNamespace != f.Namespace && !strings.Contains(c.DestinationPrincipal, "/ns/"+f.Namespace+"/") {
			continue
		}
		out.List = append(out.List, c)
	}
	return out, nil
}

// Header implements output.Tabular.
func (Connections) Header() []string {
	return []string{"DIRECTION", "SOURCE", "DESTINATION", "SOURCE PRINCIPAL", "DESTINATION PRINCIPAL", "SERVICE", "SECURITY", "AGE"}
}

// Rows implements output.Tabular.
func (c Connections) Rows() [][]string {
	var out [][]string
	for _, x := range c.List {
		src, dst := x.Src, x.Dst
		if x.SourceWorkload != "" {
			src = x.SourceNamespace + "/" + x.SourceWorkload + " (" + x.Src + ")"
		}
		if x.DestinationWorkload != "" {
			dst = x.DestinationWorkload + " (" + x.Dst + ")"
		}
		out = append(out, []string{x.Direction, src, dst, x.SourcePrincipal, x.DestinationPrincipal, x.Service, x.Security,
			output.Age(c.now.Sub(x.Start))})
	}
	return out
}
