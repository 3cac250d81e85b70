// Package analyze finds configuration errors in a snapshot of a Weft mesh's
// objects, for `weftctl analyze`. It is pure: the snapshot comes in, the
// findings go out; no clients, no I/O, no clock.
//
// Most checks reuse the control plane's own translation
// (control/workload.Translate, then control/waypoint.Translate on its
// addresses): every Problem they report becomes a finding, classified by a
// code and a severity, so weftctl and weft-control never disagree about
// what is wrong. On top of that the analyzer checks what the translation
// cannot see: node agents missing on nodes of an ambient mesh, L7
// AuthorizationPolicies on workloads or Services without a waypoint, and
// AuthorizationPolicies that contradict each other.
package analyze

import (
	"cmp"
	"slices"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/control/unsupported"
	"github.com/weft-mesh/weft/control/waypoint"
	"github.com/weft-mesh/weft/control/workload"
	"github.com/weft-mesh/weft/pkg/mesh"
)

// Severity of a finding: errors make `weftctl analyze` exit 1.
type Severity string

// Severities.
const (
	Error   Severity = "error"
	Warning Severity = "warning"
)

// Finding codes. Translation problems that fit none of the specific codes
// get ConfigProblem.
const (
	CodeHostNotFound         = "HostNotFound"
	CodeSubsetNotFound       = "SubsetNotFound"
	CodeRouteWeights         = "RouteWeights"
	CodeInvalidRegex         = "InvalidRegex"
	CodeNodeAgentMissing     = "NodeAgentMissing"
	CodeWaypointNotFound     = "WaypointNotFound"
	CodeWaypointNotUsable    = "WaypointNotUsable"
	CodeL7PolicyNoWaypoint   = "L7PolicyWithoutWaypoint"
	CodeL7PolicySelector     = "L7PolicyWithSelector"
	CodeL7PolicyOnTCP        = "L7PolicyOnTCPPort"
	CodePolicyTargetNotFound = "PolicyTargetNotFound"
	CodePolicyContradiction  = "PolicyContradiction"
	CodeConflict             = "Conflict"
	CodeConfigProblem        = "ConfigProblem"
	// CodeUnsupported: an object of a kind Weft does not implement; it has
	// no effect (control/unsupported).
	CodeUnsupported = "Unsupported"
)

const (
	labelDataplaneMode        = mesh.LabelDataplaneMode
	dataplaneAmbient          = mesh.DataplaneAmbient
	labelGatewayName          = mesh.LabelGatewayName
	defaultNodeAgentDaemonSet = "weft-node-agent"
)

// Finding is one thing wrong with one object.
type Finding struct {
	Severity  Severity `json:"severity"`
	Kind      string   `json:"kind"`
	Namespace string   `json:"namespace,omitempty"`
	Name      string   `json:"name"`
	Code      string   `json:"code"`
	Message   string   `json:"message"`
}

// Findings is the result, sorted by severity (errors first), kind,
// namespace, name, code and message.
type Findings []Finding

// Header is the table header.
func (Findings) Header() []string {
	return []string{"SEVERITY", "KIND", "NAME", "CODE", "MESSAGE"}
}

// Rows are the table rows; NAME is namespace/name for namespaced objects.
func (fs Findings) Rows() [][]string {
	rows := make([][]string, 0, len(fs))
	for _, f := range fs {
		name := f.Name
		if f.Namespace != "" {
			name = f.Namespace + "/" + f.Name
		}
		rows = append(rows, []string{string(f.Severity), f.Kind, name, f.Code, f.Message})
	}
	return rows
}

// Errors counts the findings of severity error.
func (fs Findings) Errors() int {
	n := 0
	for _, f := range fs {
		if f.Severity == Error {
			n++
		}
	}
	return n
}

// Snapshot is what the analyzer reads. Nil entries are ignored.
type Snapshot struct {
	Namespaces            []*corev1.Namespace
	Nodes                 []*corev1.Node
	Pods                  []*corev1.Pod
	Services              []*corev1.Service
	Gateways              []*gatewayv1.Gateway
	VirtualServices       []*networkingv1.VirtualService
	DestinationRules      []*networkingv1.DestinationRule
	HTTPRoutes            []*gatewayv1.HTTPRoute
	AuthorizationPolicies []*securityv1.AuthorizationPolicy
	PeerAuthentications   []*securityv1.PeerAuthentication
	ServiceEntries        []*networkingv1.ServiceEntry
	// RequestAuthentications configure the waypoints' JWT validation.
	RequestAuthentications []*securityv1.RequestAuthentication
	// IstioGateways are networking.istio.io Gateways.
	IstioGateways []*networkingv1.Gateway
	// EnvoyFilters patch waypoints and ingress gateways (rate limiting).
	EnvoyFilters []*networkingv1alpha3.EnvoyFilter
	// Telemetries configure waypoints' and gateways' access logs and tracing.
	Telemetries []*telemetryv1.Telemetry
	// Unsupported are the objects of kinds Weft does not implement
	// (control/unsupported: Kinds and GRPCRoute).
	Unsupported []UnsupportedObject
	// NodeAgents are the node agent DaemonSet's pods (weftctl lists them
	// with app=weft-node-agent in --weft-namespace).
	NodeAgents []*corev1.Pod
}

