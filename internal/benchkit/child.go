package benchkit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// ---- the test side ----

// Child is a process a benchmark started (a proxy under test); the
// cleanup StartChild registers ends it.
type Child struct {
	Name   string // for messages
	Cmd    *exec.Cmd
	Stderr string // path of its stderr log
}

// Pid is the child's process ID.
func (c *Child) Pid() int { return c.Cmd.Process.Pid }

// Stats is the child's CPU time and resident memory summed over it and
// the processes it forked (nginx's workers).
func (c *Child) Stats() (ProcStats, error) { return TreeStats(c.Pid()) }

// Ready reads a starting child's stdout and returns what it announced
// (its listen address, or "") once it is ready; StartChild discards the
// rest of stdout afterwards.
type Ready func(stdout io.Reader) (string, error)

// ReadyLine waits for a line starting with prefix and returns the rest of
// it.
func ReadyLine(prefix string) Ready {
	return func(stdout io.Reader) (string, error) {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), prefix); ok {
				return rest, nil
			}
		}
		return "", errors.New("exited before listening")
	}
}

// ChildOptions say how StartChild starts a process and how it knows the
// process is ready.
type ChildOptions struct {
	Name   string                // for messages; "": the command's base name
	Stderr string                // the file its stderr goes to (created)
	Start  func(*exec.Cmd) error // nil: cmd.Start; netns.Start for one in a network namespace
	Ready  Ready
}

// Binary is the installed program name (a peer: nginx, haproxy), "" when
// there is none. Debian puts servers in /usr/sbin, which a user's PATH may
// lack, so that and /usr/local/sbin come first, then more, then PATH.
func Binary(name string, more ...string) string {
	for _, p := range append([]string{"/usr/sbin/" + name, "/usr/local/sbin/" + name}, more...) {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, _ := exec.LookPath(name)
	return p
}

// SelfCommand re-executes the test binary, running no test, with env set
// to value: Main in the child's TestMain picks the mode from env. The
// child runs as Weft's proxies are deployed: with mesh.ProxyGODEBUG (any
// GODEBUG of the parent is replaced).
func SelfCommand(env, value string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env+"="+value, "GODEBUG="+mesh.ProxyGODEBUG)
	return cmd
}

// StartChild starts cmd with a pipe as its stdin, waits (up to 20 s)
// until o.Ready reports its address and registers the cleanup that ends
// it: stdin closed, SIGTERM, SIGKILL after 5 s, and SIGKILL for every
// process it had forked (nginx workers outliving a killed master).
func StartChild(tb testing.TB, cmd *exec.Cmd, o ChildOptions) (*Child, string) {
	tb.Helper()
	c := &Child{Name: o.Name, Cmd: cmd, Stderr: o.Stderr}
	if c.Name == "" {
		c.Name = filepath.Base(cmd.Path)
	}
	stderr, err := os.Create(o.Stderr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { stderr.Close() })
	cmd.Stderr = stderr
	// A child made by Main exits when its stdin closes.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	start := o.Start
	if start == nil {
		start = (*exec.Cmd).Start
	}
	if err := start(cmd); err != nil {
		tb.Fatalf("start %s: %v", c.Name, err)
	}
	done := make(chan struct{})
	tb.Cleanup(func() {
		forked := Children(cmd.Process.Pid)
		stdin.Close()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		for _, pid := range forked {
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Signal(syscall.SIGKILL)
			}
		}
	})
	type result struct {
		addr string
		err  error
	}
	readyc := make(chan result, 1)
	go func() {
		addr, err := o.Ready(stdout)
		readyc <- result{addr, err}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	select {
	case r := <-readyc:
		if r.err != nil {
			tb.Fatalf("%s: %v:\n%s", c.Name, r.err, FileText(o.Stderr))
		}
		return c, r.addr
	case <-time.After(20 * time.Second):
		tb.Fatalf("%s not ready after 20 s:\n%s", c.Name, FileText(o.Stderr))
	}
	return nil, ""
}

// ---- the child side ----

// Main is the TestMain of a package whose test binary also runs as a child
// process: with env set (by SelfCommand) it runs child with env's value
// and exits, 0 or 1 after printing the error after name; without, it runs
// the tests.
func Main(m *testing.M, env, name string, child func(value string) error) {
	if v := os.Getenv(env); v != "" {
		if err := child(v); err != nil {
			fmt.Fprintln(os.Stderr, name+":", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// ReadConfig decodes the JSON file at path (a child's configuration, the
// value SelfCommand passed) into cfg.
func ReadConfig(path string, cfg any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, cfg); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// ChildContext is what a child serves under: it ends on SIGTERM or
// SIGINT, or once stdin closes (the test process holding it is gone). The
// signals stay caught until the process exits: the parent closes stdin and
// then sends SIGTERM, and a handler removed on the first of the two would
// let the second kill the child (a flake under -race).
func ChildContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		select {
		case <-sigs:
		case <-ctx.Done():
		}
		cancel()
	}()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	return ctx, cancel
}
