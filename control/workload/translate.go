// Package workload translates cluster state (Pods, Services, Namespaces,
// Nodes, Gateways and Istio security policies) into Weft's workload-discovery
// resources: the Address and Authorization messages that the control plane
// serves to node agents over delta xDS.
//
// The translation is a pure function of its inputs: no clients, no I/O, no
// clock. It follows Istio ambient semantics (istiod's
// pilot/pkg/serviceregistry/kube/controller/ambient) so that existing
// manifests behave the same way; where Weft deliberately differs, the
// comment at the code says why. Bad input never aborts the translation: it
// becomes a Problem naming the object and field, and the affected resource
// is translated in the fail-closed direction.
//
// Where Weft departs from istiod, on purpose:
//   - terminating pods stay workloads but are UNHEALTHY (istiod looks at the
//     Ready condition only);
//   - a malformed value in an AuthorizationPolicy rule drops the ALLOW rule,
//     or the whole field of a DENY rule (istiod drops just the value, which
//     can make a DENY match less);
//   - istio.io/dry-run policies are not enforced (no dry-run at L4);
//   - a waypoint is used as soon as its Gateway exists (istiod waits for
//     the Gateway's status addresses);
//   - selector PeerAuthentications in the root namespace apply to that
//     namespace's workloads (istiod ambient ignores them, istio/istio#61023);
//   - a pod's own topology labels override its node's in its locality
//     (istiod ambient reads the node's only).
package workload

import (
	"cmp"
	"fmt"
	"slices"

	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/control/inputset"
	"github.com/weft-mesh/weft/pkg/mesh"
)

// Config holds the mesh-wide settings the translations depend on (this
// one and control/waypoint's, which adds its own to it).
type Config struct {
	// TrustDomain of workload identities; default "cluster.local".
	TrustDomain string
	// ClusterID prefixes workload uids "<cluster>//Pod/<ns>/<name>";
	// default "Kubernetes".
	ClusterID string
	// DomainSuffix of service hostnames <svc>.<ns>.svc.<suffix>; default
	// "cluster.local".
	DomainSuffix string
	// RootNamespace holds mesh-wide policies (Istio's root namespace);
	// default "weft-system".
	RootNamespace string
}

// Inputs is a snapshot of the cluster objects the translation reads.
// Nil entries are ignored.
type Inputs struct {
	Namespaces []*corev1.Namespace
	Pods       []*corev1.Pod
	Services   []*corev1.Service
	// EndpointSlices give the endpoints of Services without a selector
	// (endpointslices.go). Those of Services with one are not read: as in
	// Istio, the selected pods are the endpoints, readiness comes from the
	// Pod's Ready condition and named target ports from its container ports.
	EndpointSlices        []*discoveryv1.EndpointSlice
	AuthorizationPolicies []*securityv1.AuthorizationPolicy
	PeerAuthentications   []*securityv1.PeerAuthentication
	// Gateways of class "weft-waypoint" (or Istio's "istio-waypoint") are the waypoints that
	// istio.io/use-waypoint labels name.
	Gateways []*gatewayv1.Gateway
	// ServiceEntries become Services and endpoint Workloads (serviceentry.go).
	ServiceEntries []*networkingv1.ServiceEntry
	// Nodes give their pods' locality (their topology labels).
	Nodes []*corev1.Node
}

// Output is the translated snapshot.
type Output struct {
	// Addresses by xDS resource name: a workload's uid, or
	// "<namespace>/<hostname>" for a service.
	Addresses map[string]*workloadv1.Address
	// Authorizations by "<namespace>/<name>".
	Authorizations map[string]*workloadv1.Authorization
	// EnrolledNamespaces by name: node agents capture a new pod in one at
	// CNI ADD, before its Workload arrives.
	EnrolledNamespaces map[string]*workloadv1.EnrolledNamespace
	// Problems found in the input, sorted; at most one per object and message.
	Problems []Problem
}

// Problem reports bad or unsupported input on one object.
type Problem struct {
	Kind      string // e.g. "AuthorizationPolicy"
	Namespace string // empty for cluster-scoped objects
	Name      string
	Message   string
}

func (p Problem) String() string {
	if p.Namespace == "" {
		return fmt.Sprintf("%s %s: %s", p.Kind, p.Name, p.Message)
	}
	return fmt.Sprintf("%s %s/%s: %s", p.Kind, p.Namespace, p.Name, p.Message)
}

// Label and annotation keys shared with Istio, so that users' manifests and
// habits carry over.
const (
	labelDataplaneMode        = mesh.LabelDataplaneMode
	labelUseWaypoint          = mesh.LabelUseWaypoint
	labelUseWaypointNamespace = mesh.LabelUseWaypointNamespace
	labelWaypointFor          = mesh.LabelWaypointFor
	labelGatewayName          = mesh.LabelGatewayName
	annotationLoadBalancing   = "weft.io/load-balancing"
	annotationDryRun          = mesh.AnnotationDryRun

	dataplaneAmbient = mesh.DataplaneAmbient
	dataplaneNone    = mesh.DataplaneNone

	// WaypointGatewayClass is the GatewayClass of Weft's waypoints.
	WaypointGatewayClass = mesh.WaypointClass
	// IstioWaypointGatewayClass is Istio's waypoint class, accepted too so
	// that manifests written for Istio ambient work unchanged.
	IstioWaypointGatewayClass = "istio-waypoint"
)

