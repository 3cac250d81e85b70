package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/pkg/mountinfo"
)

// Down stops the cluster recorded in stateDir: it signals the supervising
// process to tear down in order, then removes whatever is left (processes,
// namespaces, mounts), which also covers a supervisor that crashed.
func Down(name, stateDir string) error {
	if st, err := ReadState(stateDir); err == nil && ProcessAlive(st.PID) && st.PID != os.Getpid() {
		_ = syscall.Kill(st.PID, syscall.SIGTERM)
		deadline := time.Now().Add(60 * time.Second)
		for ProcessAlive(st.PID) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if ProcessAlive(st.PID) {
			_ = syscall.Kill(st.PID, syscall.SIGKILL)
		}
	}
	return Cleanup(name, stateDir)
}

// Cleanup removes everything a cluster named name may have left on the
// machine: every process in its cgroup, its network namespaces (nodes, pods,
// fabric, control plane), mounts below stateDir, and the state directory
// except logs/. It is idempotent.
func Cleanup(name, stateDir string) error {
	var errs []error
	if root, err := cgroupHierarchy(); err == nil {
		cg := &cgroup{dir: filepath.Join(root, clusterCgroupPath(name))}
		if err := cg.destroy(15 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	nss, err := listNetns(nsPrefix(name))
	if err != nil {
		errs = append(errs, err)
	}
	for _, ns := range nss {
		if err := ip("netns", "delete", ns); err != nil {
			errs = append(errs, err)
		}
	}
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	mounts, err := mountinfo.Under(abs)
	if err != nil {
		errs = append(errs, err)
	}
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	entries, _ := os.ReadDir(abs)
	for _, e := range entries {
		if e.Name() == "logs" {
			continue
		}
		if err := os.RemoveAll(filepath.Join(abs, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// clusterOwner is the live process running cluster name's processes (its
// cgroup's), 0 if none does.
func clusterOwner(name string) int {
	root, err := cgroupHierarchy()
	if err != nil {
		return 0
	}
	return (&cgroup{dir: filepath.Join(root, clusterCgroupPath(name))}).owner()
}

// leftovers describes what an earlier run of the cluster left behind.
func leftovers(name, stateDir string) []string {
	var out []string
	if nss, _ := listNetns(nsPrefix(name)); len(nss) > 0 {
		out = append(out, fmt.Sprintf("%d network namespaces", len(nss)))
	}
	if abs, err := filepath.Abs(stateDir); err == nil {
		if m, _ := mountinfo.Under(abs); len(m) > 0 {
			out = append(out, fmt.Sprintf("%d mounts", len(m)))
		}
	}
	if root, err := cgroupHierarchy(); err == nil {
		cg := &cgroup{dir: filepath.Join(root, clusterCgroupPath(name))}
		if p := cg.pids(); len(p) > 0 {
			out = append(out, fmt.Sprintf("%d processes", len(p)))
		}
	}
	return out
}
