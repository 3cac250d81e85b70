package kubelet

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// TestKeepLogsMovesAPodsLogs: a removed pod's container logs end up under
// <state>/deleted-pods/<pod dir>/, where the e2e failure report reads
// them, and nothing else of the pod is kept.
func TestKeepLogsMovesAPodsLogs(t *testing.T) {
	state := t.TempDir()
	podDir := filepath.Join(state, "pods", "weft-system_weft-node-abcde_1234")
	logs := map[string]string{"node-agent/0.log": "first run\n", "node-agent/1.log": "W restarted\n", "install-cni/0.log": "done\n"}
	for rel, content := range logs {
		writeFile(t, filepath.Join(podDir, rel), content)
	}
	writeFile(t, filepath.Join(podDir, "volumes", "token"), "secret")
	k := &Kubelet{cfg: Config{StateDir: state}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}

	k.keepLogs(podDir)

	for rel, want := range logs {
		got, err := os.ReadFile(filepath.Join(state, "deleted-pods", filepath.Base(podDir), rel))
		if err != nil || string(got) != want {
			t.Errorf("kept %s = %q, %v; want %q", rel, got, err, want)
		}
		if _, err := os.Stat(filepath.Join(podDir, rel)); !os.IsNotExist(err) {
			t.Errorf("%s still in the pod dir (stat: %v)", rel, err)
		}
	}
	kept, _ := filepath.Glob(filepath.Join(state, "deleted-pods", "*", "*", "*"))
	if len(kept) != len(logs) {
		t.Errorf("kept %q, want only the %d logs", kept, len(logs))
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
