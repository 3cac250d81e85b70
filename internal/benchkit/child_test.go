package benchkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weft-mesh/weft/internal/await"
)

const childEnv = "WEFT_BENCHKIT_TEST_CHILD"

func TestMain(m *testing.M) { Main(m, childEnv, "test child", runChild) }

// runChild is the child process of TestStartChild: it announces value and
// serves until stdin closes or SIGTERM.
func runChild(value string) error {
	if value == "fail" {
		return fmt.Errorf("asked to fail")
	}
	ctx, stop := ChildContext()
	defer stop()
	fmt.Println("noise")
	fmt.Println("READY " + value)
	<-ctx.Done()
	return nil
}

func TestStartChild(t *testing.T) {
	dir := t.TempDir()
	var c *Child
	t.Run("start", func(t *testing.T) {
		var addr string
		c, addr = StartChild(t, SelfCommand(childEnv, "127.0.0.1:1"), ChildOptions{
			Name: "child", Stderr: filepath.Join(dir, "child.stderr"), Ready: ReadyLine("READY "),
		})
		if addr != "127.0.0.1:1" {
			t.Errorf("announced %q", addr)
		}
		if st, err := c.Stats(); err != nil || st.RSS <= 0 {
			t.Errorf("stats %+v, %v", st, err)
		}
	}) // its cleanup ends the child
	await.True(t, "the cleanup to end the child", func() bool { return c.Cmd.ProcessState != nil })
	if !c.Cmd.ProcessState.Success() {
		t.Fatalf("child not ended cleanly by the cleanup: %v", c.Cmd.ProcessState)
	}
}

// TestMainChildFails: a child whose run fails prints the error after its
// name and exits 1.
func TestMainChildFails(t *testing.T) {
	out, err := SelfCommand(childEnv, "fail").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v", err)
	}
	if !strings.Contains(string(out), "test child: asked to fail") {
		t.Fatalf("output %q", out)
	}
}

func TestFileText(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "log")
	if err := os.WriteFile(p, []byte("log"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := FileText(p); got != "log" {
		t.Errorf("FileText = %q", got)
	}
	if got := FileText(filepath.Join(dir, "missing")); got != "" {
		t.Errorf("FileText of a missing file = %q", got)
	}
}

func TestReadConfig(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "cfg.json")
	if err := os.WriteFile(p, []byte(`{"Name":"a","Port":7}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Name string
		Port int
	}
	if err := ReadConfig(p, &cfg); err != nil || cfg.Name != "a" || cfg.Port != 7 {
		t.Fatalf("%+v, %v", cfg, err)
	}
	if err := os.WriteFile(p, []byte(`{`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ReadConfig(p, &cfg); err == nil || !strings.Contains(err.Error(), "config "+p) {
		t.Fatalf("bad JSON: %v", err)
	}
	if err := ReadConfig(filepath.Join(dir, "missing"), &cfg); !os.IsNotExist(err) {
		t.Fatalf("missing file: %v", err)
	}
}
