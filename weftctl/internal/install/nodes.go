package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// NodeResult is one node's cleanup.
type NodeResult struct {
	Node     string `json:"node"`
	Pod      string `json:"pod,omitempty"`
	Cleaned  bool   `json:"cleaned"`
	Message  string `json:"message,omitempty"`
	ExitCode *int32 `json:"exitCode,omitempty"`
	// LogTail is the end of a failed pod's log.
	LogTail string `json:"logTail,omitempty"`
}

// ErrNodeCleanup means at least one node was not cleaned.
var ErrNodeCleanup = errors.New("node cleanup failed")

// WaitPodsGone waits until no pod in ns matches selector: the agents must
// have stopped before their state is removed, or they would put it back.
func WaitPodsGone(ctx context.Context, cs kubernetes.Interface, ns, selector string, progress func(string)) error {
	return waitRollout(ctx, progress, "pods "+selector, func(ctx context.Context) (string, bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return "", false, err
		}
		return fmt.Sprintf("%d node agent pod(s) still stopping", len(pods.Items)), len(pods.Items) == 0, nil
	})
}

// CleanNodes runs CleanupPod on every node at once, waits for them to end,
// collects each node's result and deletes the pods. It fails with
// ErrNodeCleanup when any node was not cleaned.
func CleanNodes(ctx context.Context, cs kubernetes.Interface, ns string, spec AgentSpec, progress func(string)) ([]NodeResult, error) {
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	results := make([]NodeResult, len(nodes.Items))
	var created []string
	defer func() { deletePods(cs, ns, created, progress) }()
	for i, n := range nodes.Items {
		results[i].Node = n.Name
		p, err := cs.CoreV1().Pods(ns).Create(ctx, CleanupPod(ns, n.Name, spec), metav1.CreateOptions{})
		if err != nil {
			results[i].Message = fmt.Sprintf("create cleanup pod: %v", err)
			continue
		}
		results[i].Pod = p.Name
		created = append(created, p.Name)
		progress(fmt.Sprintf("node %s: cleanup pod %s/%s started", n.Name, ns, p.Name))
	}
	pending := slices.Clone(created)
	for len(pending) > 0 {
		for _, name := range slices.Clone(pending) {
			p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil && ctx.Err() == nil {
				continue // transient; retried below
			}
			if p == nil || (p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed && ctx.Err() == nil) {
				continue
			}
			r := &results[slices.IndexFunc(results, func(r NodeResult) bool { return r.Pod == name })]
			finish(ctx, cs, r, p)
			if r.Cleaned {
				progress(fmt.Sprintf("node %s: cleaned", r.Node))
			} else {
				progress(fmt.Sprintf("node %s: FAILED: %s", r.Node, r.Message))
			}
			pending = slices.DeleteFunc(pending, func(s string) bool { return s == name })
		}
		if len(pending) == 0 {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(pollInterval):
		}
	}
	for _, r := range results {
		if !r.Cleaned {
			return results, ErrNodeCleanup
		}
	}
	return results, nil
}

// finish fills r from its pod p, which has ended or is abandoned (ctx done;
// p may be nil then).
func finish(ctx context.Context, cs kubernetes.Interface, r *NodeResult, p *corev1.Pod) {
	if p == nil {
		r.Message = fmt.Sprintf("cleanup pod not finished: %v", context.Cause(ctx))
		return
	}
	for _, c := range p.Status.ContainerStatuses {
		if t := c.State.Terminated; t != nil {
			r.ExitCode = ptr.To(t.ExitCode)
			r.Message = strings.TrimSpace(t.Reason + " " + t.Message)
		} else if w := c.State.Waiting; w != nil {
			r.Message = strings.TrimSpace(w.Reason + " " + w.Message)
		}
	}
	switch {
	case p.Status.Phase == corev1.PodSucceeded:
		r.Cleaned, r.Message = true, ""
		return
	case p.Status.Phase != corev1.PodFailed:
		r.Message = fmt.Sprintf("cleanup pod still %s after the timeout: %s", p.Status.Phase, r.Message)
	case r.Message == "":
		r.Message = strings.TrimSpace(p.Status.Reason + " " + p.Status.Message)
	}
	lctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if b, err := cs.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{TailLines: ptr.To[int64](20)}).DoRaw(lctx); err == nil {
		r.LogTail = string(bytes.TrimSpace(b))
	}
}

// deletePods deletes the cleanup pods and waits until they are gone, with a
// budget of its own so that a timed-out cleanup still removes them.
func deletePods(cs kubernetes.Interface, ns string, names []string, progress func(string)) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, n := range names {
		err := cs.CoreV1().Pods(ns).Delete(ctx, n, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		if err != nil && !apierrors.IsNotFound(err) {
			progress(fmt.Sprintf("delete cleanup pod %s/%s: %v", ns, n, err))
		}
	}
	for _, n := range names {
		for ctx.Err() == nil {
			if _, err := cs.CoreV1().Pods(ns).Get(ctx, n, metav1.GetOptions{}); apierrors.IsNotFound(err) {
				break
			}
			time.Sleep(pollInterval / 2)
		}
	}
}
