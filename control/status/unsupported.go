package status

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	metav1alpha1 "istio.io/api/meta/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/weft-mesh/weft/control/unsupported"
)

// syncUnsupported sets WeftAccepted=False (Unsupported) on every object of
// a kind Weft does not implement, with the kind's message.
func (w *Writer) syncUnsupported(ctx context.Context, objs map[schema.GroupVersionResource][]*unstructured.Unstructured) {
	for r, list := range objs {
		kind, ok := unsupported.Of(r)
		if !ok {
			continue
		}
		for _, o := range list {
			want := Condition{Status: "False", Reason: ReasonUnsupported, Message: kind.Message, Generation: o.GetGeneration()}
			updated, changed, err := withCondition(o, want, time.Now())
			if err != nil {
				// Not a failed write: retrying would not make it readable.
				w.Log.Warn("status not written: the object's status is not an Istio status", "kind", kind.Kind,
					"namespace", o.GetNamespace(), "name", o.GetName(), "err", err)
				continue
			}
			if !changed {
				continue
			}
			w.write(kind.Kind, o.GetNamespace(), o.GetName(), want.Reason, func() error {
				_, err := w.Dynamic.Resource(r).Namespace(o.GetNamespace()).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
				return err
			})
		}
	}
}

// withCondition returns a copy of o whose status (an Istio status) has
// want, and whether that differs from o's.
func withCondition(o *unstructured.Unstructured, want Condition, now time.Time) (*unstructured.Unstructured, bool, error) {
	var st metav1alpha1.IstioStatus
	if raw, ok := o.Object["status"]; ok {
		b, err := json.Marshal(raw)
		if err == nil {
			err = st.UnmarshalJSON(b)
		}
		if err != nil {
			return nil, false, fmt.Errorf("status of %s/%s: %w", o.GetNamespace(), o.GetName(), err)
		}
	}
	if current(istioStatus(&st), want) {
		return nil, false, nil
	}
	setCondition(istioStatus(&st), want, now)
	b, err := st.MarshalJSON()
	var m map[string]any
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	if err != nil {
		return nil, false, err
	}
	updated := o.DeepCopy()
	updated.Object["status"] = m
	return updated, true, nil
}
