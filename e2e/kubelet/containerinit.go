package kubelet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/pkg/atomicfile"
	"github.com/weft-mesh/weft/pkg/mountinfo"
)

// Hidden modes of the kubelet binary. container-init is a conmon-like shim:
// started by the kubelet in the pod netns and a new mount namespace, it
// builds the container's filesystem view, starts the user process (through
// container-exec, which drops capabilities and execs inside the chroot),
// writes its output to the CRI log file and records the exit status. Being
// a separate process it survives kubelet restarts, which is what lets a
// restarted kubelet adopt running containers.
const (
	modeContainerInit = "container-init"
	modeContainerExec = "container-exec"
	modeCgroupExec    = "cgroup-exec"
)

// MaybeRunHidden runs a hidden mode if args (os.Args) ask for one; it does
// not return then. Call it first thing in main of any binary that embeds
// the kubelet.
func MaybeRunHidden(args []string) {
	if len(args) < 2 {
		return
	}
	var err error
	switch args[1] {
	case modeContainerInit:
		if len(args) != 3 {
			err = errors.New("usage: container-init <spec.json>")
		} else {
			err = runContainerInit(args[2])
		}
	case modeContainerExec:
		err = runContainerExec()
	case modeCgroupExec:
		err = runCgroupExec(args[2:])
	case modeCNIExec:
		err = runCNIExec(args[2:])
	default:
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "weft-kubelet %s: %v\n", args[1], err)
		os.Exit(127)
	}
	os.Exit(0)
}

// ContainerSpec is what the kubelet hands container-init (as JSON).
type ContainerSpec struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Dir is the container's state dir: rootfs/, upper/, work/, exit.json.
	Dir        string   `json:"dir"`
	Argv       []string `json:"argv"`
	Env        []string `json:"env"`
	WorkingDir string   `json:"workingDir,omitempty"`
	// Hostname is set in a new UTS namespace when non-empty.
	Hostname   string   `json:"hostname,omitempty"`
	Mounts     []Mount  `json:"mounts,omitempty"`
	Privileged bool     `json:"privileged,omitempty"`
	CapAdd     []string `json:"capAdd,omitempty"`
	CapDrop    []string `json:"capDrop,omitempty"`
	CgroupDirs []string `json:"cgroupDirs,omitempty"`
	LogPath    string   `json:"logPath"`
}

// Mount is a bind (default) or tmpfs mount inside the container.
type Mount struct {
	Source      string `json:"source,omitempty"`
	Destination string `json:"destination"`
	Tmpfs       bool   `json:"tmpfs,omitempty"`
	ReadOnly    bool   `json:"readOnly,omitempty"`
	// Propagation: "" (rprivate), "HostToContainer" (rslave) or
	// "Bidirectional" (rshared, and kept a peer of the host mount).
	Propagation string `json:"propagation,omitempty"`
}

// ExitStatus is written by container-init when the user process ends.
type ExitStatus struct {
	ExitCode   int       `json:"exitCode"`
	Signal     string    `json:"signal,omitempty"`
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt"`
	// StartError is set when the process could not be started at all.
	StartError string `json:"startError,omitempty"`
}

// syncMsg goes from container-init to the kubelet over fd 3.
type syncMsg struct {
	PID   int    `json:"pid,omitempty"`
	Error string `json:"error,omitempty"`
}

// execSpec goes from container-init to container-exec over fd 3.
type execSpec struct {
	Argv       []string `json:"argv"`
	Env        []string `json:"env"`
	WorkingDir string   `json:"workingDir"`
	Privileged bool     `json:"privileged"`
	Keep       []int    `json:"keep"`
}

func (s *ContainerSpec) rootfs() string   { return filepath.Join(s.Dir, "rootfs") }
func (s *ContainerSpec) exitFile() string { return filepath.Join(s.Dir, "exit.json") }

