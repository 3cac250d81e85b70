package benchkit

import (
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"
)

// A /proc/<pid>/stat line whose command name holds spaces and a ')':
// ppid 4242, utime 250 and stime 75 ticks.
const statFixture = "12345 (a) b (c)) S 4242 12345 12345 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 8 0 123456 1234567890 4321 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0 0 0 0 0 0 0 0 0\n"

const statusFixture = `Name:	weft
Umask:	0022
State:	S (sleeping)
Pid:	12345
PPid:	4242
VmPeak:	 1300000 kB
VmSize:	 1200000 kB
VmHWM:	   40000 kB
VmRSS:	   34816 kB
RssAnon:	   20000 kB
RssFile:	   14000 kB
Threads:	8
voluntary_ctxt_switches:	150
nonvoluntary_ctxt_switches:	7
`

func TestParseStat(t *testing.T) {
	cpu, err := parseStatCPU(statFixture)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3250 * time.Millisecond; cpu != want {
		t.Errorf("CPU = %v, want %v", cpu, want)
	}
	if f := statFields(statFixture); f[0] != "S" || f[1] != "4242" {
		t.Errorf("state and ppid = %q %q, want S 4242", f[0], f[1])
	}
	if _, err := parseStatCPU("1 (x) S 1 2 3"); err == nil {
		t.Error("a short stat line parsed")
	}
}

func TestParseIOSyscalls(t *testing.T) {
	const io = "rchar: 9000\nwchar: 800\nsyscr: 120\nsyscw: 34\nread_bytes: 0\nwrite_bytes: 4096\ncancelled_write_bytes: 0\n"
	if got, want := parseIOSyscalls(io), int64(154); got != want {
		t.Errorf("syscalls = %d, want %d", got, want)
	}
}

func TestParseStatusKB(t *testing.T) {
	for key, want := range map[string]int64{"VmRSS:": 34816 * 1024, "RssAnon:": 20000 * 1024, "RssFile:": 14000 * 1024, "VmSwap:": 0} {
		if got := parseStatusKB(statusFixture, key); got != want {
			t.Errorf("%s = %d, want %d", key, got, want)
		}
	}
	if got := parseStatusKB("Name:\tzombie\nState:\tZ (zombie)\n", "VmRSS:"); got != 0 {
		t.Errorf("RSS without VmRSS = %d, want 0", got)
	}
}

func TestReadProcStatsAndChildren(t *testing.T) {
	// Burn some CPU so that the reading is not zero.
	for deadline := time.Now().Add(30 * time.Millisecond); time.Now().Before(deadline); {
	}
	st, err := ReadProcStats(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.CPU <= 0 || st.RSS <= 0 || st.RSSAnon <= 0 || st.RSSFile <= 0 || st.RSSAnon+st.RSSFile > st.RSS || st.CtxSwitches <= 0 || st.Syscalls <= 0 {
		t.Fatalf("own stats: %+v", st)
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep(1):", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if kids := Children(os.Getpid()); !slices.Contains(kids, cmd.Process.Pid) {
		t.Fatalf("Children(self) = %v, want it to hold %d", kids, cmd.Process.Pid)
	}
	tree, err := TreeStats(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if tree.RSS <= st.RSS {
		t.Errorf("tree RSS %d not above own %d", tree.RSS, st.RSS)
	}
	if _, err := ReadProcStats(cmd.Process.Pid); err != nil {
		t.Errorf("child's stats: %v", err)
	}
}

func TestParseStatusCtxSwitches(t *testing.T) {
	if got, want := parseStatusCtxSwitches(statusFixture), int64(150); got != want {
		t.Errorf("context switches = %d, want %d", got, want)
	}
}
