package cluster

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroup is a directory in the pids controller's hierarchy (cgroup v1) or in
// the unified hierarchy (v2). Every process of a cluster lives below one
// cgroup, so `down` finds and ends all of them, including container
// processes whose parent died.
type cgroup struct{ dir string }

// cgroupHierarchy returns the hierarchy root to use: v1 pids if mounted,
// else the v2 unified root.
func cgroupHierarchy() (string, error) {
	for _, root := range []string{"/sys/fs/cgroup/pids", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err == nil {
			return root, nil
		}
	}
	return "", errors.New("no writable pids cgroup hierarchy under /sys/fs/cgroup")
}

// clusterCgroupPath is the cgroup of a whole cluster, relative to the
// hierarchy root (the kubelets' --cgroup-parent lives below it).
func clusterCgroupPath(name string) string { return "weft-" + name }

func newCgroup(rel string) (*cgroup, error) {
	root, err := cgroupHierarchy()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(root, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	return &cgroup{dir: dir}, nil
}

func (c *cgroup) add(pid int) error {
	if err := os.WriteFile(filepath.Join(c.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("move pid %d into cgroup %s: %w", pid, c.dir, err)
	}
	return nil
}

// pids lists every process in the cgroup and its descendants.
func (c *cgroup) pids() []int {
	var pids []int
	_ = filepath.WalkDir(c.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		data, _ := os.ReadFile(path)
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// destroy kills every process below the cgroup and removes the directories.
// It only ever signals PIDs that the kernel lists in this cgroup: processes
// this cluster started.
func (c *cgroup) destroy(timeout time.Duration) error {
	if _, err := os.Stat(c.dir); os.IsNotExist(err) {
		return nil
	}
	deadline := time.Now().Add(timeout)
	killed := map[int]bool{}
	for {
		pids := c.pids()
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v in cgroup %s survived SIGKILL", pids, c.dir)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			killed[pid] = true
		}
		time.Sleep(50 * time.Millisecond)
	}
	var dirs []string
	_ = filepath.WalkDir(c.dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	// A killed process that is our child stays a zombie, still charged to
	// its cgroup (v1 pids), until reaped: reap first, or removing the
	// cgroup fails with EBUSY. A process reparented elsewhere is released
	// by its reaper a moment later: EBUSY is retried until the deadline.
	reap(killed)
	slices.Reverse(dirs) // children before parents
	var errs []error
	for _, d := range dirs {
		err := os.Remove(d)
		for errors.Is(err, syscall.EBUSY) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			err = os.Remove(d)
		}
		if err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// reap collects the exit status of killed processes that were reparented to
// this process (the cluster sets itself as child subreaper): a container
// whose kubelet stopped first would otherwise stay a zombie wherever PID 1
// does not reap. Processes that are not our children are ignored.
func reap(pids map[int]bool) {
	deadline := time.Now().Add(time.Second)
	for len(pids) > 0 && time.Now().Before(deadline) {
		for pid := range pids {
			got, err := unix.Wait4(pid, nil, unix.WNOHANG, nil)
			if got == pid || err != nil { // reaped, or not our child
				delete(pids, pid)
			}
		}
		if len(pids) > 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// owner is the live process outside the cgroup that runs it: the parent
// of one of its processes that is neither in the cgroup, nor PID 1 (where
// orphans go), nor this process. 0 when there is none: the cgroup is
// empty or holds what a dead run left.
func (c *cgroup) owner() int {
	pids := c.pids()
	in := make(map[int]bool, len(pids))
	for _, p := range pids {
		in[p] = true
	}
	for _, p := range pids {
		pp := parentPID(p)
		if pp > 1 && !in[pp] && pp != os.Getpid() && ProcessAlive(pp) {
			return pp
		}
	}
	return 0
}

// parentPID is pid's parent from /proc, 0 if unknown.
func parentPID(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			pp, _ := strconv.Atoi(strings.TrimSpace(v))
			return pp
		}
	}
	return 0
}
