package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// logTailLines is how much of a failed component's log a start error shows.
const logTailLines = 20

// startWatch ends a cluster's start when one of its components crash-loops
// (exits a second time), instead of a timeout on something downstream (a
// kube-proxy that dies for lack of iptables shows up as cluster DNS never
// available). A first exit is restarted and tolerated, as a kubelet
// restarts a crashed static pod: kube-proxy 1.37 has a start-up race
// (NodeTopologyConfig's handler list is appended to while the node
// informer already delivers a zone-labelled Node) that panics once in a
// while and then runs fine. Every wait of the start uses ctx; a crash loop
// cancels it with a componentExit cause (exitCause), which poll returns.
type startWatch struct {
	ctx  context.Context
	fail context.CancelCauseFunc

	mu    sync.Mutex
	first map[string]*os.ProcessState // each process's first exit
}

// componentExit says which component exited, how, and the end of its log.
type componentExit struct{ error }

func newStartWatch(ctx context.Context) *startWatch {
	ctx, fail := context.WithCancelCause(ctx)
	return &startWatch{ctx: ctx, fail: fail, first: map[string]*os.ProcessState{}}
}

// exited is the processes' onExit while the cluster starts.
func (w *startWatch) exited(p *process, state *os.ProcessState) {
	if w.ctx.Err() != nil {
		return // the start is over
	}
	w.mu.Lock()
	first, again := w.first[p.name]
	if !again {
		w.first[p.name] = state
	}
	w.mu.Unlock()
	if !again {
		return // the supervisor restarts it; its log keeps both runs
	}
	w.fail(componentExit{fmt.Errorf("%s exited again (%s; first %s) while the cluster was starting; last lines of %s:\n%s",
		p.name, state, first, p.logPath(), tailFile(p.logPath(), logTailLines))})
}

// exitCause is the component exit that ended ctx (a start's context or
// one derived from it), nil if none did.
func exitCause(ctx context.Context) error {
	var ce componentExit
	if errors.As(context.Cause(ctx), &ce) {
		return ce.error
	}
	return nil
}

// done ends the watch: later exits are restarted without failing anything.
func (w *startWatch) done() { w.fail(nil) }

// podFailure reports a container of the pods matching selector that has
// exited, with its exit and the last lines of its log: an add-on (CoreDNS)
// that crashes cannot become available, so waiting longer is pointless.
func podFailure(ctx context.Context, c *Cluster, ns, selector string) error {
	pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil // the caller's wait reports what it waits for
	}
	for _, pod := range pods.Items {
		for _, cs := range pod.Status.ContainerStatuses {
			term, previous := cs.LastTerminationState.Terminated, true
			if term == nil {
				term, previous = cs.State.Terminated, false
			}
			if term == nil {
				continue
			}
			opts := &corev1.PodLogOptions{Container: cs.Name, Previous: previous, TailLines: ptr.To(int64(logTailLines))}
			logs, err := c.Client.CoreV1().Pods(ns).GetLogs(pod.Name, opts).DoRaw(ctx)
			if err != nil {
				logs = []byte("(" + err.Error() + ")")
			}
			return fatal{fmt.Errorf("%s/%s container %s exited (exit code %d, %s) while the cluster was starting; last lines of its log:\n%s",
				ns, pod.Name, cs.Name, term.ExitCode, term.Reason, lastLines(string(logs), logTailLines))}
		}
	}
	return nil
}