func runContainerInit(specPath string) error {
	data, err := os.ReadFile(specPath)
	if err != nil {
		return err
	}
	var spec ContainerSpec
	if err := json.Unmarshal(data, &spec); err != nil {
		return err
	}
	syncPipe := os.NewFile(3, "sync")
	report := func(m syncMsg) {
		_ = json.NewEncoder(syncPipe).Encode(m)
		syncPipe.Close()
	}
	// A group kill aimed at the container must not take the shim down
	// before it recorded the exit status.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)

	// Join the cgroup first so everything started from here is tracked.
	for _, d := range spec.CgroupDirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "joining cgroup %s: %v\n", d, err)
		}
	}
	if err := setupContainerFS(&spec); err != nil {
		report(syncMsg{Error: err.Error()})
		writeExit(spec.exitFile(), ExitStatus{ExitCode: 128, StartError: err.Error(), StartedAt: time.Now(), FinishedAt: time.Now()})
		return err
	}
	pid, wait, err := startUserProcess(&spec)
	if err != nil {
		report(syncMsg{Error: err.Error()})
		writeExit(spec.exitFile(), ExitStatus{ExitCode: 128, StartError: err.Error(), StartedAt: time.Now(), FinishedAt: time.Now()})
		return err
	}
	report(syncMsg{PID: pid})
	wait()
	return nil
}

// setupContainerFS builds the container's view in our private mount
// namespace: overlay root, /dev, /proc, /sys, /tmp, /run, binaries,
// volumes and the pod's /etc files.
func setupContainerFS(spec *ContainerSpec) error {
	if err := makeMountsSlave(spec); err != nil {
		return err
	}
	root := spec.rootfs()
	upper, work := filepath.Join(spec.Dir, "upper"), filepath.Join(spec.Dir, "work")
	for _, d := range []string{root, upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=/,upperdir=%s,workdir=%s", upper, work)
	if err := unix.Mount("overlay", root, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mounting overlay root at %s: %w", root, err)
	}
	type fsMount struct {
		src, dst, fstype string
		flags            uintptr
		data             string
	}
	base := []fsMount{
		{"/dev", "/dev", "", unix.MS_BIND | unix.MS_REC, ""},
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=755"},
	}
	for _, m := range base {
		dst := filepath.Join(root, m.dst)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, dst, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mounting %s at %s: %w", m.src, dst, err)
		}
	}
	// Keep /dev/shm private and writable like a container's.
	_ = unix.Mount("shm", filepath.Join(root, "dev/shm"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777")

	// Longer destinations last so nested volume mounts land on top.
	mounts := append([]Mount(nil), spec.Mounts...)
	sort.SliceStable(mounts, func(i, j int) bool {
		return strings.Count(filepath.Clean(mounts[i].Destination), "/") < strings.Count(filepath.Clean(mounts[j].Destination), "/")
	})
	for _, m := range mounts {
		if err := mountInto(root, m); err != nil {
			return err
		}
	}
	if spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("sethostname: %w", err)
		}
	}
	return nil
}

// makeMountsSlave stops anything we mount from propagating to the host.
// Sources of Bidirectional mounts stay shared peers of the host's mount so
// mounts made below them in the container do reach the host.
func makeMountsSlave(spec *ContainerSpec) error {
	var bidi []string
	for _, m := range spec.Mounts {
		if m.Propagation == "Bidirectional" {
			bidi = append(bidi, filepath.Clean(m.Source))
		}
	}
	if len(bidi) == 0 {
		if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("making / rslave: %w", err)
		}
		return nil
	}
	mps, err := mountinfo.MountPoints()
	if err != nil {
		return err
	}
	for _, mp := range mps {
		keep := false
		for _, b := range bidi {
			if mp == b || strings.HasPrefix(mp, b+"/") {
				keep = true
			}
		}
		if keep {
			continue
		}
		if err := unix.Mount("", mp, "", unix.MS_SLAVE, ""); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("making %s slave: %w", mp, err)
		}
	}
	return nil
}

