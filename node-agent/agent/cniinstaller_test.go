package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/node-agent/cni"
)

// installerConfig is an installer's Config on a node root of its own with
// a one-plugin conflist (returned) and a weft-cni to install.
func installerConfig(t *testing.T) (Config, string) {
	t.Helper()
	root := t.TempDir()
	cfg := Config{CNIBinDir: filepath.Join(root, "bin"), CNIConfDir: filepath.Join(root, "net.d"), RunDir: filepath.Join(root, "run"),
		CNIPlugin: filepath.Join(root, "weft-cni")}
	for _, d := range []string{cfg.CNIBinDir, cfg.CNIConfDir, cfg.RunDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conflist := filepath.Join(cfg.CNIConfDir, "10-net.conflist")
	original := `{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"ptp"}]}`
	for path, content := range map[string]string{conflist: original, cfg.CNIPlugin: "#!/bin/sh\n"} {
		if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return cfg, conflist
}

// TestCNIInstallerWaitsForTheAgent: the install-cni container installs
// nothing while no agent has served the plugin's socket on the node (the
// plugin would let pods start uncaptured), then installs weft-cni and
// puts it back when another tool rewrites the conflist; it ends with its
// context.
func TestCNIInstallerWaitsForTheAgent(t *testing.T) {
	cfg, conflist := installerConfig(t)
	original, err := os.ReadFile(conflist)
	if err != nil {
		t.Fatal(err)
	}
	waiting := await.NewLogLine("waiting for the node agent")
	cfg.Log = slog.New(slog.NewTextHandler(waiting, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunCNIInstaller(ctx, cfg) }()
	installed := func() bool {
		b, _ := os.ReadFile(conflist)
		_, err := os.Stat(filepath.Join(cfg.CNIBinDir, cni.PluginType))
		return strings.Contains(string(b), cni.PluginType) && err == nil
	}

	// It has looked for the socket (and logged that it waits): nothing
	// is installed yet.
	waiting.Wait(t)
	if installed() {
		t.Fatal("installed before any agent served the socket")
	}
	if err := os.WriteFile(cfg.socket(), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	await.True(t, "weft-cni installed once the socket exists", installed)
	if err := os.WriteFile(conflist, original, 0o644); err != nil {
		t.Fatal(err)
	}
	await.True(t, "weft-cni put back into the rewritten conflist", installed)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("installer: %v", err)
	}
}

// TestCNIInstallerRemovesTheReadinessTaint: the taint that keeps pods off
// a new node is removed only once weft-cni is installed (a pod scheduled
// earlier would never pass through the plugin), and a failed removal is
// tried again rather than leaving the node unschedulable.
func TestCNIInstallerRemovesTheReadinessTaint(t *testing.T) {
	cfg, conflist := installerConfig(t)
	cfg.NodeName, cfg.ReadinessTaint = "node-1", "weft.io/agent-not-ready"
	type call struct {
		node, key string
		installed bool
	}
	calls := make(chan call, 10)
	var tries atomic.Int32
	cfg.RemoveNodeTaint = func(_ context.Context, node, key string) (bool, error) {
		b, _ := os.ReadFile(conflist)
		calls <- call{node, key, strings.Contains(string(b), cni.PluginType)}
		if tries.Add(1) == 1 {
			return false, errors.New("the API server is starting")
		}
		return true, nil
	}
	waiting := await.NewLogLine("waiting for the node agent")
	cfg.Log = slog.New(slog.NewTextHandler(waiting, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go RunCNIInstaller(ctx, cfg)
	waiting.Wait(t)
	select {
	case c := <-calls:
		t.Fatalf("taint removed before any agent served the socket: %+v", c)
	default:
	}
	if err := os.WriteFile(cfg.socket(), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	want := call{"node-1", "weft.io/agent-not-ready", true}
	for i := range 2 { // the failed try, then the one that removes it
		if c := <-calls; c != want {
			t.Fatalf("removal %d: %+v, want %+v (after the plugin is installed)", i+1, c, want)
		}
	}
}

func TestCNIInstallerNeedsWhatTheTaintTakes(t *testing.T) {
	cfg, _ := installerConfig(t)
	cfg.ReadinessTaint = "weft.io/agent-not-ready"
	if err := RunCNIInstaller(context.Background(), cfg); err == nil {
		t.Error("a readiness taint without a node name and API access was accepted")
	}
}