// UnsupportedObject is an object of a kind Weft does not implement.
type UnsupportedObject struct {
	Kind            unsupported.Kind
	Namespace, Name string
}

// Options tune the analysis.
type Options struct {
	// RootNamespace is the mesh's root namespace (weft-control's); default
	// "weft-system".
	RootNamespace string
	// Namespace, if set, keeps only the findings about objects of that
	// namespace (and about the Namespace itself). The snapshot should still
	// hold every namespace: references cross namespaces.
	Namespace string
	// NodeAgentDaemonSet names the node agents in messages; default
	// "weft-node-agent".
	NodeAgentDaemonSet string
}

// Analyze returns the findings for the snapshot.
func Analyze(s Snapshot, o Options) Findings {
	if o.RootNamespace == "" {
		o.RootNamespace = mesh.SystemNamespace
	}
	if o.NodeAgentDaemonSet == "" {
		o.NodeAgentDaemonSet = defaultNodeAgentDaemonSet
	}
	a := newAnalyzer(s, o)
	a.translationProblems()
	a.unsupportedKinds()
	a.nodeAgents()
	a.authorizationPolicies()
	return a.result()
}

type analyzer struct {
	s        Snapshot
	o        Options
	wout     workload.Output
	pout     waypoint.Output
	findings map[Finding]struct{}
	// services by "<ns>/<name>".
	services map[string]*corev1.Service
	// waypoints: Gateways of class weft-waypoint by "<ns>/<name>".
	waypoints map[string]*gatewayv1.Gateway
}

func newAnalyzer(s Snapshot, o Options) *analyzer {
	wcfg := workload.Config{RootNamespace: o.RootNamespace}
	wout := workload.Translate(wcfg, workload.Inputs{
		Namespaces:            s.Namespaces,
		Pods:                  s.Pods,
		Services:              s.Services,
		AuthorizationPolicies: s.AuthorizationPolicies,
		PeerAuthentications:   s.PeerAuthentications,
		Gateways:              s.Gateways,
		ServiceEntries:        s.ServiceEntries,
	})
	pout := waypoint.Translate(waypoint.Config{Config: wcfg}, waypoint.Inputs{
		Addresses:              wout.Addresses,
		Services:               s.Services,
		Pods:                   s.Pods,
		VirtualServices:        s.VirtualServices,
		DestinationRules:       s.DestinationRules,
		HTTPRoutes:             s.HTTPRoutes,
		AuthorizationPolicies:  s.AuthorizationPolicies,
		RequestAuthentications: s.RequestAuthentications,
		IstioGateways:          s.IstioGateways,
		IngressGateways:        s.Gateways,
		ServiceEntries:         s.ServiceEntries,
		EnvoyFilters:           s.EnvoyFilters,
		Telemetries:            s.Telemetries,
	})
	a := &analyzer{s: s, o: o, wout: wout, pout: pout, findings: map[Finding]struct{}{},
		services: map[string]*corev1.Service{}, waypoints: map[string]*gatewayv1.Gateway{}}
	for _, svc := range s.Services {
		if svc != nil {
			a.services[svc.Namespace+"/"+svc.Name] = svc
		}
	}
	for _, gw := range s.Gateways {
		if gw != nil && workload.IsWaypointClass(string(gw.Spec.GatewayClassName)) {
			a.waypoints[gw.Namespace+"/"+gw.Name] = gw
		}
	}
	return a
}

func (a *analyzer) add(sev Severity, kind, ns, name, code, msg string) {
	a.findings[Finding{Severity: sev, Kind: kind, Namespace: ns, Name: name, Code: code, Message: msg}] = struct{}{}
}

func (a *analyzer) result() Findings {
	out := make(Findings, 0, len(a.findings))
	for f := range a.findings {
		if ns := a.o.Namespace; ns != "" && f.Namespace != ns && !(f.Kind == "Namespace" && f.Name == ns) {
			continue
		}
		out = append(out, f)
	}
	rank := func(s Severity) int {
		if s == Error {
			return 0
		}
		return 1
	}
	slices.SortFunc(out, func(x, y Finding) int {
		return cmp.Or(cmp.Compare(rank(x.Severity), rank(y.Severity)), cmp.Compare(x.Kind, y.Kind),
			cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name), cmp.Compare(x.Code, y.Code),
			cmp.Compare(x.Message, y.Message))
	})
	return out
}
