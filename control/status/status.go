// Package status reports on every object Weft reads whether Weft accepted
// it: a WeftAccepted condition, with a validationMessages entry in the
// shape of Istio's analysis, on each Istio object (AuthorizationPolicy,
// PeerAuthentication, RequestAuthentication, EnvoyFilter, Telemetry, ServiceEntry,
// VirtualService, DestinationRule, Istio Gateway, and every kind Weft does
// not implement), and Weft's parent
// entries on GAMMA HTTPRoutes. Conditions come from the translations'
// problems and are written only when they change, through a client that
// client-go rate-limits. Run it on the leader only.
package status

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	analysisv1alpha1 "istio.io/api/analysis/v1alpha1"
	metav1alpha1 "istio.io/api/meta/v1alpha1"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/weft-mesh/weft/control/workload"
)

// ConditionType is the condition Weft sets on the objects it translates.
const ConditionType = "WeftAccepted"

// Reasons of the condition.
const (
	ReasonAccepted = "Accepted"
	// ReasonPartiallyInvalid: some of the object could not be enforced as
	// written (L7 attributes at L4, bad values); what could was, fail closed.
	ReasonPartiallyInvalid = "PartiallyInvalid"
	// ReasonUnsupported: Weft does not implement the kind; the object has
	// no effect.
	ReasonUnsupported = "Unsupported"
)

// Condition is the desired condition of one object (without timestamps).
type Condition struct {
	Status, Reason, Message string
	Generation              int64
}

// PolicyConditions computes each AuthorizationPolicy's condition from the
// problems of a translation (see Conditions). Pure.
func PolicyConditions(policies []*securityv1.AuthorizationPolicy, problems []workload.Problem) map[string]Condition {
	return Conditions("AuthorizationPolicy", policies, problems, func(ap *securityv1.AuthorizationPolicy) string {
		if len(ap.Spec.TargetRefs) > 0 || ap.Spec.TargetRef != nil {
			return forWaypoints // bound to a waypoint (Gateway or Service)
		}
		return forNodeAgents
	})
}

// Writer writes conditions through the API.
type Writer struct {
	Client istioclient.Interface
	// Gateway writes HTTPRoute statuses.
	Gateway gatewayclient.Interface
	// Dynamic writes the statuses of kinds Weft does not implement.
	Dynamic dynamic.Interface
	Log     *slog.Logger

	// The writes of the current Sync: up to maxWrites at once (a thousand
	// objects changed at once are not written one round trip after the
	// other), and how many failed.
	writes  sync.WaitGroup
	writing chan struct{}
	failed  atomic.Int32
}

// maxWrites bounds the status writes in flight; client-go's rate limiter
// (per client) still applies.
const maxWrites = 8

// write runs update (one object's status write) concurrently with the
// other writes of this Sync, and logs its result.
func (w *Writer) write(kind, ns, name, reason string, update func() error) {
	w.writes.Add(1)
	w.writing <- struct{}{}
	go func() {
		defer func() { <-w.writing; w.writes.Done() }()
		w.logResult(update(), kind, ns, name, reason)
	}()
}

// Objects are the objects whose status Weft writes.
type Objects struct {
	AuthorizationPolicies []*securityv1.AuthorizationPolicy
	PeerAuthentications   []*securityv1.PeerAuthentication
	// RequestAuthentications: those with targetRefs configure waypoints.
	RequestAuthentications []*securityv1.RequestAuthentication
	// EnvoyFilters: those Weft applies patch waypoints and gateways.
	EnvoyFilters []*networkingv1alpha3.EnvoyFilter
	// Telemetries configure waypoints' and gateways' access logs and tracing.
	Telemetries    []*telemetryv1.Telemetry
	ServiceEntries []*networkingv1.ServiceEntry
	// ServiceEntryAddresses are the VIPs allocated to ServiceEntry hosts
	// (workload.AllocateAddresses), by "<namespace>/<name>": written to
	// status.addresses as istiod does.
	ServiceEntryAddresses map[string][]*networkingapi.ServiceEntryAddress
	VirtualServices       []*networkingv1.VirtualService
	DestinationRules      []*networkingv1.DestinationRule
	// IstioGateways are networking.istio.io Gateways.
	IstioGateways []*networkingv1.Gateway
	// Gateways are Gateway API Gateways: those of class weft (ingress) are
	// route parents Weft reports on.
	Gateways       []*gatewayv1.Gateway
	GatewayClasses []*gatewayv1.GatewayClass
	HTTPRoutes     []*gatewayv1.HTTPRoute
	GRPCRoutes     []*gatewayv1.GRPCRoute
	// Services: whether an HTTPRoute's backendRefs resolve.
	Services []*corev1.Service
	// ReferenceGrants: whether cross-namespace backendRefs and
	// certificateRefs are allowed.
	ReferenceGrants []*gatewayv1beta1.ReferenceGrant
	// Namespaces: their labels, for the allowedRoutes selectors of the
	// ingress Gateways' listeners (whether a route attaches).
	Namespaces []*corev1.Namespace
	// Unsupported are the objects of kinds Weft does not implement, by
	// resource (see package unsupported).
	Unsupported map[schema.GroupVersionResource][]*unstructured.Unstructured
}

