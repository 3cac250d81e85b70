package kubelet

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/pkg/atomicfile"
	"github.com/weft-mesh/weft/pkg/netns"
)

// Runtime starts, watches, adopts and stops container processes. It knows
// nothing about the API server so it can be tested on its own.
type Runtime struct {
	SelfBinary string
	// CgroupRoot is the pids hierarchy root (v1) or the unified root (v2);
	// empty disables cgroups.
	CgroupRoot   string
	CgroupParent string
	Log          *slog.Logger

	cgroupWarn sync.Once
}

// ContainerState is persisted as <container dir>/state.json so that a
// restarted kubelet can adopt the running process.
type ContainerState struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	Dir          string    `json:"dir"`
	RestartCount int       `json:"restartCount"`
	ShimPID      int       `json:"shimPID"`
	ShimStart    uint64    `json:"shimStart"`
	PID          int       `json:"pid"`
	PIDStart     uint64    `json:"pidStart"`
	Netns        string    `json:"netns,omitempty"`
	PodIP        string    `json:"podIP,omitempty"`
	StartedAt    time.Time `json:"startedAt"`
	LogPath      string    `json:"logPath"`
	CgroupDirs   []string  `json:"cgroupDirs,omitempty"`
	Image        string    `json:"image,omitempty"`
	ImageID      string    `json:"imageID,omitempty"`
	// Hash of the container spec it was started from (restart on change).
	SpecHash string `json:"specHash,omitempty"`
	// LastTermination carries the previous instance's end across restarts.
	LastTermination *ExitStatus `json:"lastTermination,omitempty"`
}

// Container is a started (or adopted) instance.
type Container struct {
	State ContainerState
	// Done is closed when the shim exited (the container is over).
	Done <-chan struct{}
}

// DetectCgroupRoot finds a writable pids hierarchy (v1) or unified root (v2).
func DetectCgroupRoot() string {
	if isCgroupMount("/sys/fs/cgroup/pids") {
		return "/sys/fs/cgroup/pids"
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return "/sys/fs/cgroup"
	}
	return ""
}

func isCgroupMount(p string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return false
	}
	return st.Type == unix.CGROUP_SUPER_MAGIC || st.Type == unix.CGROUP2_SUPER_MAGIC
}

// cgroupDir is the container's cgroup, created on demand. "" when cgroups
// are unavailable (logged once).
func (r *Runtime) cgroupDir(podUID, container string) string {
	if r.CgroupRoot == "" {
		return ""
	}
	d := filepath.Join(r.CgroupRoot, r.CgroupParent, "pod"+podUID, container)
	if err := os.MkdirAll(d, 0o755); err != nil {
		r.cgroupWarn.Do(func() {
			r.Log.Warn("cgroups unavailable, container processes are not tracked in a cgroup", "dir", d, "err", err)
		})
		return ""
	}
	return d
}

// podCgroupDir is the pod's cgroup (parent of the container ones).
func (r *Runtime) podCgroupDir(podUID string) string {
	if r.CgroupRoot == "" {
		return ""
	}
	return filepath.Join(r.CgroupRoot, r.CgroupParent, "pod"+podUID)
}

