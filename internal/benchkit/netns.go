package benchkit

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// RequireRoot skips tb, or fails it under WEFT_E2E_REQUIRE=1 (make test,
// CI), unless the process is root and iproute2 (ip) is installed: what a
// test that builds network namespaces needs. what names the test and what
// it builds, for the message.
func RequireRoot(tb testing.TB, what string) {
	tb.Helper()
	reason := ""
	if os.Geteuid() != 0 {
		reason = what + " needs root"
	} else if _, err := exec.LookPath("ip"); err != nil {
		reason = what + " needs iproute2 (ip)"
	}
	if reason == "" {
		return
	}
	if os.Getenv("WEFT_E2E_REQUIRE") == "1" {
		tb.Fatalf("WEFT_E2E_REQUIRE=1 but the %s", reason)
	}
	tb.Skip("the " + reason)
}

// Run runs a command and fails tb with its output if it fails.
func Run(tb testing.TB, args ...string) {
	tb.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		tb.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// SweepStale removes what runs killed before their cleanups (a test
// timeout) left behind: network namespaces named <netnsPrefix><pid>-*
// and work directories $TMPDIR/<workDirPrefix><pid>-*, unmounting the
// bpffs each may hold at bpffs/, whose process is gone (or is no longer
// a test binary whose name starts with comm).
func SweepStale(tb testing.TB, netnsPrefix, workDirPrefix, comm string) {
	tb.Helper()
	dead := func(name, prefix string) bool {
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok {
			return false
		}
		pid, err := strconv.Atoi(rest[:strings.IndexAny(rest+"-", "-")])
		if err != nil || pid == os.Getpid() {
			return false
		}
		c, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		return err != nil || !strings.HasPrefix(string(c), comm)
	}
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if dead(e.Name(), netnsPrefix) {
				tb.Logf("removing network namespace %s left by a killed run", e.Name())
				_ = exec.Command("ip", "netns", "del", e.Name()).Run()
			}
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), workDirPrefix+"*"))
	for _, d := range dirs {
		if !dead(filepath.Base(d), workDirPrefix) {
			continue
		}
		tb.Logf("removing %s left by a killed run", d)
		if err := unix.Unmount(filepath.Join(d, "bpffs"), unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			tb.Logf("unmount %s/bpffs: %v", d, err)
			continue
		}
		_ = os.RemoveAll(d)
	}
}
