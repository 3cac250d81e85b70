package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"

	"github.com/weft-mesh/weft/node-agent/cni"
	"github.com/weft-mesh/weft/node-agent/config"
)

// enrolledNamespaces answers, at CNI ADD, whether a pod's namespace is
// enrolled: from the control plane's set when this agent has received one,
// else from the last set any agent on this node received, kept in the run
// directory (cni.DefaultEnrolledNamespaces; the plugin reads it too). So an agent restarted while the control plane is away still
// holds the new pods of enrolled namespaces. A namespace unenrolled in the
// meantime has its new pods held until the control plane says so: closed,
// not open.
type enrolledNamespaces struct {
	path     string
	snapshot func() *config.Snapshot

	mu    sync.Mutex
	saved []string // sorted; what path holds
	known bool     // path held a set (or this agent wrote one)
}

// loadEnrolledNamespaces reads the remembered set at path, if any; a file
// that cannot be read is reported and ignored (nothing is remembered).
func loadEnrolledNamespaces(path string, snapshot func() *config.Snapshot, log *slog.Logger) *enrolledNamespaces {
	n := &enrolledNamespaces{path: path, snapshot: snapshot}
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

// enrolled reports whether namespace ns is enrolled, and whether that is
// known (from the control plane or remembered).
func (n *enrolledNamespaces) enrolled(ns string) (enrolled, known bool) {
	if e, ok := n.snapshot().NamespaceEnrolled(ns); ok {
		return e, true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	_, found := slices.BinarySearch(n.saved, ns)
	return found, n.known
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
