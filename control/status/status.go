// Package status reports on Istio objects whether Weft accepted them: a
// WeftAccepted condition on each AuthorizationPolicy, VirtualService and
// DestinationRule, and Weft's parent entries on GAMMA HTTPRoutes, computed
// from the translations' problems, written only when it changes. Run it on
// the leader only.
package status

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	metav1alpha1 "istio.io/api/meta/v1alpha1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
			return trafficAccepted // bound to a waypoint (Gateway or Service)
		}
		return "translated for the node agents"
	})
}

// Writer writes conditions through the API.
type Writer struct {
	Client istioclient.Interface
	// Gateway writes HTTPRoute statuses.
	Gateway gatewayclient.Interface
	Log     *slog.Logger
}

// SyncPolicies sets the condition on every policy whose current condition
// differs from the desired one (timestamps aside). It never touches other
// conditions on the object.
func (w *Writer) SyncPolicies(ctx context.Context, policies []*securityv1.AuthorizationPolicy, problems []workload.Problem) {
	syncConditions(w, "AuthorizationPolicy", policies, PolicyConditions(policies, problems),
		func(ap *securityv1.AuthorizationPolicy) *metav1alpha1.IstioStatus { return &ap.Status },
		func(ap *securityv1.AuthorizationPolicy) error {
			_, err := w.Client.SecurityV1().AuthorizationPolicies(ap.Namespace).UpdateStatus(ctx, ap, metav1.UpdateOptions{})
			return err
		})
}

// istioObject is an Istio API object (pointer) whose status holds
// conditions.
type istioObject[T any] interface {
	metav1.Object
	DeepCopy() T
}

// syncConditions writes want's condition on each object whose status (as
// status reads it) says otherwise; update writes one object's status.
func syncConditions[T istioObject[T]](w *Writer, kind string, objs []T, want map[string]Condition,
	status func(T) *metav1alpha1.IstioStatus, update func(T) error) {
	for _, o := range objs {
		c := want[o.GetNamespace()+"/"+o.GetName()]
		if current(status(o), c) {
			continue
		}
		updated := o.DeepCopy()
		setCondition(status(updated), c, time.Now())
		w.logResult(update(updated), kind, o.GetNamespace(), o.GetName(), c.Reason)
	}
}

func find(st *metav1alpha1.IstioStatus) *metav1alpha1.IstioCondition {
	for _, c := range st.Conditions {
		if c.GetType() == ConditionType {
			return c
		}
	}
	return nil
}

func current(st *metav1alpha1.IstioStatus, want Condition) bool {
	c := find(st)
	return c != nil && c.GetStatus() == want.Status && c.GetReason() == want.Reason &&
		c.GetMessage() == want.Message && c.GetObservedGeneration() == want.Generation
}

func setCondition(st *metav1alpha1.IstioStatus, want Condition, now time.Time) {
	c := find(st)
	if c == nil {
		c = &metav1alpha1.IstioCondition{Type: ConditionType}
		st.Conditions = append(st.Conditions, c)
	}
	if c.GetStatus() != want.Status || c.LastTransitionTime == nil {
		c.LastTransitionTime = timestamppb.New(now)
	}
	c.Status, c.Reason, c.Message, c.ObservedGeneration = want.Status, want.Reason, want.Message, want.Generation
	c.LastProbeTime = timestamppb.New(now)
}

// String renders a condition for logs and tests.
func (c Condition) String() string {
	return fmt.Sprintf("%s/%s: %s", c.Status, c.Reason, c.Message)
}