// mountInto mounts m inside root, creating the mount point inside root only.
func mountInto(root string, m Mount) error {
	isDir := true
	if !m.Tmpfs {
		st, err := os.Stat(m.Source)
		if err != nil {
			return fmt.Errorf("volume source %s: %w", m.Source, err)
		}
		isDir = st.IsDir()
	}
	dst, err := resolveInRoot(root, m.Destination)
	if err != nil {
		return err
	}
	if isDir {
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return fmt.Errorf("creating mount point %s: %w", m.Destination, err)
		}
	} else {
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("creating mount point %s: %w", m.Destination, err)
		}
		if st, err := os.Lstat(dst); err != nil || st.IsDir() || st.Mode()&os.ModeSymlink != 0 {
			_ = os.RemoveAll(dst)
			f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return fmt.Errorf("creating mount point %s: %w", m.Destination, err)
			}
			f.Close()
		}
	}
	if m.Tmpfs {
		if err := unix.Mount("tmpfs", dst, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
			return fmt.Errorf("mounting tmpfs at %s: %w", m.Destination, err)
		}
	} else if err := unix.Mount(m.Source, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mounting %s at %s: %w", m.Source, m.Destination, err)
	}
	if m.ReadOnly {
		if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("remounting %s read-only: %w", m.Destination, err)
		}
	}
	var prop uintptr = unix.MS_PRIVATE
	switch m.Propagation {
	case "Bidirectional":
		prop = unix.MS_SHARED
	case "HostToContainer":
		prop = unix.MS_SLAVE
	}
	if err := unix.Mount("", dst, "", prop|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("setting propagation of %s: %w", m.Destination, err)
	}
	return nil
}

// resolveInRoot resolves path inside root, following symlinks as if root
// were "/" (e.g. /var/run -> /run), so mount points never escape root.
func resolveInRoot(root, path string) (string, error) {
	parts := strings.Split(filepath.Clean("/"+path), "/")
	cur := "/"
	for hops := 0; len(parts) > 0; {
		p := parts[0]
		parts = parts[1:]
		if p == "" || p == "." {
			continue
		}
		if p == ".." {
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, p)
		st, err := os.Lstat(filepath.Join(root, next))
		if err != nil || st.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return "", fmt.Errorf("too many symlinks resolving %s", path)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			cur = "/"
		}
		parts = append(strings.Split(target, "/"), parts...)
	}
	return filepath.Join(root, cur), nil
}

// startUserProcess starts container-exec chrooted into the rootfs and pumps
// its output into the CRI log. wait blocks until it exited and the exit
// status was written.
func startUserProcess(spec *ContainerSpec) (int, func(), error) {
	keep, err := capsToKeep(spec)
	if err != nil {
		return 0, nil, err
	}
	es := execSpec{Argv: spec.Argv, Env: spec.Env, WorkingDir: spec.WorkingDir, Privileged: spec.Privileged, Keep: keep}
	specR, specW, err := os.Pipe()
	if err != nil {
		return 0, nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return 0, nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return 0, nil, err
	}
	errOutR, errOutW, err := os.Pipe()
	if err != nil {
		return 0, nil, err
	}
	logw, err := openCRILog(spec.LogPath)
	if err != nil {
		return 0, nil, err
	}
	// /proc/self/exe is looked up after the chroot, in the container's own
	// fresh /proc, and still names this binary.
	cmd := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        []string{"weft-kubelet", modeContainerExec},
		Env:         []string{},
		Stdout:      outW,
		Stderr:      errOutW,
		ExtraFiles:  []*os.File{specR, errW},
		SysProcAttr: &syscall.SysProcAttr{Chroot: spec.rootfs(), Setpgid: true},
	}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		logw.Close()
		return 0, nil, fmt.Errorf("starting container process: %w", err)
	}
	specR.Close()
	errW.Close()
	outW.Close()
	errOutW.Close()
	_ = json.NewEncoder(specW).Encode(es)
	specW.Close()
	msg, _ := io.ReadAll(errR)
	errR.Close()
	if len(msg) > 0 {
		_ = cmd.Wait()
		logw.Close()
		return 0, nil, errors.New(strings.TrimSpace(string(msg)))
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pumpCRILog(outR, "stdout", logw) }()
	go func() { defer wg.Done(); pumpCRILog(errOutR, "stderr", logw) }()
	wait := func() {
		werr := cmd.Wait()
		st := ExitStatus{StartedAt: started}
		if ps := cmd.ProcessState; ps != nil {
			ws := ps.Sys().(syscall.WaitStatus)
			switch {
			case ws.Signaled():
				st.ExitCode = 128 + int(ws.Signal())
				st.Signal = unix.SignalName(ws.Signal())
			default:
				st.ExitCode = ws.ExitStatus()
			}
		} else if werr != nil {
			st.ExitCode = 255
		}
		st.FinishedAt = time.Now()
		// The container ends with its main process: kill what it left
		// behind (daemonized children), as a pid namespace would.
		killCgroupProcs(spec.CgroupDirs, os.Getpid())
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		// Output still buffered in pipes held open by killed children.
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
		logw.Close()
		writeExit(spec.exitFile(), st)
	}
	return cmd.Process.Pid, wait, nil
}

