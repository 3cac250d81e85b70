package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/weft-mesh/weft/node-agent/cni"
	"github.com/weft-mesh/weft/node-agent/config"
	"github.com/weft-mesh/weft/pkg/mesh"
)

// enrolledNamespaces answers, at CNI ADD, whether a pod's namespace is
// enrolled: from the control plane's set when this agent has received one,
// else from the last set any agent on this node received, kept in the run
// directory (cni.DefaultEnrolledNamespaces; the plugin reads it too), else
// from the namespace's label in the API server. So an agent restarted
// while the control plane is away still holds the new pods of enrolled
// namespaces, and so does the first agent of a new node. A namespace
// unenrolled in the meantime has its new pods held until the control plane
// says so: closed, not open.
type enrolledNamespaces struct {
	path     string
	snapshot func() *config.Snapshot
	// labels reads a namespace's labels from the API server (nil: no
	// API access; see Config.NamespaceLabels).
	labels func(ctx context.Context, name string) (map[string]string, error)
	// podLabels reads a pod's labels and UID from the API server (nil:
	// not read; see Config.PodLabels).
	podLabels func(ctx context.Context, ns, name string) (map[string]string, string, error)
	log       *slog.Logger

	mu    sync.Mutex
	saved []string // sorted; what path holds
	known bool     // path held a set (or this agent wrote one)
}

// loadEnrolledNamespaces reads the remembered set at path, if any; a file
// that cannot be read is reported and ignored (nothing is remembered).
func loadEnrolledNamespaces(path string, snapshot func() *config.Snapshot, log *slog.Logger) *enrolledNamespaces {
	n := &enrolledNamespaces{path: path, snapshot: snapshot, log: log}
	saved, err := cni.ReadEnrolledNamespaces(path)
	if errors.Is(err, os.ErrNotExist) {
		return n
	}
	if err != nil {
		log.Warn("remembered enrolled namespaces unreadable: until the control plane sends them, new pods are captured only once their workload arrives",
			"file", path, "err", err)
		return n
	}
	n.saved, n.known = saved, true
	return n
}

// errNoSource: nothing could say whether a namespace is enrolled, and
// there was nothing to ask (no API access).
var errNoSource = errors.New("no control plane has said which namespaces are enrolled, none was remembered, and there is no API access to read the namespace's labels")

// namespaceLookupTimeout bounds the read of a namespace's labels at CNI
// ADD: well within the cni.DefaultNotifyTimeout the plugin waits for the
// whole event, after which it would take the agent for absent.
const namespaceLookupTimeout = time.Second

// enrolled reports whether namespace ns is enrolled: from the control
// plane, else the remembered set, else the API server. An error says none
// could tell (errNoSource: there was none to ask).
func (n *enrolledNamespaces) enrolled(ctx context.Context, ns string) (bool, error) {
	if e, ok := n.snapshot().NamespaceEnrolled(ns); ok {
		return e, nil
	}
	n.mu.Lock()
	_, found := slices.BinarySearch(n.saved, ns)
	known := n.known
	n.mu.Unlock()
	switch {
	case known:
		return found, nil
	case n.labels == nil:
		return false, errNoSource
	}
	ctx, cancel := context.WithTimeout(ctx, namespaceLookupTimeout)
	defer cancel()
	labels, err := n.labels(ctx, ns)
	if err != nil {
		return false, fmt.Errorf("no control plane has said which namespaces are enrolled, none was remembered, and the API server did not give namespace %s's labels: %w", ns, err)
	}
	return mesh.Enrolled(nil, labels), nil
}

// podEnrolled reports whether the pod of a CNI ADD is enrolled: its own
// istio.io/dataplane-mode label, read from the API server, decides when it
// says ambient or none (as the control plane's translation does); else its
// namespace does (enrolled). A pod whose labels cannot be read, or whose
// UID is not the event's (a newer pod of the same name), is left to its
// namespace: its own label then applies once its workload arrives.
func (n *enrolledNamespaces) podEnrolled(ctx context.Context, ev cni.Event) (bool, error) {
	if labels, ok := n.ownMode(ctx, ev); ok {
		return mesh.Enrolled(labels, nil), nil
	}
	return n.enrolled(ctx, ev.PodNamespace)
}

// ownMode returns the pod's labels when its dataplane-mode label decides.
func (n *enrolledNamespaces) ownMode(ctx context.Context, ev cni.Event) (map[string]string, bool) {
	if n.podLabels == nil {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(ctx, namespaceLookupTimeout)
	defer cancel()
	pod := ev.PodNamespace + "/" + ev.PodName
	labels, uid, err := n.podLabels(ctx, ev.PodNamespace, ev.PodName)
	switch {
	case err != nil:
		n.log.Warn("pod's labels unreadable at CNI ADD: its namespace decides whether it is captured until its workload arrives", "pod", pod, "err", err)
		return nil, false
	case ev.PodUID != "" && uid != ev.PodUID:
		n.log.Warn("pod read at CNI ADD is another pod of that name: its namespace decides whether it is captured until its workload arrives", "pod", pod, "uid", ev.PodUID, "read", uid)
		return nil, false
	}
	switch labels[mesh.LabelDataplaneMode] {
	case mesh.DataplaneAmbient, mesh.DataplaneNone:
		return labels, true
	}
	return nil, false
}

// save remembers snap's set when it differs from the saved one.
func (n *enrolledNamespaces) save(snap *config.Snapshot) error {
	if !snap.EnrolledNamespacesSynced {
		return nil
	}
	names := snap.EnrolledNamespaceNames()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.known && slices.Equal(names, n.saved) {
		return nil
	}
	if err := cni.WriteEnrolledNamespaces(n.path, names); err != nil {
		return fmt.Errorf("remember enrolled namespaces: %w", err)
	}
	n.saved, n.known = names, true
	return nil
}
