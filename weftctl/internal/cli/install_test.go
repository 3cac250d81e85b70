package cli

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weft-mesh/weft/weftctl/internal/install"
)

func TestInstallFlags(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("nodeagent:\n  logLevel: debug\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args    []string
		wantErr string // "" = reaches the cluster
	}{
		{[]string{"install"}, ""},
		{[]string{"install", "--set", "control.replicaCount=1", "--set", "nodeAgent.logLevel=debug", "--wait=false"}, ""},
		{[]string{"install", "--set", "replicaCount=1"}, `unknown component "replicaCount"`},
		{[]string{"install", "-f", bad}, `unknown component "nodeagent"`},
		{[]string{"install", "-f", "/nonexistent.yaml"}, "-f: open /nonexistent.yaml"},
		{[]string{"install", "-o", "wide"}, `-o "wide"`},
		{[]string{"install", "extra"}, "unknown command"},
		{[]string{"uninstall", "--purge", "-o", "yaml"}, ""},
		{[]string{"uninstall", "x"}, "unknown command"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := run(tc.args...)
			if tc.wantErr == "" {
				if !errors.Is(err, errNoCluster) {
					t.Fatalf("err %v, want to reach the cluster", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestUninstallTableOrder(t *testing.T) {
	res := install.UninstallResult{
		Releases: []install.Status{{Release: "weft-node-agent", Status: "uninstalled", Revision: 2}, {Release: "weft-control", Status: "uninstalled"}},
		Nodes:    []install.NodeResult{{Node: "node-0", Cleaned: true}, {Node: "node-1", Message: "Error", ExitCode: new(int32(1))}},
		KeptCRDs: true,
	}
	var got []string
	for _, r := range uninstallTable(res).Rows() {
		got = append(got, strings.Join(r[:3], " "))
	}
	want := []string{"release weft-node-agent uninstalled", "node node-0 cleaned", "node node-1 FAILED", "release weft-control uninstalled", "release weft-base kept"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("rows %q, want %q", got, want)
	}
	if rows := uninstallTable(res).Rows(); rows[2][3] != "exit code 1: Error" {
		t.Errorf("failed node details %q", rows[2][3])
	}
}
