package cli

import (
	"bytes"
	"errors"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/weft-mesh/weft/weftctl/internal/kube"
)

var errNoCluster = errors.New("test: no cluster")

// run executes weftctl with args; reaching the cluster fails with
// errNoCluster, so a validation error proves validation came first.
func run(args ...string) (string, error) {
	var out, errOut bytes.Buffer
	root := newRoot(&options{out: &out, errOut: &errOut,
		connect: func(kube.Flags) (*kube.Client, error) { return nil, errNoCluster }})
	root.SetArgs(args)
	err := root.Execute()
	return out.String() + errOut.String(), err
}

func TestFlagValidation(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string // "" = reaches the cluster
	}{
		{[]string{"waypoint", "apply"}, ""},
		{[]string{"waypoint", "apply", "--enroll-namespace", "--wait", "-n", "default"}, ""},
		{[]string{"waypoint", "apply", "--for", "everything"}, `--for "everything"`},
		{[]string{"waypoint", "apply", "--service-account", "sa", "--enroll-namespace"}, "exclude each other"},
		{[]string{"waypoint", "apply", "--service-account", "sa", "--name", "sa"}, "identity"},
		{[]string{"waypoint", "apply", "--name", "Bad_Name"}, `--name "Bad_Name"`},
		{[]string{"waypoint", "apply", "extra"}, "unknown command"},
		{[]string{"waypoint", "delete"}, "give the waypoints to delete"},
		{[]string{"waypoint", "delete", "a", "--all"}, "not both"},
		{[]string{"waypoint", "delete", "--all"}, ""},
		{[]string{"waypoint", "status"}, "accepts 1 arg"},
		{[]string{"waypoint", "list", "-o", "wide"}, `-o "wide"`},
		{[]string{"waypoint", "list", "-A", "-o", "yaml"}, ""},
		{[]string{"node-config", "workloads"}, "which node?"},
		{[]string{"node-config", "workloads", "--node", "node-0", "somepod"}, "not both"},
		{[]string{"node-config", "certificates", "--node", "node-0", "--admin-port", "0"}, "--admin-port 0"},
		{[]string{"node-config", "connections", "--node", "node-0", "-o", "xml"}, `-o "xml"`},
		{[]string{"node-config", "services", "--node", "node-0", "-o", "json"}, ""},
		{[]string{"node-config", "policies", "-n", "default", "productpage-v1-x"}, ""},
		{[]string{"node-config", "dump", "--node", "node-1"}, ""},
		{[]string{"proxy-status", "-o", "json"}, ""},
		{[]string{"proxy-status", "x"}, "unknown command"},
		{[]string{"analyze", "-A", "-o", "yaml"}, ""},
		{[]string{"analyze", "-o", "xml"}, `-o "xml"`},
		{[]string{"analyze", "x"}, "unknown command"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := run(tc.args...)
			want := tc.wantErr
			if want == "" {
				want = errNoCluster.Error()
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v, want %q", err, want)
			}
		})
	}
}

func TestVersionClientOnly(t *testing.T) {
	out, err := run("version", "--client", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"client"`) || strings.Contains(out, `"server"`) {
		t.Fatalf("version --client:\n%s", out)
	}
	// Without a cluster the server part says why, and the command works.
	out, err = run("version")
	if err != nil || !strings.Contains(out, "test: no cluster") || !strings.Contains(out, "client (weftctl)") {
		t.Fatalf("version without a cluster: %v\n%s", err, out)
	}
}

func TestClientVersionFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v0.2.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef"}, {Key: "vcs.modified", Value: "true"}}}
	v := clientVersion(bi, true)
	if v.Version != "v0.2.0" || v.Revision != "0123456789abcdef" || !v.Modified || v.GoVersion != "go1.26.0" {
		t.Fatalf("%+v", v)
	}
	rows := VersionInfo{Client: v, ServerError: "no cluster"}.Rows()
	if rows[0][2] != "go1.26.0, revision 0123456789ab (modified)" || rows[1][2] != "no cluster" {
		t.Fatalf("rows %v", rows)
	}
	if v := clientVersion(nil, false); v.Version != "unknown" {
		t.Fatalf("no build info: %+v", v)
	}
}

// TestDumpIsIndented: node-config dump prints the agent's compact dump
// indented, and a body that is not JSON as it came.
func TestDumpIsIndented(t *testing.T) {
	if got, want := string(indented([]byte(`{"config":{"workloads":{}},"enrolled":["10.0.0.1"]}`))), "{\n  \"config\": {\n    \"workloads\": {}\n  },\n  \"enrolled\": [\n    \"10.0.0.1\"\n  ]\n}"; got != want {
		t.Errorf("indented:\n%s\nwant:\n%s", got, want)
	}
	if got := string(indented([]byte("not json\n"))); got != "not json\n" {
		t.Errorf("a body that is not JSON became %q", got)
	}
}
