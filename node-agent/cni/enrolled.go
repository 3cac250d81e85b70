package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/weft-mesh/weft/pkg/atomicfile"
)

// DefaultEnrolledNamespaces is the enrolled-namespaces file's default path
// (the conflist entry's "enrolledNamespaces").
//
// The node agent keeps in this file the last set of namespaces labelled
// ambient that the control plane sent. Whoever must decide at CNI ADD
// without the control plane reads it: an agent restarted while the control
// plane is away, and the plugin while no agent answers. A pod of an
// enrolled namespace must not start uncaptured.
const DefaultEnrolledNamespaces = "/var/run/weft/enrolled-namespaces.json"

// ErrNotCaptured, wrapped in an ADD's error, says the pod belongs in the
// mesh and was not captured: the ADD must fail (the kubelet retries), not
// let the pod start outside the mesh. The agent answers such an event with
// 409 Conflict.
var ErrNotCaptured = errors.New("pod of an enrolled namespace not captured")

// ReadEnrolledNamespaces reads the file at path: the namespaces, sorted.
// A missing file is an error wrapping os.ErrNotExist.
func ReadEnrolledNamespaces(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var names []string
	if err := json.Unmarshal(data, &names); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	slices.Sort(names)
	return names, nil
}

// WriteEnrolledNamespaces replaces the file at path atomically.
func WriteEnrolledNamespaces(path string, names []string) error {
	data, err := json.Marshal(names)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o644)
}

// enrolledAtAdd reports whether ev is the ADD of a pod whose namespace the
// file at path lists (false when the file is missing or unreadable:
// nothing is known).
func enrolledAtAdd(path string, ev Event) bool {
	if ev.Op != OpAdd {
		return false
	}
	names, err := ReadEnrolledNamespaces(path)
	if err != nil {
		return false
	}
	_, found := slices.BinarySearch(names, ev.PodNamespace)
	return found
}
