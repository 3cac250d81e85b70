package waypoint

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/weft-mesh/weft/control/workload"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/weftctl/internal/output"
)

// Use is one object whose istio.io/use-waypoint label names a waypoint.
type Use struct {
	Kind      string `json:"kind"` // Namespace, Service or Pod
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

func (u Use) String() string {
	switch u.Kind {
	case "Namespace":
		return "namespace/" + u.Name
	case "Service":
		return "service/" + u.Name
	}
	return strings.ToLower(u.Kind) + "/" + u.Name
}

// Labelled is an object's identity and labels, whatever its kind.
type Labelled struct {
	Kind, Namespace, Name string
	Labels                map[string]string
}

// Uses returns the objects whose labels name the waypoint ns/name
// (istio.io/use-waypoint, with istio.io/use-waypoint-namespace or the
// object's own namespace), as the translation resolves them.
func Uses(ns, name string, objs []Labelled) []Use {
	var out []Use
	for _, o := range objs {
		if refersTo(o, ns, name) {
			u := Use{Kind: o.Kind, Name: o.Name}
			if o.Kind != "Namespace" {
				u.Namespace = o.Namespace
			}
			out = append(out, u)
		}
	}
	slices.SortFunc(out, func(a, b Use) int {
		return cmp.Or(cmp.Compare(kindOrder(a.Kind), kindOrder(b.Kind)), strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return out
}

func refersTo(o Labelled, ns, name string) bool {
	if o.Labels[LabelUseWaypoint] != name {
		return false
	}
	objNS := o.Namespace
	if o.Kind == "Namespace" {
		objNS = o.Name
	}
	if v := o.Labels[LabelUseWaypointNamespace]; v != "" {
		objNS = v
	}
	return objNS == ns
}

func kindOrder(k string) int {
	switch k {
	case "Namespace":
		return 0
	case "Service":
		return 1
	}
	return 2
}

// Row is one waypoint of `waypoint list`.
type Row struct {
	Namespace      string `json:"namespace"`
	Name           string `json:"name"`
	For            string `json:"for"`
	ServiceAccount string `json:"serviceAccount,omitempty"` // --service-account it was made for
	Programmed     string `json:"programmed"`               // True, False or Unknown
	Address        string `json:"address,omitempty"`
	UsedBy         []Use  `json:"usedBy"`
}

// List is `waypoint list`'s output.
type List []Row

// Rows builds the listing: the Gateways of class weft-waypoint, with what
// labels them.
func Rows(gws []gatewayv1.Gateway, objs []Labelled) List {
	out := List{}
	for _, gw := range gws {
		if !workload.IsWaypointClass(string(gw.Spec.GatewayClassName)) {
			continue
		}
		r := Row{Namespace: gw.Namespace, Name: gw.Name, For: cmp.Or(gw.Labels[LabelWaypointFor], ForService),
			ServiceAccount: gw.Annotations[AnnotationServiceAccount], Programmed: "Unknown", UsedBy: Uses(gw.Namespace, gw.Name, objs)}
		if c := condition(gw.Status.Conditions, string(gatewayv1.GatewayConditionProgrammed)); c != nil && c.ObservedGeneration == gw.Generation {
			r.Programmed = string(c.Status)
		}
		if r.UsedBy == nil {
			r.UsedBy = []Use{}
		}
		var addrs []string
		for _, a := range gw.Status.Addresses {
			addrs = append(addrs, a.Value)
		}
		r.Address = strings.Join(addrs, ",")
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Row) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return out
}

func condition(cs []metav1.Condition, typ string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}

// Header implements output.Tabular.
func (l List) Header() []string {
	return []string{"NAMESPACE", "NAME", "FOR", "PROGRAMMED", "ADDRESS", "USED BY"}
}

// Rows implements output.Tabular.
func (l List) Rows() [][]string {
	var out [][]string
	for _, r := range l {
		var uses []string
		for _, u := range r.UsedBy {
			uses = append(uses, u.String())
		}
		f := r.For
		if r.ServiceAccount != "" {
			f += " (sa " + r.ServiceAccount + ")"
		}
		out = append(out, []string{r.Namespace, r.Name, f, r.Programmed, r.Address, strings.Join(uses, ",")})
	}
	return out
}

// Condition is one row of `waypoint status`.
type Condition struct {
	Object             string    `json:"object"` // "Gateway" or "listener <name>"
	Type               string    `json:"type"`
	Status             string    `json:"status"`
	Reason             string    `json:"reason,omitempty"`
	Message            string    `json:"message,omitempty"`
	ObservedGeneration int64     `json:"observedGeneration"`
	Current            bool      `json:"current"` // observed the Gateway's latest generation
	LastTransitionTime time.Time `json:"lastTransitionTime"`
}

// Status is `waypoint status`'s output.
type Status struct {
	Namespace  string      `json:"namespace"`
	Name       string      `json:"name"`
	Generation int64       `json:"generation"`
	Addresses  []string    `json:"addresses"`
	Conditions []Condition `json:"conditions"`
	now        time.Time
}

// StatusOf reads a Gateway's conditions (the Gateway's, then each
// listener's).
func StatusOf(gw *gatewayv1.Gateway, now time.Time) Status {
	s := Status{Namespace: gw.Namespace, Name: gw.Name, Generation: gw.Generation, Addresses: []string{}, Conditions: []Condition{}, now: now}
	for _, a := range gw.Status.Addresses {
		s.Addresses = append(s.Addresses, a.Value)
	}
	add := func(obj string, cs []metav1.Condition) {
		for _, c := range cs {
			s.Conditions = append(s.Conditions, Condition{Object: obj, Type: c.Type, Status: string(c.Status), Reason: c.Reason,
				Message: c.Message, ObservedGeneration: c.ObservedGeneration, Current: c.ObservedGeneration == gw.Generation,
				LastTransitionTime: c.LastTransitionTime.Time})
		}
	}
	add("Gateway", gw.Status.Conditions)
	for _, l := range gw.Status.Listeners {
		add("listener "+string(l.Name), l.Conditions)
	}
	return s
}

// Header implements output.Tabular.
func (s Status) Header() []string {
	return []string{"OBJECT", "TYPE", "STATUS", "REASON", "MESSAGE", "AGE"}
}

// Rows implements output.Tabular.
func (s Status) Rows() [][]string {
	now := s.now
	if now.IsZero() {
		now = time.Now()
	}
	var out [][]string
	for _, c := range s.Conditions {
		st := c.Status
		if !c.Current {
			st += fmt.Sprintf(" (stale: generation %d of %d)", c.ObservedGeneration, s.Generation)
		}
		out = append(out, []string{c.Object, c.Type, st, c.Reason, c.Message, output.Age(now.Sub(c.LastTransitionTime))})
	}
	return out
}

// LabelledObjects adapts namespaces, services and pods.
func LabelledObjects(nss []corev1.Namespace, svcs []corev1.Service, pods []corev1.Pod) []Labelled {
	var out []Labelled
	for _, n := range nss {
		out = append(out, Labelled{Kind: "Namespace", Name: n.Name, Labels: n.Labels})
	}
	for _, s := range svcs {
		out = append(out, Labelled{Kind: "Service", Namespace: s.Namespace, Name: s.Name, Labels: s.Labels})
	}
	for _, p := range pods {
		out = append(out, Labelled{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, Labels: p.Labels})
	}
	return out
}
