package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The failure report picks warnings and errors from every log format the
// cluster writes, Weft's slog JSON inside CRI container logs included.
func TestIsProblemLine(t *testing.T) {
	for line, want := range map[string]bool{
		`2026-12-07T10:00:00Z stdout F {"time":"x","level":"WARN","msg":"xds stream ended"}`: true,
		`2026-12-07T10:00:00Z stderr F {"level":"ERROR","msg":"x"}`:                          true,
		`{"level":"warn","msg":"zap"}`:                                                       true,
		`time=x level=ERROR msg=y`:                                                           true,
		`E1207 10:00:00.000 klog error`:                                                      true,
		`2026-12-07T10:00:00Z stdout F {"level":"INFO","msg":"ready"}`:                       false,
		`W1207 requestheader-client-ca-file noise`:                                           false,
	} {
		if got := isProblemLine(line); got != want {
			t.Errorf("isProblemLine(%s) = %v, want %v", line, got, want)
		}
	}
}

// The failure report reads Weft pods' logs where each node's weft-kubelet
// keeps them, live pods' and deleted pods' alike, and only Weft's.
func TestWeftPodProblems(t *testing.T) {
	state := t.TempDir()
	kubelet := filepath.Join(state, "nodes", "node-0", "root", "var", "lib", "kubelet")
	for rel, content := range map[string]string{
		"pods/weft-system_weft-node-abcde_1/node-agent/0.log":       `2026-12-07T10:00:00Z stdout F {"level":"INFO","msg":"ready"}` + "\n" + `2026-12-07T10:00:01Z stdout F {"level":"WARN","msg":"xds stream ended"}` + "\n",
		"deleted-pods/weft-system_weft-control-xyz_2/control/0.log": "2026-12-07T10:00:02Z stderr F time=x level=ERROR msg=\"leader lost\"\n",
		"pods/default_app-1_3/app/0.log":                            "2026-12-07T10:00:03Z stderr F level=ERROR msg=\"not Weft's\"\n",
	} {
		path := filepath.Join(kubelet, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	report := weftPodProblems(state)
	for _, want := range []string{"xds stream ended", "leader lost", "deleted-pods/weft-system_weft-control-xyz_2"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	for _, unwanted := range []string{"ready", "not Weft's"} {
		if strings.Contains(report, unwanted) {
			t.Errorf("report holds %q:\n%s", unwanted, report)
		}
	}
}
