package kubelet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	utilexec "k8s.io/utils/exec"

	"github.com/weft-mesh/weft/pkg/mountinfo"
)

// TestMain lets the test binary serve as the kubelet binary for the hidden
// container-init/container-exec/cgroup-exec modes.
func TestMain(m *testing.M) {
	MaybeRunHidden(os.Args)
	os.Exit(m.Run())
}

func requirePrivileged(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root (network/mount namespaces, overlayfs, cgroups): run as root")
	}
	if _, err := os.Stat(NsenterPath); err != nil {
		skipOrFail(t, fmt.Sprintf("needs util-linux nsenter at %s: %v", NsenterPath, err))
	}
	if _, err := exec.LookPath("ip"); err != nil {
		skipOrFail(t, "needs iproute2 `ip` in PATH")
	}
}

// skipOrFail skips with the reason, or fails where WEFT_E2E_REQUIRE=1
// (make test, CI): there a missing prerequisite must not pass as a skip.
func skipOrFail(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("WEFT_E2E_REQUIRE") == "1" {
		t.Fatal(reason)
	}
	t.Skip(reason)
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ok, detail := cond()
		if ok {
			return
		}
		last = detail
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s (last: %s)", what, last)
}

func fileIno(t *testing.T, p string) uint64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatalf("stat %s: %v", p, err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

type testEnv struct {
	rt       *Runtime
	dir      string
	netns    string
	podUID   string
	cgParent string
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	requirePrivileged(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	id := newID()[:10]
	env := &testEnv{
		dir:      t.TempDir(),
		podUID:   "test-" + id,
		cgParent: "weft-kubelet-test-" + id,
	}
	env.rt = &Runtime{
		SelfBinary:   self,
		CgroupRoot:   DetectCgroupRoot(),
		CgroupParent: env.cgParent,
		Log:          slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}
	netns, err := createNetns("/run/netns", "weft-test-"+id, nil)
	if err != nil {
		t.Fatalf("createNetns: %v", err)
	}
	env.netns = netns
	t.Cleanup(func() {
		if err := deleteNetns(netns); err != nil {
			t.Errorf("deleteNetns: %v", err)
		}
		env.rt.RemovePodCgroups(env.podUID)
		if env.rt.CgroupRoot != "" {
			_ = os.Remove(filepath.Join(env.rt.CgroupRoot, env.cgParent))
		}
	})
	return env
}

// start starts a container and registers a cleanup that kills it.
func (e *testEnv) start(t *testing.T, spec *ContainerSpec) *Container {
	t.Helper()
	c, err := e.rt.Start(spec, e.netns, e.podUID, ContainerState{})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { e.rt.Stop(c, 0) })
	return c
}

func TestRuntimeContainerLifecycle(t *testing.T) {
	env := newTestEnv(t)
	emptyDir := filepath.Join(env.dir, "volumes", "data")
	cmDir := filepath.Join(env.dir, "volumes", "config")
	if err := os.MkdirAll(emptyDir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := writeAtomicDir(cmDir, map[string]fileContent{"greeting": {data: []byte("hello from configmap"), mode: 0o644}}); err != nil {
		t.Fatal(err)
	}
	hosts := filepath.Join(env.dir, "hosts")
	if err := os.WriteFile(hosts, []byte("10.1.2.3\ttest-pod\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	marker := "/etc/weft-test-" + newID()[:8]
	script := strings.Join([]string{
		"echo started",
		"env",
		"echo hi > /data/out.txt",
		"cat /config/greeting > /data/cm.txt",
		"echo inside > " + marker,
		"echo rw > /config/x 2>/dev/null && echo config-writable > /data/ro.txt",
		"exec sleep 1000",
	}, "; ")
	spec := &ContainerSpec{
		ID:       newID(),
		Name:     "main",
		Dir:      filepath.Join(env.dir, "main"),
		Argv:     []string{"/bin/sh", "-c", script},
		Env:      []string{"FOO=bar", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Hostname: "test-pod",
		Mounts: []Mount{
			{Source: emptyDir, Destination: "/data"},
			{Source: cmDir, Destination: "/config", ReadOnly: true},
			{Source: hosts, Destination: "/etc/hosts"},
		},
		LogPath: filepath.Join(env.dir, "main", "0.log"),
	}
	c := env.start(t, spec)
	pid := c.State.PID

	// Namespaces: own mount ns, the pod's netns.
	selfMnt, _ := os.Readlink("/proc/self/ns/mnt")
	ctrMnt, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		t.Fatal(err)
	}
	if ctrMnt == selfMnt {
		t.Errorf("container shares the host mount namespace %s", ctrMnt)
	}
	if got, want := fileIno(t, fmt.Sprintf("/proc/%d/ns/net", pid)), fileIno(t, env.netns); got != want {
		t.Errorf("container netns inode %d, want the pod netns %d", got, want)
	}

	// Volumes, seen from the host.
	readHost := func(p string) func() (bool, string) {
		return func() (bool, string) {
			b, err := os.ReadFile(p)
			return err == nil && len(b) > 0, fmt.Sprint(string(b), err)
		}
	}
	waitFor(t, "emptyDir file", 10*time.Second, readHost(filepath.Join(emptyDir, "out.txt")))
	waitFor(t, "configmap copy", 10*time.Second, readHost(filepath.Join(emptyDir, "cm.txt")))
	if b, _ := os.ReadFile(filepath.Join(emptyDir, "cm.txt")); string(b) != "hello from configmap" {
		t.Errorf("configmap content seen inside: %q", b)
	}
	// Wait for the last step before the exec so the marker was written.
	waitFor(t, "log output", 10*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(spec.LogPath)
		return bytes.Contains(b, []byte(" stdout F FOO=bar")), string(b)
	})
	if _, err := os.Stat(filepath.Join(emptyDir, "ro.txt")); err == nil {
		t.Errorf("read-only configmap mount was writable")
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("write to %s inside the container leaked to the host (stat err %v)", marker, err)
	}

	// Exec sees the container's view.
	execOut := func(argv ...string) (string, error) {
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err := env.rt.Exec(ctx, &c.State, argv, ExecIO{Stdout: &out, Stderr: &out})
		return strings.TrimSpace(out.String()), err
	}
	waitFor(t, "marker inside", 10*time.Second, func() (bool, string) {
		out, err := execOut("cat", marker)
		return err == nil && out == "inside", fmt.Sprint(out, err)
	})
	if out, err := execOut("hostname"); err != nil || out != "test-pod" {
		t.Errorf("exec hostname = %q, %v", out, err)
	}
	if out, err := execOut("cat", "/etc/hosts"); err != nil || !strings.Contains(out, "test-pod") {
		t.Errorf("exec cat /etc/hosts = %q, %v", out, err)
	}
	if out, err := execOut("ls", "/sys/class/net"); err != nil || out != "lo" {
		t.Errorf("/sys/class/net in the pod netns = %q, %v (want only lo)", out, err)
	}
	if out, err := execOut("sh", "-c", "echo $FOO"); err != nil || out != "bar" {
		t.Errorf("exec env FOO = %q, %v", out, err)
	}
	_, err = execOut("sh", "-c", "exit 3")
	var ee utilexec.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 3 {
		t.Errorf("exec exit 3: got %v", err)
	}
	if _, err := execOut("no-such-command-weft"); !errors.Is(err, ErrCommandNotFound) {
		t.Errorf("exec of a missing command: got %v, want ErrCommandNotFound", err)
	}

	// Cgroup membership.
	if len(c.State.CgroupDirs) == 0 {
		if env.rt.CgroupRoot != "" {
			t.Errorf("no cgroup dir although %s exists", env.rt.CgroupRoot)
		}
	} else if pids := cgroupPids(c.State.CgroupDirs[0]); !slices.Contains(pids, pid) {
		t.Errorf("pid %d not in cgroup %s (%v)", pid, c.State.CgroupDirs[0], pids)
	}

	// Adoption from the state file sees the same process.
	st, err := LoadState(spec.Dir)
	if err != nil {
		t.Fatal(err)
	}
	adopted, err := env.rt.Adopt(st)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}

	// Teardown: SIGTERM ends `sleep`, leaving nothing behind.
	env.rt.Stop(c, 10*time.Second)
	select {
	case <-c.Done:
	default:
		t.Fatal("Stop returned with the shim still running")
	}
	select {
	case <-adopted.Done:
	case <-time.After(5 * time.Second):
		t.Error("adopted handle did not see the exit")
	}
	es := ReadExit(&c.State)
	if es.ExitCode != 128+int(syscall.SIGTERM) {
		t.Errorf("exit code %d, want %d (SIGTERM)", es.ExitCode, 128+int(syscall.SIGTERM))
	}
	if sameProcess(pid, c.State.PIDStart) {
		t.Errorf("container process %d still alive", pid)
	}
	for _, d := range c.State.CgroupDirs {
		if pids := cgroupPids(d); len(pids) > 0 {
			t.Errorf("cgroup %s still has %v", d, pids)
		}
	}
	mps, _ := mountinfo.MountPoints()
	for _, mp := range mps {
		if strings.HasPrefix(mp, env.dir) {
			t.Errorf("mount %s leaked to the host", mp)
		}
	}
}

func TestRuntimeStartErrors(t *testing.T) {
	env := newTestEnv(t)
	spec := &ContainerSpec{
		ID:      newID(),
		Name:    "bad",
		Dir:     filepath.Join(env.dir, "bad"),
		Argv:    []string{"definitely-not-a-command"},
		LogPath: filepath.Join(env.dir, "bad", "0.log"),
	}
	_, err := env.rt.Start(spec, env.netns, env.podUID, ContainerState{})
	if err == nil || !strings.Contains(err.Error(), "executable file not found") {
		t.Fatalf("Start of a missing command: got %v", err)
	}
	spec2 := &ContainerSpec{
		ID:      newID(),
		Name:    "badmount",
		Dir:     filepath.Join(env.dir, "badmount"),
		Argv:    []string{"true"},
		Mounts:  []Mount{{Source: filepath.Join(env.dir, "nope"), Destination: "/x"}},
		LogPath: filepath.Join(env.dir, "badmount", "0.log"),
	}
	if _, err := env.rt.Start(spec2, env.netns, env.podUID, ContainerState{}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("Start with a missing volume source: got %v", err)
	}
	// A quickly exiting command records its exit code.
	spec3 := &ContainerSpec{
		ID:      newID(),
		Name:    "exit7",
		Dir:     filepath.Join(env.dir, "exit7"),
		Argv:    []string{"sh", "-c", "echo bye; exit 7"},
		LogPath: filepath.Join(env.dir, "exit7", "0.log"),
	}
	c := env.start(t, spec3)
	select {
	case <-c.Done:
	case <-time.After(20 * time.Second):
		t.Fatal("container did not exit")
	}
	if es := ReadExit(&c.State); es.ExitCode != 7 {
		t.Errorf("exit code %d, want 7", es.ExitCode)
	}
	b, _ := os.ReadFile(spec3.LogPath)
	if !bytes.Contains(b, []byte(" stdout F bye\n")) {
		t.Errorf("log = %q", b)
	}
}