// Translate converts the cluster snapshot into workload-discovery resources.
// The result depends only on the inputs (not on their order).
func Translate(cfg Config, in Inputs) Output {
	return NewTranslator(cfg).Translate(in)
}

// enrolledNamespaces are the namespaces whose pods join the mesh unless
// they opt out (the namespace half of enrolled), by name.
func enrolledNamespaces(nss []*corev1.Namespace) map[string]*workloadv1.EnrolledNamespace {
	out := map[string]*workloadv1.EnrolledNamespace{}
	for _, ns := range nss {
		if ns != nil && mesh.Enrolled(nil, ns.Labels) {
			out[ns.Name] = &workloadv1.EnrolledNamespace{Name: ns.Name}
		}
	}
	return out
}

// WithDefaults is cfg with each unset field set to its default.
func (cfg Config) WithDefaults() Config {
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = mesh.DefaultTrustDomain
	}
	if cfg.ClusterID == "" {
		cfg.ClusterID = mesh.DefaultClusterID
	}
	if cfg.DomainSuffix == "" {
		cfg.DomainSuffix = mesh.DefaultDomainSuffix
	}
	if cfg.RootNamespace == "" {
		cfg.RootNamespace = mesh.SystemNamespace
	}
	return cfg
}

// translator carries the indexes built from the inputs through one
// Translate call. It is never shared between calls.
type translator struct {
	cfg Config

	namespaces map[string]*corev1.Namespace
	nodes      map[string]*corev1.Node
	waypoints  map[string]*waypoint // "<ns>/<name>"
	// nsWaypoints caches each namespace's use-waypoint resolution.
	nsWaypoints map[string]*waypoint
	// services that select pods, by namespace, sorted by name.
	selectingServices map[string][]*meshService
	// selectorlessServices by "<ns>/<name>": their EndpointSlices list
	// their endpoints.
	selectorlessServices map[string]*meshService
	// slicePods are selectorless Services' endpoints naming a pod, by
	// "<ns>/<pod>", until the pod's workload takes them.
	slicePods map[string][]sliceEndpoint
	// WORKLOAD_SELECTOR policies by namespace; the root namespace's apply
	// to every namespace.
	selectorPolicies map[string][]selectorPolicy
	peerAuth         peerAuthIndex

	// allocated are ServiceEntry hosts' VIPs (AllocateAddresses).
	allocated      map[string][]*networkingapi.ServiceEntryAddress
	addresses      map[string]*workloadv1.Address
	authorizations map[string]*workloadv1.Authorization
	// problems in the order found, repeats included (sortedProblems
	// sorts and dedups): a pod's are the ones its translation appended.
	problems []Problem
	// context is what pods' workloads read besides the pods themselves
	// (see Translator).
	context *inputset.Set
}

func newTranslator(cfg Config, in Inputs) *translator {
	return &translator{
		cfg:                  cfg,
		namespaces:           make(map[string]*corev1.Namespace, len(in.Namespaces)),
		nodes:                make(map[string]*corev1.Node, len(in.Nodes)),
		waypoints:            make(map[string]*waypoint),
		nsWaypoints:          make(map[string]*waypoint),
		selectingServices:    make(map[string][]*meshService),
		selectorlessServices: make(map[string]*meshService),
		slicePods:            make(map[string][]sliceEndpoint),
		selectorPolicies:     make(map[string][]selectorPolicy),
		addresses:            make(map[string]*workloadv1.Address, len(in.Pods)+len(in.Services)),
		authorizations:       make(map[string]*workloadv1.Authorization),
		context:              inputset.New(),
	}
}

func (t *translator) indexNamespaces(nss []*corev1.Namespace) {
	for _, ns := range nss {
		if ns != nil {
			t.namespaces[ns.Name] = ns
		}
	}
}

// namespaceLabels returns the labels of a namespace, nil if it is unknown.
func (t *translator) namespaceLabels(ns string) map[string]string {
	if n := t.namespaces[ns]; n != nil {
		return n.Labels
	}
	return nil
}

func (t *translator) problem(kind, ns, name, format string, args ...any) {
	t.problems = append(t.problems, Problem{Kind: kind, Namespace: ns, Name: name, Message: fmt.Sprintf(format, args...)})
}

func (t *translator) sortedProblems() []Problem {
	if len(t.problems) == 0 {
		return nil
	}
	out := slices.Clone(t.problems)
	slices.SortFunc(out, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace),
			cmp.Compare(a.Name, b.Name), cmp.Compare(a.Message, b.Message))
	})
	out = slices.Compact(out)
	return out
}

// selects reports whether every selector label is present in labels. An
// empty selector selects nothing here: callers decide what "no selector"
// means for their object.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 || len(selector) > len(labels) {
		return false
	}
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

func key(ns, name string) string { return ns + "/" + name }

// IsWaypointClass reports whether a Gateway of this class is a waypoint.
func IsWaypointClass(class string) bool {
	return class == WaypointGatewayClass || class == IstioWaypointGatewayClass
}
