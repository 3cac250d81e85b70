package cluster

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/weft-mesh/weft/pkg/netns"
)

// process is one supervised binary of the cluster (etcd, an apiserver, a
// kubelet...). Like a systemd unit with Restart=always: it is restarted with
// back-off when it exits until the cluster stops.
type process struct {
	name   string   // unique within the cluster; names the log file and cgroup
	path   string   // binary
	args   []string // arguments
	env    []string // extra environment
	netns  string   // netns path, "" = host
	logDir string
	cgroup *cgroup
	// onExit is told of every exit that stop did not ask for, before the
	// restart.
	onExit func(p *process, state *os.ProcessState)

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	stopped bool
}

// start launches the process once and then keeps it running in the
// background until stop is called.
func (p *process) start(log *slog.Logger) error {
	if err := p.launch(); err != nil {
		return err
	}
	go p.supervise(log)
	return nil
}

func (p *process) launch() error {
	logf, err := os.OpenFile(p.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a terminal's ^C reaches the supervisor only, which
	// then stops everything in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := netns.Start(cmd, p.netns); err != nil {
		return fmt.Errorf("start %s (%s): %w", p.name, p.path, err)
	}
	if p.cgroup != nil {
		if err := p.cgroup.add(cmd.Process.Pid); err != nil {
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
			return fmt.Errorf("start %s: %w", p.name, err)
		}
	}
	exited := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()
	go func() { _ = cmd.Wait(); close(exited) }()
	return nil
}

func (p *process) supervise(log *slog.Logger) {
	backoff := time.Second
	for {
		p.mu.Lock()
		exited, cmd := p.exited, p.cmd
		p.mu.Unlock()
		<-exited
		p.mu.Lock()
		stopped := p.stopped
		p.mu.Unlock()
		if stopped {
			return
		}
		if p.onExit != nil {
			p.onExit(p, cmd.ProcessState)
		}
		log.Warn("process exited; restarting", "process", p.name, "state", cmd.ProcessState.String(), "backoff", backoff,
			"log", p.logPath())
		time.Sleep(backoff)
		backoff = min(backoff*2, 30*time.Second)
		p.mu.Lock()
		if p.stopped {
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		if err := p.launch(); err != nil {
			log.Error("restart failed", "process", p.name, "err", err)
			return
		}
	}
}

// stop sends SIGTERM, then SIGKILL after grace, and waits for the exit.
func (p *process) stop(grace time.Duration) {
	p.mu.Lock()
	p.stopped = true
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-exited
	}
}

func (p *process) logPath() string { return filepath.Join(p.logDir, p.name+".log") }

// tailFile returns the last n lines of a log file, indented, read from its
// last 64 KiB at most.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "    (" + err.Error() + ")"
	}
	defer f.Close()
	const most = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > most {
		_, _ = f.Seek(-most, io.SeekEnd)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return "    (" + err.Error() + ")"
	}
	return lastLines(string(data), n)
}

// lastLines returns the last n lines of text, each indented.
func lastLines(text string, n int) string {
	text = strings.TrimRight(text, "\n")
	if text == "" {
		return "    (empty)"
	}
	lines := strings.Split(text, "\n")
	lines = lines[max(0, len(lines)-n):]
	return "    " + strings.Join(lines, "\n    ")
}
