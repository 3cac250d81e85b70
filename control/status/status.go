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
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	metav1alpha1 "istio.io/api/meta/v1alpha1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
// problems of a translation. Pure.
func PolicyConditions(policies []*securityv1.AuthorizationPolicy, problems []workload.Problem) map[string]Condition {
	byPolicy := map[string][]string{}
	for _, p := range problems {
		if p.Kind == "AuthorizationPolicy" {
			key := p.Namespace + "/" + p.Name
			byPolicy[key] = append(byPolicy[key], p.Message)
		}
	}
	out := make(map[string]Condition, len(policies))
	for _, ap := range policies {
		key := ap.Namespace + "/" + ap.Name
		msg := "translated for the node agents"
		if len(ap.Spec.TargetRefs) > 0 || ap.Spec.TargetRef != nil {
			msg = trafficAccepted // bound to a waypoint (Gateway or Service)
		}
		c := Condition{Status: "True", Reason: ReasonAccepted, Message: msg, Generation: ap.Generation}
		if msgs := byPolicy[key]; len(msgs) > 0 {
			slices.Sort(msgs)
			c = Condition{Status: "False", Reason: ReasonPartiallyInvalid, Message: strings.Join(slices.Compact(msgs), "; "), Generation: ap.Generation}
		}
		out[key] = c
	}
	return out
}

// Writer writes conditions through the API.
type Writer struct {
	Client istioclient.Interface
	// Gateway writes HTTPRoute statuses; nil: they are not written.
	Gateway gatewayclient.Interface
	Log     *slog.Logger
}

// SyncPolicies sets the condition on every policy whose current condition
// differs from the desired one (timestamps aside). It never touches other
// conditions on the object.
func (w *Writer) SyncPolicies(ctx context.Context, policies []*securityv1.AuthorizationPolicy, problems []workload.Problem) {
	want := PolicyConditions(policies, problems)
	for _, ap := range policies {
		c := want[ap.Namespace+"/"+ap.Name]
		if current(&ap.Status, c) {
			continue
		}
		updated := ap.DeepCopy()
		setCondition(&updated.Status, c, time.Now())
		_, err := w.Client.SecurityV1().AuthorizationPolicies(ap.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
		switch {
		case err == nil:
			w.Log.Debug("status updated", "kind", "AuthorizationPolicy", "namespace", ap.Namespace, "name", ap.Name, "reason", c.Reason)
		case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
			// A newer version is on its way through the informer; the next
			// sync handles it.
		default:
			w.Log.Warn("status update failed", "kind", "AuthorizationPolicy", "namespace", ap.Namespace, "name", ap.Name, "err", err)
		}
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
