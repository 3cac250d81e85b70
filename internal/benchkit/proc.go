package benchkit

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ProcStats is a process's CPU time, resident memory and context switches.
type ProcStats struct {
	CPU         time.Duration // utime+stime
	RSS         int64         // VmRSS, bytes
	RSSAnon     int64         // RssAnon, bytes: heap, stacks
	RSSFile     int64         // RssFile, bytes: the binary's and libraries' mapped pages
	CtxSwitches int64         // voluntary (blocking waits), summed over the process's threads
	Syscalls    int64         // read and write system calls (0 where the kernel does not count them)
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on Linux).
const clockTicks = 100

// ReadProcStats reads pid's CPU time from /proc/<pid>/stat, its resident
// memory from /proc/<pid>/status and its threads' context switches from
// /proc/<pid>/task/*/status (the process's own status counts only its main
// thread's).
func ReadProcStats(pid int) (ProcStats, error) {
	var st ProcStats
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, err
	}
	if st.CPU, err = parseStatCPU(string(raw)); err != nil {
		return st, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	st.RSS = parseStatusKB(string(status), "VmRSS:")
	st.RSSAnon = parseStatusKB(string(status), "RssAnon:")
	st.RSSFile = parseStatusKB(string(status), "RssFile:")
	if io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil { // needs task I/O accounting
		st.Syscalls = parseIOSyscalls(string(io))
	}
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil {
		return st, err
	}
	for _, t := range tasks {
		if raw, err := os.ReadFile(t); err == nil { // a thread may exit meanwhile
			st.CtxSwitches += parseStatusCtxSwitches(string(raw))
		}
	}
	return st, nil
}

// TreeStats is ReadProcStats summed over pid and its children (for
// example nginx's master and workers).
func TreeStats(pid int) (ProcStats, error) {
	var sum ProcStats
	for _, p := range append([]int{pid}, Children(pid)...) {
		s, err := ReadProcStats(p)
		if err != nil {
			return sum, err
		}
		sum.CPU += s.CPU
		sum.RSS += s.RSS
		sum.RSSAnon += s.RSSAnon
		sum.RSSFile += s.RSSFile
		sum.CtxSwitches += s.CtxSwitches
		sum.Syscalls += s.Syscalls
	}
	return sum, nil
}

// Children lists the PIDs whose parent is pid.
func Children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		if f := statFields(string(raw)); len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// statFields are the fields of a /proc/<pid>/stat line after the command
// name (which may hold spaces and parentheses): f[0] is field 3 (state),
// f[1] field 4 (ppid).
func statFields(stat string) []string {
	return strings.Fields(stat[strings.LastIndexByte(stat, ')')+1:])
}

// parseStatCPU is utime+stime (fields 14 and 15) of a /proc/<pid>/stat line.
func parseStatCPU(stat string) (time.Duration, error) {
	f := statFields(stat)
	if len(f) < 13 {
		return 0, fmt.Errorf("too few fields")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// parseStatusCtxSwitches is the voluntary_ctxt_switches line of a
// /proc/<pid>/status: how often the thread blocked and was woken again.
// Involuntary switches (preemption) depend on what else the machine runs.
func parseStatusCtxSwitches(status string) int64 {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// parseIOSyscalls is syscr+syscw of a /proc/<pid>/io: the read-like and
// write-like system calls (read, recvmsg, write, sendmsg, ...).
func parseIOSyscalls(io string) int64 {
	var n int64
	for _, line := range strings.Split(io, "\n") {
		k, v, _ := strings.Cut(line, ":")
		if k == "syscr" || k == "syscw" {
			x, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			n += x
		}
	}
	return n
}

// parseStatusKB is the line of /proc/<pid>/status that starts with key
// (VmRSS:, RssAnon:, ...) in bytes (0 without one, as for a zombie).
func parseStatusKB(status, key string) int64 {
	for _, line := range strings.Split(status, "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}
