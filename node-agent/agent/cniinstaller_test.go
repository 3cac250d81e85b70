package agent

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/node-agent/cni"
)

// TestCNIInstallerWaitsForTheAgent: the install-cni container installs
// nothing while no agent has served the plugin's socket on the node (the
// plugin would let pods start uncaptured), then installs weft-cni and
// puts it back when another tool rewrites the conflist; it ends with its
// context.
func TestCNIInstallerWaitsForTheAgent(t *testing.T) {
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
	if err := os.WriteFile(conflist, []byte(original), 0o644); err != nil {
		t.Fatal(err)
	}
	await.True(t, "weft-cni put back into the rewritten conflist", installed)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("installer: %v", err)
	}
}