// Start runs container-init for spec in the network namespace at nsPath
// (the kubelet's own when nsPath is ""). It returns once the user process was
// started, or with the start error (bad command, mount failure...).
func (r *Runtime) Start(spec *ContainerSpec, nsPath, podUID string, st ContainerState) (*Container, error) {
	if err := os.MkdirAll(spec.Dir, 0o755); err != nil {
		return nil, err
	}
	// A new instance gets a fresh writable layer.
	for _, d := range []string{"upper", "work", "rootfs"} {
		_ = os.RemoveAll(filepath.Join(spec.Dir, d))
	}
	_ = os.Remove(spec.exitFile())
	if cg := r.cgroupDir(podUID, spec.Name); cg != "" {
		spec.CgroupDirs = []string{cg}
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	specPath := filepath.Join(spec.Dir, "spec.json")
	if err := atomicfile.Write(specPath, data, 0o600); err != nil {
		return nil, err
	}
	syncR, syncW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer syncR.Close()
	shimLog, err := os.OpenFile(filepath.Join(spec.Dir, "shim.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		syncW.Close()
		return nil, err
	}
	defer shimLog.Close()
	flags := uintptr(unix.CLONE_NEWNS)
	if spec.Hostname != "" {
		flags |= unix.CLONE_NEWUTS
	}
	cmd := &exec.Cmd{
		Path:        r.SelfBinary,
		Args:        []string{r.SelfBinary, modeContainerInit, specPath},
		Env:         []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Stdout:      shimLog,
		Stderr:      shimLog,
		ExtraFiles:  []*os.File{syncW},
		SysProcAttr: &syscall.SysProcAttr{Cloneflags: flags, Setsid: true},
	}
	if err := netns.Start(cmd, nsPath); err != nil {
		syncW.Close()
		return nil, fmt.Errorf("starting container-init: %w", err)
	}
	syncW.Close()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()

	msgc := make(chan syncMsg, 1)
	go func() {
		var m syncMsg
		if err := json.NewDecoder(syncR).Decode(&m); err != nil {
			m.Error = "container-init exited before starting the process (see " + filepath.Join(spec.Dir, "shim.log") + ")"
		}
		msgc <- m
	}()
	var m syncMsg
	select {
	case m = <-msgc:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		m.Error = "timed out waiting for container-init"
	}
	if m.Error != "" {
		<-done
		r.cleanupCgroups(spec.CgroupDirs)
		return nil, errors.New(m.Error)
	}
	st.ID, st.Name, st.Dir = spec.ID, spec.Name, spec.Dir
	st.ShimPID = cmd.Process.Pid
	st.ShimStart, _ = procStartTime(st.ShimPID)
	st.PID = m.PID
	st.PIDStart, _ = procStartTime(m.PID)
	st.Netns = nsPath
	st.StartedAt = time.Now()
	st.LogPath = spec.LogPath
	st.CgroupDirs = spec.CgroupDirs
	if err := r.SaveState(&st); err != nil {
		r.Log.Warn("saving container state", "dir", spec.Dir, "err", err)
	}
	return &Container{State: st, Done: done}, nil
}

// SaveState persists st in its container dir.
func (r *Runtime) SaveState(st *ContainerState) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(st.Dir, "state.json"), data, 0o644)
}

// LoadState reads a container's state.json.
func LoadState(dir string) (*ContainerState, error) {
	data, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, err
	}
	var st ContainerState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Adopt re-attaches to a container started by a previous kubelet. It fails
// when the shim is gone or the pid was reused.
func (r *Runtime) Adopt(st *ContainerState) (*Container, error) {
	if st.ShimPID <= 0 || !sameProcess(st.ShimPID, st.ShimStart) {
		return nil, fmt.Errorf("shim %d of %s is gone", st.ShimPID, st.Name)
	}
	fd, err := unix.PidfdOpen(st.ShimPID, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", st.ShimPID, err)
	}
	// The shim could have exited between the check and pidfd_open.
	if !sameProcess(st.ShimPID, st.ShimStart) {
		unix.Close(fd)
		return nil, fmt.Errorf("shim %d of %s is gone", st.ShimPID, st.Name)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer unix.Close(fd)
		for {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, -1)
			if err == unix.EINTR {
				continue
			}
			if n > 0 || err != nil {
				return
			}
		}
	}()
	return &Container{State: *st, Done: done}, nil
}

// ReadExit returns the exit status the shim recorded; when the shim died
// without recording one it reports a kill.
func ReadExit(st *ContainerState) ExitStatus {
	data, err := os.ReadFile(filepath.Join(st.Dir, "exit.json"))
	if err == nil {
		var es ExitStatus
		if json.Unmarshal(data, &es) == nil {
			return es
		}
	}
	return ExitStatus{ExitCode: 137, Signal: "SIGKILL", StartedAt: st.StartedAt, FinishedAt: time.Now()}
}

