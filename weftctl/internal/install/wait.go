package install

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

const pollInterval = time.Second

// DeploymentProgress says how far a Deployment's rollout is and whether it
// is done: every replica updated and available, no old ones left.
func DeploymentProgress(d *appsv1.Deployment) (string, bool) {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	msg := fmt.Sprintf("deployment %s: %d/%d updated, %d available, %d total", d.Name, s.UpdatedReplicas, want, s.AvailableReplicas, s.Replicas)
	return msg, s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.AvailableReplicas == want && s.Replicas == want
}

// DaemonSetProgress is DeploymentProgress for a DaemonSet: an updated,
// available pod on every node it should run on.
func DaemonSetProgress(ds *appsv1.DaemonSet) (string, bool) {
	s := ds.Status
	msg := fmt.Sprintf("daemonset %s: %d/%d updated, %d available", ds.Name, s.UpdatedNumberScheduled, s.DesiredNumberScheduled, s.NumberAvailable)
	return msg, s.ObservedGeneration >= ds.Generation && s.UpdatedNumberScheduled == s.DesiredNumberScheduled && s.NumberAvailable == s.DesiredNumberScheduled
}

// WaitDeployment waits for Deployment ns/name's rollout, reporting each
// change of its progress.
func WaitDeployment(ctx context.Context, cs kubernetes.Interface, ns, name string, progress func(string)) error {
	return waitRollout(ctx, progress, "deployment "+ns+"/"+name, func(ctx context.Context) (string, bool, error) {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "", false, err
		}
		msg, ok := DeploymentProgress(d)
		return msg, ok, nil
	})
}

// WaitDaemonSet waits for DaemonSet ns/name's rollout.
func WaitDaemonSet(ctx context.Context, cs kubernetes.Interface, ns, name string, progress func(string)) error {
	return waitRollout(ctx, progress, "daemonset "+ns+"/"+name, func(ctx context.Context) (string, bool, error) {
		ds, err := cs.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "", false, err
		}
		msg, ok := DaemonSetProgress(ds)
		return msg, ok, nil
	})
}

func waitRollout(ctx context.Context, progress func(string), what string, check func(context.Context) (string, bool, error)) error {
	last := ""
	for {
		msg, ok, err := check(ctx)
		if err != nil {
			msg = err.Error()
		}
		if msg != last {
			progress(msg)
			last = msg
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %s (%w)", what, last, context.Cause(ctx))
		case <-time.After(pollInterval):
		}
	}
}