// Sync sets the condition on every object whose current condition differs
// from the desired one (timestamps aside); problems are the translations'.
// It never touches other conditions on an object. It reports whether a
// write failed (a conflict, the API server away): the caller retries later,
// as nothing else may change to trigger another Sync. Not safe for
// concurrent use.
func (w *Writer) Sync(ctx context.Context, o Objects, problems []workload.Problem) (retry bool) {
	w.failed.Store(0)
	w.writing = make(chan struct{}, maxWrites)
	syncConditions(w, "AuthorizationPolicy", o.AuthorizationPolicies, PolicyConditions(o.AuthorizationPolicies, problems),
		func(ap *securityv1.AuthorizationPolicy) Fields { return istioStatus(&ap.Status) },
		func(ap *securityv1.AuthorizationPolicy) error {
			_, err := w.Client.SecurityV1().AuthorizationPolicies(ap.Namespace).UpdateStatus(ctx, ap, metav1.UpdateOptions{})
			return err
		})
	syncConditions(w, "PeerAuthentication", o.PeerAuthentications,
		Conditions("PeerAuthentication", o.PeerAuthentications, problems, accepted[*securityv1.PeerAuthentication](forNodeAgents)),
		func(pa *securityv1.PeerAuthentication) Fields { return istioStatus(&pa.Status) },
		func(pa *securityv1.PeerAuthentication) error {
			_, err := w.Client.SecurityV1().PeerAuthentications(pa.Namespace).UpdateStatus(ctx, pa, metav1.UpdateOptions{})
			return err
		})
	syncConditions(w, "RequestAuthentication", o.RequestAuthentications,
		Conditions("RequestAuthentication", o.RequestAuthentications, problems, accepted[*securityv1.RequestAuthentication](forWaypoints)),
		func(ra *securityv1.RequestAuthentication) Fields { return istioStatus(&ra.Status) },
		func(ra *securityv1.RequestAuthentication) error {
			_, err := w.Client.SecurityV1().RequestAuthentications(ra.Namespace).UpdateStatus(ctx, ra, metav1.UpdateOptions{})
			return err
		})
	syncConditions(w, "EnvoyFilter", o.EnvoyFilters,
		Conditions("EnvoyFilter", o.EnvoyFilters, problems, accepted[*networkingv1alpha3.EnvoyFilter](forWaypointsAndGateways)),
		func(ef *networkingv1alpha3.EnvoyFilter) Fields { return istioStatus(&ef.Status) },
		func(ef *networkingv1alpha3.EnvoyFilter) error {
			_, err := w.Client.NetworkingV1alpha3().EnvoyFilters(ef.Namespace).UpdateStatus(ctx, ef, metav1.UpdateOptions{})
			return err
		})
	syncConditions(w, "Telemetry", o.Telemetries,
		Conditions("Telemetry", o.Telemetries, problems, accepted[*telemetryv1.Telemetry](forWaypointsAndGateways)),
		func(x *telemetryv1.Telemetry) Fields { return istioStatus(&x.Status) },
		func(x *telemetryv1.Telemetry) error {
			_, err := w.Client.TelemetryV1().Telemetries(x.Namespace).UpdateStatus(ctx, x, metav1.UpdateOptions{})
			return err
		})
	w.syncServiceEntries(ctx, o.ServiceEntries, problems, o.ServiceEntryAddresses)
	w.syncTraffic(ctx, o, problems)
	w.syncGatewayClasses(ctx, o.GatewayClasses)
	w.syncUnsupported(ctx, o.Unsupported)
	w.writes.Wait()
	return w.failed.Load() > 0
}

// The accepted messages: what Weft did with an object.
const (
	forNodeAgents             = "translated for the node agents"
	forNodeAgentsAndWaypoints = "translated for the node agents and waypoints"
	forWaypoints              = "translated for the waypoints"
	forGateways               = "translated for the ingress gateways"
	forWaypointsAndGateways   = "translated for the waypoints and ingress gateways it targets"
)

// accepted is an accepted-message function that always says msg.
func accepted[T any](msg string) func(T) string { return func(T) string { return msg } }

// istioObject is an Istio API object (pointer) whose status holds
// conditions.
type istioObject[T any] interface {
	metav1.Object
	DeepCopy() T
}

// syncConditions writes want's condition on each object whose status (as
// status reads it) says otherwise; update writes one object's status.
func syncConditions[T istioObject[T]](w *Writer, kind string, objs []T, want map[string]Condition,
	status func(T) Fields, update func(T) error) {
	for _, o := range objs {
		c := want[o.GetNamespace()+"/"+o.GetName()]
		if current(status(o), c) {
			continue
		}
		updated := o.DeepCopy()
		setCondition(status(updated), c, time.Now())
		w.write(kind, o.GetNamespace(), o.GetName(), c.Reason, func() error { return update(updated) })
	}
}