// Stop sends SIGTERM to the container's process group, waits up to grace,
// then SIGKILLs it and anything left in its cgroup.
func (r *Runtime) Stop(c *Container, grace time.Duration) {
	st := &c.State
	select {
	case <-c.Done:
		r.killLeftovers(st)
		return
	default:
	}
	if sameProcess(st.PID, st.PIDStart) {
		_ = syscall.Kill(-st.PID, syscall.SIGTERM)
		_ = syscall.Kill(st.PID, syscall.SIGTERM)
	}
	select {
	case <-c.Done:
		r.killLeftovers(st)
		return
	case <-time.After(grace):
	}
	if sameProcess(st.PID, st.PIDStart) {
		_ = syscall.Kill(-st.PID, syscall.SIGKILL)
		_ = syscall.Kill(st.PID, syscall.SIGKILL)
	}
	// The shim records the exit status once the process is gone.
	select {
	case <-c.Done:
	case <-time.After(5 * time.Second):
		r.killLeftovers(st)
		if sameProcess(st.ShimPID, st.ShimStart) {
			_ = syscall.Kill(st.ShimPID, syscall.SIGKILL)
		}
		select {
		case <-c.Done:
		case <-time.After(5 * time.Second):
			r.Log.Warn("container shim did not exit", "container", st.Name, "pid", st.ShimPID)
		}
	}
	r.killLeftovers(st)
}

func (r *Runtime) killLeftovers(st *ContainerState) {
	killCgroupProcs(st.CgroupDirs, -1)
}

// Remove deletes the container's cgroups (after Stop).
func (r *Runtime) cleanupCgroups(dirs []string) {
	for _, d := range dirs {
		for i := 0; i < 50; i++ {
			if err := os.Remove(d); err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			killCgroupProcs([]string{d}, -1)
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// RemovePodCgroups removes the pod's cgroup tree (containers must be dead).
func (r *Runtime) RemovePodCgroups(podUID string) {
	d := r.podCgroupDir(podUID)
	if d == "" {
		return
	}
	entries, _ := os.ReadDir(d)
	for _, e := range entries {
		if e.IsDir() {
			r.cleanupCgroups([]string{filepath.Join(d, e.Name())})
		}
	}
	_ = os.Remove(d)
}

// killCgroupProcs SIGKILLs every process in dirs except skip.
func killCgroupProcs(dirs []string, skip int) {
	for _, d := range dirs {
		for _, pid := range cgroupPids(d) {
			if pid != skip && pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

func cgroupPids(dir string) []int {
	f, err := os.Open(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if pid, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// procStartTime is field 22 of /proc/<pid>/stat (clock ticks since boot):
// together with the pid it identifies a process across pid reuse.
func procStartTime(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// comm may contain spaces: fields start after the last ')'.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(data[i+1:]))
	// fields[0] is field 3 (state); starttime is field 22.
	if len(fields) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	if fields[0] == "Z" {
		return 0, fmt.Errorf("process %d is a zombie", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

func sameProcess(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	s, err := procStartTime(pid)
	return err == nil && s == start
}

// Capabilities.

var capNames = []string{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL",
	"SETGID", "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE",
	"NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
	"SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
	"SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
	"SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL",
	"SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
	"BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
}

// defaultCaps is containerd's/docker's default set.
var defaultCaps = []string{
	"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
	"SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL",
	"AUDIT_WRITE",
}

func capNumber(name string) (int, error) {
	n := strings.TrimPrefix(strings.ToUpper(name), "CAP_")
	for i, c := range capNames {
		if c == n {
			return i, nil
		}
	}
	return 0, fmt.Errorf("unknown capability %q", name)
}

// capsToKeep computes the bounding set: default + add - drop ("ALL" works
// in both).
func capsToKeep(spec *ContainerSpec) ([]int, error) {
	set := map[int]bool{}
	for _, n := range defaultCaps {
		c, _ := capNumber(n)
		set[c] = true
	}
	for _, n := range spec.CapDrop {
		if strings.EqualFold(n, "ALL") {
			set = map[int]bool{}
			continue
		}
		c, err := capNumber(n)
		if err != nil {
			return nil, err
		}
		delete(set, c)
	}
	for _, n := range spec.CapAdd {
		if strings.EqualFold(n, "ALL") {
			for i := range capNames {
				set[i] = true
			}
			continue
		}
		c, err := capNumber(n)
		if err != nil {
			return nil, err
		}
		set[c] = true
	}
	var out []int
	for i := range capNames {
		if set[i] {
			out = append(out, i)
		}
	}
	return out, nil
}
