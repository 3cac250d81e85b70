package kubelet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// NsenterPath is the util-linux nsenter used to run commands in containers.
var NsenterPath = "/usr/bin/nsenter"

// ExecIO wires an exec session.
type ExecIO struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	TTY    bool
	Resize <-chan remotecommand.TerminalSize
}

// ErrCommandNotFound is returned (not as an exit code) when the command
// does not exist in the container, like a runtime's exec error.
var ErrCommandNotFound = errors.New("executable file not found in $PATH")

// Exec runs argv inside the container's namespaces and root through
// nsenter, joined to the container's cgroup so it dies with it. A non-zero
// exit is returned as a utilexec.ExitError.
func (r *Runtime) Exec(ctx context.Context, st *ContainerState, argv []string, eio ExecIO) error {
	if len(argv) == 0 {
		return errors.New("no command given")
	}
	if !sameProcess(st.PID, st.PIDStart) {
		return fmt.Errorf("container %s is not running", st.Name)
	}
	env := procEnviron(st.PID)
	if err := checkCommandInRoot(st.PID, argv[0], env); err != nil {
		return err
	}
	args := []string{modeCgroupExec}
	args = append(args, st.CgroupDirs...)
	args = append(args, "--", NsenterPath, "-t", strconv.Itoa(st.PID), "-n", "-m", "-u", "-r", "-w", "--")
	args = append(args, argv...)
	cmd := exec.CommandContext(ctx, r.SelfBinary, args...)
	cmd.Env = env
	// Bounds how long output of leftover background children is waited for.
	cmd.WaitDelay = 2 * time.Second
	cmd.Cancel = func() error {
		// Kill the whole session, not only the nsenter'd command.
		if cmd.Process != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		return nil
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var copiers sync.WaitGroup
	if eio.TTY {
		master, slave, err := openPty()
		if err != nil {
			return err
		}
		defer master.Close()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr.Setctty = true
		cmd.SysProcAttr.Ctty = 0
		if err := cmd.Start(); err != nil {
			slave.Close()
			return err
		}
		slave.Close()
		if eio.Resize != nil {
			go func() {
				for sz := range eio.Resize {
					_ = unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: sz.Height, Col: sz.Width})
				}
			}()
		}
		if eio.Stdin != nil {
			go func() { _, _ = io.Copy(master, eio.Stdin) }()
		}
		if eio.Stdout != nil {
			copiers.Add(1)
			go func() { defer copiers.Done(); _, _ = io.Copy(eio.Stdout, master) }()
		}
	} else {
		if eio.Stdin != nil {
			// Our own pipe: Wait must not block on a client that never
			// closes its stdin.
			pr, pw, err := os.Pipe()
			if err != nil {
				return err
			}
			defer pr.Close()
			cmd.Stdin = pr
			go func() { _, _ = io.Copy(pw, eio.Stdin); pw.Close() }()
		}
		cmd.Stdout, cmd.Stderr = eio.Stdout, eio.Stderr
		if err := cmd.Start(); err != nil {
			return err
		}
	}
	err := cmd.Wait()
	// Reap leftovers of the session (background children).
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	copiers.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code := ee.ExitCode()
		if code < 0 {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code = 128 + int(ws.Signal())
			}
		}
		return utilexec.CodeExitError{Err: err, Code: code}
	}
	return err
}

// procEnviron is the container process's environment.
func procEnviron(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return nil
	}
	var out []string
	for _, kv := range bytes.Split(data, []byte{0}) {
		if len(kv) > 0 {
			out = append(out, string(kv))
		}
	}
	return out
}

// checkCommandInRoot resolves the command in the container's root so a
// missing one is reported as an error instead of nsenter's exit code.
func checkCommandInRoot(pid int, name string, env []string) error {
	root := fmt.Sprintf("/proc/%d/root", pid)
	if strings.Contains(name, "/") {
		if !filepath.IsAbs(name) {
			return nil // relative to the container's cwd: let it run
		}
		if _, err := os.Stat(filepath.Join(root, name)); err != nil {
			return fmt.Errorf("exec: %q: no such file or directory", name)
		}
		return nil
	}
	pathEnv := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathEnv = v
		}
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if st, err := os.Stat(filepath.Join(root, dir, name)); err == nil && !st.IsDir() {
			return nil
		}
	}
	return fmt.Errorf("exec: %q: %w", name, ErrCommandNotFound)
}

// openPty allocates a pseudo-terminal pair.
func openPty() (master, slave *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("unlocking pty: %w", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("getting pty number: %w", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	return m, s, nil
}