// Fields are the parts of an Istio status Weft writes: most kinds have an
// IstioStatus, ServiceEntry its own type with the same two fields.
type Fields struct {
	Conditions         *[]*metav1alpha1.IstioCondition
	ValidationMessages *[]*analysisv1alpha1.AnalysisMessageBase
}

// istioStatus is the Fields of an IstioStatus.
func istioStatus(st *metav1alpha1.IstioStatus) Fields {
	return Fields{&st.Conditions, &st.ValidationMessages}
}

func find(st Fields) *metav1alpha1.IstioCondition {
	for _, c := range *st.Conditions {
		if c.GetType() == ConditionType {
			return c
		}
	}
	return nil
}

func current(st Fields, want Condition) bool {
	c := find(st)
	return c != nil && c.GetStatus() == want.Status && c.GetReason() == want.Reason &&
		c.GetMessage() == want.Message && c.GetObservedGeneration() == want.Generation &&
		slices.EqualFunc(weftMessages(*st.ValidationMessages), want.validationMessages(),
			func(a, b *analysisv1alpha1.AnalysisMessageBase) bool { return proto.Equal(a, b) })
}

func setCondition(st Fields, want Condition, now time.Time) {
	c := find(st)
	if c == nil {
		c = &metav1alpha1.IstioCondition{Type: ConditionType}
		*st.Conditions = append(*st.Conditions, c)
	}
	if c.GetStatus() != want.Status || c.LastTransitionTime == nil {
		c.LastTransitionTime = timestamppb.New(now)
	}
	c.Status, c.Reason, c.Message, c.ObservedGeneration = want.Status, want.Reason, want.Message, want.Generation
	c.LastProbeTime = timestamppb.New(now)
	others := slices.DeleteFunc(*st.ValidationMessages, isWeftMessage)
	*st.ValidationMessages = append(others, want.validationMessages()...)
}

// String renders a condition for logs and tests.
func (c Condition) String() string {
	return fmt.Sprintf("%s/%s: %s", c.Status, c.Reason, c.Message)
}

// Analysis message codes of Weft's validationMessages entries, in the
// shape of Istio's analysis (IST0101, ...), so tools that show those show
// Weft's too. The message itself is the condition's: Istio's status
// entries carry no text either.
const (
	CodePartiallyInvalid = "WEFT0001"
	CodeUnsupported      = "WEFT0002"
)

// compatibilityURL is where a validationMessages entry points.
const compatibilityURL = "https://github.com/weft-mesh/weft/blob/main/docs/compatibility.md"

// validationMessages is the validationMessages entry of a condition: a
// warning for what was partly applied, an error for what has no effect.
func (c Condition) validationMessages() []*analysisv1alpha1.AnalysisMessageBase {
	var code string
	level := analysisv1alpha1.AnalysisMessageBase_WARNING
	switch c.Reason {
	case ReasonPartiallyInvalid:
		code = CodePartiallyInvalid
	case ReasonUnsupported:
		code, level = CodeUnsupported, analysisv1alpha1.AnalysisMessageBase_ERROR
	default:
		return nil
	}
	return []*analysisv1alpha1.AnalysisMessageBase{{
		Type:  &analysisv1alpha1.AnalysisMessageBase_Type{Name: c.Reason, Code: code},
		Level: level, DocumentationUrl: compatibilityURL,
	}}
}

func isWeftMessage(m *analysisv1alpha1.AnalysisMessageBase) bool {
	return strings.HasPrefix(m.GetType().GetCode(), "WEFT")
}

func weftMessages(ms []*analysisv1alpha1.AnalysisMessageBase) []*analysisv1alpha1.AnalysisMessageBase {
	var out []*analysisv1alpha1.AnalysisMessageBase
	for _, m := range ms {
		if isWeftMessage(m) {
			out = append(out, m)
		}
	}
	return out
}

// syncServiceEntries writes each ServiceEntry's condition and allocated
// addresses in one status update (two would conflict with each other).
func (w *Writer) syncServiceEntries(ctx context.Context, ses []*networkingv1.ServiceEntry, problems []workload.Problem,
	addresses map[string][]*networkingapi.ServiceEntryAddress) {
	want := Conditions("ServiceEntry", ses, problems, accepted[*networkingv1.ServiceEntry](forNodeAgentsAndWaypoints))
	fields := func(se *networkingv1.ServiceEntry) Fields {
		return Fields{&se.Status.Conditions, &se.Status.ValidationMessages}
	}
	for _, se := range ses {
		k := se.Namespace + "/" + se.Name
		c, addrs := want[k], addresses[k]
		if current(fields(se), c) && slices.EqualFunc(se.Status.Addresses, addrs,
			func(a, b *networkingapi.ServiceEntryAddress) bool { return proto.Equal(a, b) }) {
			continue
		}
		updated := se.DeepCopy()
		setCondition(fields(updated), c, time.Now())
		updated.Status.Addresses = addrs
		w.write("ServiceEntry", se.Namespace, se.Name, c.Reason, func() error {
			_, err := w.Client.NetworkingV1().ServiceEntries(se.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
			return err
		})
	}
}
