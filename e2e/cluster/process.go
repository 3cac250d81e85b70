package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
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
	logf, err := os.OpenFile(filepath.Join(p.logDir, p.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
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
		log.Warn("process exited; restarting", "process", p.name, "state", cmd.ProcessState.String(), "backoff", backoff,
			"log", filepath.Join(p.logDir, p.name+".log"))
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

// running reports whether the process is alive right now.
func (p *process) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
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

// waitFor polls check until it returns nil, the process dies, or ctx ends.
func (p *process) waitFor(ctx context.Context, what string, check func(context.Context) error) error {
	return poll(ctx, what, func(ctx context.Context) error {
		err := check(ctx)
		if err != nil && !p.running() {
			return fatal{fmt.Errorf("%s exited while waiting for %s (see %s): %v", p.name, what, filepath.Join(p.logDir, p.name+".log"), err)}
		}
		return err
	})
}