func writeExit(path string, st ExitStatus) {
	data, _ := json.Marshal(st)
	_ = atomicfile.Write(path, data, 0o644)
}

// runContainerExec runs chrooted in the container: drop capabilities, chdir,
// and exec the user command. Exec errors go back over fd 4.
func runContainerExec() error {
	specF := os.NewFile(3, "spec")
	errF := os.NewFile(4, "err")
	fail := func(err error) error {
		fmt.Fprintf(errF, "%v", err)
		os.Exit(127)
		return err
	}
	var es execSpec
	if err := json.NewDecoder(specF).Decode(&es); err != nil {
		return fail(fmt.Errorf("reading exec spec: %w", err))
	}
	specF.Close()
	unix.CloseOnExec(4)
	// Capability sets are per thread; exec happens on this one.
	runtime.LockOSThread()
	if !es.Privileged {
		if err := dropBoundingSet(es.Keep); err != nil {
			return fail(err)
		}
	}
	wd := es.WorkingDir
	if wd == "" {
		wd = "/"
	}
	if err := os.MkdirAll(wd, 0o755); err != nil {
		return fail(fmt.Errorf("creating workingDir %s: %w", wd, err))
	}
	if err := os.Chdir(wd); err != nil {
		return fail(fmt.Errorf("chdir %s: %w", wd, err))
	}
	if len(es.Argv) == 0 {
		return fail(errors.New("no command"))
	}
	path, err := lookPathEnv(es.Argv[0], es.Env)
	if err != nil {
		return fail(err)
	}
	err = syscall.Exec(path, es.Argv, es.Env)
	return fail(fmt.Errorf("exec %s: %w", es.Argv[0], err))
}

// lookPathEnv resolves a command name with the container's PATH.
func lookPathEnv(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		if _, err := os.Stat(name); err != nil {
			return "", fmt.Errorf("exec: %q: %w", name, err)
		}
		return name, nil
	}
	pathEnv := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathEnv = v
		}
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", name)
}

func dropBoundingSet(keep []int) error {
	keepSet := map[int]bool{}
	for _, c := range keep {
		keepSet[c] = true
	}
	last := lastCap()
	for c := 0; c <= last; c++ {
		if keepSet[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("dropping capability %d: %w", c, err)
		}
	}
	_ = unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
	return nil
}

func lastCap() int {
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return n
		}
	}
	return unix.CAP_LAST_CAP
}

// runCgroupExec joins cgroups then execs the rest of the command line:
// `cgroup-exec <dir>... -- cmd args...`. Used for exec sessions and exec
// probes so that they are tracked (and killed) with the container.
func runCgroupExec(args []string) error {
	i := 0
	for ; i < len(args) && args[i] != "--"; i++ {
		_ = os.WriteFile(filepath.Join(args[i], "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	}
	if i+1 >= len(args) {
		return errors.New("usage: cgroup-exec CGROUP_DIR [CGROUP_DIR ...] -- CMD [ARG ...]")
	}
	cmd := args[i+1:]
	path, err := exec.LookPath(cmd[0])
	if err != nil {
		return err
	}
	return syscall.Exec(path, cmd, os.Environ())
}
