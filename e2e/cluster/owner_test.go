package cluster

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestStartRefusesAClusterRunByAnotherProcess: a cluster of the same name
// run from another state directory (another checkout's e2e or make demo)
// is not taken for leftovers: Start refuses, naming its owner, and the
// other cluster's processes live on. The "other cluster" is a sleep in the
// name's cgroup whose parent, a shell, stands for its owner.
func TestStartRefusesAClusterRunByAnotherProcess(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("WEFT_E2E_REQUIRE") == "1" {
			t.Fatal("needs root (cgroups), and WEFT_E2E_REQUIRE=1 forbids skipping")
		}
		t.Skip("needs root (cgroups)")
	}
	const name = "owned"
	cg, err := newCgroup(clusterCgroupPath(name))
	if err != nil {
		t.Fatal(err)
	}
	sh := exec.Command("sh", "-c", "sleep 300 & echo $!; wait")
	out, err := sh.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	sleepPID, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil {
		t.Fatalf("sleep's pid: %q, %v, %v", line, err, perr)
	}
	t.Cleanup(func() {
		syscall.Kill(sleepPID, syscall.SIGKILL)
		sh.Process.Kill()
		sh.Wait()
		cg.destroy(0)
	})
	if err := cg.add(sleepPID); err != nil {
		t.Fatal(err)
	}

	assets, bin := fakeInstall(t)
	cfg := Config{Name: name, StateDir: t.TempDir(), AssetsDir: assets, BinDir: bin}
	_, err = Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "is up, run by pid "+strconv.Itoa(sh.Process.Pid)) {
		t.Fatalf("want an error naming the owner pid %d, got %v", sh.Process.Pid, err)
	}
	if !ProcessAlive(sleepPID) {
		t.Fatal("Start killed the other cluster's process")
	}
}
