package kubelet

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

func TestNodeRunBinds(t *testing.T) {
	hostRun, err := filepath.EvalSymlinks("/var/run")
	if err != nil {
		hostRun = "/run"
	}
	root := t.TempDir()
	if b, err := nodeRunBinds(root); err != nil || len(b) != 0 {
		t.Fatalf("no var/run: %v %v", b, err)
	}
	// The node's /var/run is a symlink to /run, as on Debian.
	for _, d := range []string{"run/weft", "run/netns", "run/other"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.MkdirAll(filepath.Join(root, "var"), 0o755)
	if err := os.Symlink("/run", filepath.Join(root, "var/run")); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(root, "run/kubelet.pid"), []byte("1"), 0o644)
	b, err := nodeRunBinds(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []runBind{
		{src: filepath.Join(root, "run/other"), dst: filepath.Join(hostRun, "other")},
		{src: filepath.Join(root, "run/weft"), dst: filepath.Join(hostRun, "weft")},
	}
	if !reflect.DeepEqual(b, want) {
		t.Errorf("binds = %+v, want %+v (netns and files skipped)", b, want)
	}
}

const fakeCNIPlugin = `#!/bin/sh
conf=$(cat)
case "$CNI_COMMAND" in
ADD)
	addr=$(cat /var/run/weft/marker) || exit 1
	printf '%s' "$conf" > /run/weft/stdin.json
	echo "fake plugin note" >&2
	printf '{"cniVersion":"1.0.0","ips":[{"address":"%s"}],"dns":{"domain":"%s","search":["%s"]}}' \
		"$addr" "$CNI_CONTAINERID" "$(readlink /proc/self/ns/mnt)"
	;;
DEL)
	echo "boom: $(cat /run/weft/marker)" >&2
	exit 3
	;;
FAIL)
	echo "oops" >&2
	exit 4
	;;
JSONFAIL)
	printf '{"cniVersion":"1.0.0","code":7,"msg":"bad thing","details":"d"}'
	exit 1
	;;
NS)
	readlink /proc/self/ns/mnt
	;;
esac
`

// TestNodeCNIExec runs a fake plugin through nodeCNIExec: it must see the
// node's /var/run/weft (under RootDir), not the machine's, and behave like
// libcni's RawExec otherwise.
func TestNodeCNIExec(t *testing.T) {
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root (mount namespaces): run as root")
	}
	hostRun, err := filepath.EvalSymlinks("/var/run")
	if err != nil {
		hostRun = "/run"
	}
	hostWeft := filepath.Join(hostRun, "weft")
	if _, err := os.Lstat(filepath.Join(hostWeft, "marker")); err == nil {
		t.Fatalf("%s/marker exists on this machine: cannot tell it from the node's", hostWeft)
	}
	if _, err := os.Lstat(hostWeft); errors.Is(err, os.ErrNotExist) {
		// cni-exec creates the mount point; remove it if still empty.
		t.Cleanup(func() { _ = os.Remove(hostWeft) })
	}

	root := t.TempDir()
	nodeWeft := filepath.Join(root, "var/run/weft")
	if err := os.MkdirAll(nodeWeft, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(nodeWeft, "marker"), []byte("10.77.0.5/24"), 0o644); err != nil {
		t.Fatal(err)
	}
	binDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(binDir, "weft-fake"), []byte(fakeCNIPlugin), 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ownNS, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	e := newNodeCNIExec(self, root)
	e.Stderr = &stderr
	ctx := context.Background()

	// ADD through libcni: config on stdin, CNI_* env, result on stdout.
	cfg := libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(root, "var/lib/cni/cache"), e)
	list, err := libcni.ConfListFromBytes([]byte(`{"cniVersion":"1.0.0","name":"fake-net","plugins":[
 {"type":"weft-fake","agentSocket":"/var/run/weft/cni.sock","spoolDir":"/var/run/weft/cni-spool"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	rt := &libcni.RuntimeConf{ContainerID: "ctr1", NetNS: "/run/netns/none", IfName: "eth0"}
	res, err := cfg.AddNetworkList(ctx, list, rt)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.IPs) != 1 || r.IPs[0].Address.String() != "10.77.0.5/24" {
		t.Errorf("result IPs %v: the plugin did not read the node's /var/run/weft/marker", r.IPs)
	}
	if r.DNS.Domain != "ctr1" {
		t.Errorf("CNI_CONTAINERID seen by the plugin: %q", r.DNS.Domain)
	}
	if len(r.DNS.Search) != 1 || r.DNS.Search[0] == ownNS {
		t.Errorf("plugin mount namespace %v, want a new one (ours is %s)", r.DNS.Search, ownNS)
	}
	if !strings.Contains(stderr.String(), "fake plugin note") {
		t.Errorf("plugin stderr not passed on: %q", stderr.String())
	}
	stdin, err := os.ReadFile(filepath.Join(nodeWeft, "stdin.json"))
	if err != nil || !strings.Contains(string(stdin), `"agentSocket":"/var/run/weft/cni.sock"`) || !strings.Contains(string(stdin), `"name":"fake-net"`) {
		t.Errorf("config on the plugin's stdin (written to the node's /run/weft): %q %v", stdin, err)
	}
	for _, f := range []string{"marker", "stdin.json"} {
		if _, err := os.Lstat(filepath.Join(hostWeft, f)); err == nil {
			t.Errorf("%s/%s exists on the machine: the plugin wrote outside the node", hostWeft, f)
		}
	}
	if isMountPoint(hostWeft) {
		t.Errorf("the bind mount on %s leaked into the machine's mount namespace", hostWeft)
	}

	// Failures: exit status and stderr reach the caller (through libcni).
	err = cfg.DelNetworkList(ctx, list, rt)
	var cerr *types.Error
	if !errors.As(err, &cerr) || !strings.Contains(cerr.Msg, `"boom: 10.77.0.5/24\n"`) || !strings.Contains(cerr.Msg, "exit status 3") {
		t.Errorf("DEL error: %v, want the plugin's stderr and exit status 3", err)
	}
	// Error decoding is RawExec's: compare with the plugin run directly.
	plugin := filepath.Join(binDir, "weft-fake")
	raw := &invoke.RawExec{Stderr: &stderr}
	for _, cmd := range []string{"FAIL", "JSONFAIL"} {
		env := append(os.Environ(), "CNI_COMMAND="+cmd)
		_, got := e.ExecPlugin(ctx, plugin, []byte("{}"), env)
		_, want := raw.ExecPlugin(ctx, plugin, []byte("{}"), env)
		if got == nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: error %#v, RawExec gives %#v", cmd, got, want)
		}
	}
	if _, err := e.ExecPlugin(ctx, plugin, nil, append(os.Environ(), "CNI_COMMAND=JSONFAIL")); !errors.As(err, &cerr) || cerr.Code != 7 || cerr.Msg != "bad thing" {
		t.Errorf("JSON error on stdout: %#v", err)
	}

	// Without node runtime directories the plugin runs directly.
	direct := newNodeCNIExec(self, t.TempDir())
	out, err := direct.ExecPlugin(ctx, plugin, nil, append(os.Environ(), "CNI_COMMAND=NS"))
	if err != nil || strings.TrimSpace(string(out)) != ownNS {
		t.Errorf("no var/run dirs: plugin in mount namespace %q (%v), want ours %s", out, err, ownNS)
	}
}
