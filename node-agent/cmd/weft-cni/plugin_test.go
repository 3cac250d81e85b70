package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/weft-mesh/weft/node-agent/cni"
)

// prevResult as ptp returns it: host veth (no sandbox), container eth0.
// "lo" stands in for the host veth so that it resolves in this netns.
const prevResult = `{"cniVersion":"1.0.0","interfaces":[{"name":"lo","mac":"aa:bb:cc:dd:ee:01"},{"name":"eth0","mac":"aa:bb:cc:dd:ee:02","sandbox":"/var/run/netns/pod1"}],"ips":[{"interface":1,"address":"10.244.0.5/24","gateway":"10.244.0.1"},{"interface":1,"address":"fd00::5/64"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}`

func stdin(t *testing.T, dir, version string, withPrev bool) []byte {
	t.Helper()
	conf := fmt.Sprintf(`{"cniVersion":%q,"name":"weft-pod-network","type":"weft-cni","agentSocket":%q,"spoolDir":%q,"enrolledNamespaces":%q,"logLevel":"debug"`,
		version, filepath.Join(dir, "cni.sock"), filepath.Join(dir, "spool"), filepath.Join(dir, "enrolled-namespaces.json"))
	if withPrev {
		conf += `,"prevResult":` + prevResult
	}
	return []byte(conf + "}")
}

func cmdArgs(data []byte) *skel.CmdArgs {
	return &skel.CmdArgs{
		ContainerID: "c0ffee",
		Netns:       "/var/run/netns/pod1",
		IfName:      "eth0",
		Args:        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=productpage-1;K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=1234-5678",
		Path:        "/opt/cni/bin",
		StdinData:   data,
	}
}

type agent struct {
	mu     sync.Mutex
	events []cni.Event
}

func (a *agent) handle(_ context.Context, ev cni.Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, ev)
	return nil
}

func (a *agent) got() []cni.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]cni.Event(nil), a.events...)
}

func startAgent(t *testing.T, dir string) *agent {
	t.Helper()
	a := &agent{}
	s := cni.NewServer(filepath.Join(dir, "cni.sock"), a.handle)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return a
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

func spool(t *testing.T, dir string) []string {
	entries, _ := os.ReadDir(filepath.Join(dir, "spool"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestAddDeliversEventAndPassesResult(t *testing.T) {
	dir := t.TempDir()
	a := startAgent(t, dir)
	var out, logs bytes.Buffer
	p := &plugin{stdout: &out, stderr: &logs}
	if err := p.cmdAdd(cmdArgs(stdin(t, dir, "1.0.0", true))); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if out.String() != prevResult { // byte for byte
		t.Errorf("stdout %s\nwant prevResult %s", out.Bytes(), prevResult)
	}
	evs := a.got()
	if len(evs) != 1 {
		t.Fatalf("agent got %d events; logs:\n%s", len(evs), logs.String())
	}
	ev := evs[0]
	lo, _ := net.InterfaceByName("lo")
	want := cni.Event{Op: cni.OpAdd, PodNamespace: "default", PodName: "productpage-1", PodUID: "1234-5678",
		Netns: "/var/run/netns/pod1", HostInterface: "lo", HostIfindex: lo.Index,
		IPs: []string{"10.244.0.5", "fd00::5"}, ContainerID: "c0ffee", Time: ev.Time}
	if fmt.Sprint(ev) != fmt.Sprint(want) {
		t.Errorf("event\n got %+v\nwant %+v", ev, want)
	}
	if len(spool(t, dir)) != 0 {
		t.Errorf("spooled despite a live agent: %v", spool(t, dir))
	}
}

func TestAddWithAgentDownSpoolsAndSucceeds(t *testing.T) {
	for _, version := range []string{"1.0.0", "0.4.0"} {
		t.Run(version, func(t *testing.T) {
			dir := t.TempDir()
			var out bytes.Buffer
			p := &plugin{stdout: &out, stderr: io.Discard}
			data := stdin(t, dir, version, true)
			if version == "0.4.0" {
				data = bytes.Replace(data, []byte(`"cniVersion":"1.0.0","interfaces"`), []byte(`"cniVersion":"0.4.0","interfaces"`), 1)
			}
			if err := p.cmdAdd(cmdArgs(data)); err != nil {
				t.Fatalf("ADD with the agent down: %v", err)
			}
			var res map[string]any
			json.Unmarshal(out.Bytes(), &res)
			if res["cniVersion"] != version || len(res["ips"].([]any)) != 2 {
				t.Errorf("stdout %s", out.Bytes())
			}
			if files := spool(t, dir); len(files) != 1 || files[0] != "c0ffee-ADD.json" {
				t.Fatalf("spool %v", files)
			}
			// The agent comes up and replays it.
			var replayed []cni.Event
			n, err := cni.DrainSpool(filepath.Join(dir, "spool"), func(_ context.Context, ev cni.Event) error {
				replayed = append(replayed, ev)
				return nil
			})
			if n != 1 || err != nil || replayed[0].PodName != "productpage-1" || len(replayed[0].IPs) != 2 {
				t.Fatalf("drain = %d, %v, %+v", n, err, replayed)
			}
			if files := spool(t, dir); len(files) != 0 {
				t.Errorf("spool after drain %v", files)
			}
		})
	}
}

// TestAddOfEnrolledPodWithoutCaptureFails: the ADD of a pod that belongs
// in the mesh fails (CNI "try again later": the kubelet retries) and
// spools nothing, when no agent answers and the agent's file lists the
// pod's namespace, and when the agent says it could not capture the pod.
// A pod outside the mesh is spooled as before (TestAddWithAgentDownSpoolsAndSucceeds).
func TestAddOfEnrolledPodWithoutCaptureFails(t *testing.T) {
	for name, setup := range map[string]func(t *testing.T, dir string){
		"agent down, namespace enrolled": func(t *testing.T, dir string) {
			if err := cni.WriteEnrolledNamespaces(filepath.Join(dir, "enrolled-namespaces.json"), []string{"default", "shop"}); err != nil {
				t.Fatal(err)
			}
		},
		"agent could not capture": func(t *testing.T, dir string) {
			s := cni.NewServer(filepath.Join(dir, "cni.sock"), func(context.Context, cni.Event) error {
				return fmt.Errorf("%w: no veth for 10.244.0.5", cni.ErrNotCaptured)
			})
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			setup(t, dir)
			var out bytes.Buffer
			p := &plugin{stdout: &out, stderr: io.Discard}
			err := p.cmdAdd(cmdArgs(stdin(t, dir, "1.0.0", true)))
			var cniErr *types.Error
			if !errors.As(err, &cniErr) || cniErr.Code != types.ErrTryAgainLater {
				t.Fatalf("ADD = %v, want CNI error %d (try again later)", err, types.ErrTryAgainLater)
			}
			if out.Len() != 0 || len(spool(t, dir)) != 0 {
				t.Errorf("stdout %q, spool %v: a failed ADD prints no result and spools nothing", out.String(), spool(t, dir))
			}
		})
	}
}

func TestAddWithoutPrevResultFails(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	p := &plugin{stdout: &out, stderr: io.Discard}
	err := p.cmdAdd(cmdArgs(stdin(t, dir, "1.0.0", false)))
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != types.ErrInvalidNetworkConfig || !strings.Contains(cniErr.Msg, "chained plugin") {
		t.Fatalf("err = %#v, want a CNI error code %d", err, types.ErrInvalidNetworkConfig)
	}
	if out.Len() != 0 || len(spool(t, dir)) != 0 {
		t.Errorf("stdout %q spool %v", out.String(), spool(t, dir))
	}
}

func TestDelIdempotent(t *testing.T) {
	dir := t.TempDir()
	p := &plugin{stdout: io.Discard, stderr: io.Discard,
		fallback: &netConf{AgentSocket: filepath.Join(dir, "cni.sock"), SpoolDir: filepath.Join(dir, "spool")}}
	// Agent down: ADD spooled, then DEL twice (a runtime may retry): the
	// spool holds just the DEL, never an ADD to replay for a dead pod.
	if err := p.cmdAdd(cmdArgs(stdin(t, dir, "1.0.0", true))); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := p.cmdDel(cmdArgs(stdin(t, dir, "1.0.0", i == 0))); err != nil {
			t.Fatalf("DEL %d: %v", i, err)
		}
	}
	if files := spool(t, dir); len(files) != 1 || files[0] != "c0ffee-DEL.json" {
		t.Fatalf("spool %v", files)
	}
	// Agent up: DELs are delivered, even with garbage config or no netns.
	a := startAgent(t, dir)
	for _, args := range []*skel.CmdArgs{cmdArgs(stdin(t, dir, "1.0.0", true)), cmdArgs(stdin(t, dir, "1.0.0", false))} {
		args.Netns = ""
		if err := p.cmdDel(args); err != nil {
			t.Fatal(err)
		}
	}
	if evs := a.got(); len(evs) != 2 || evs[0].Op != cni.OpDel || evs[0].PodUID != "1234-5678" {
		t.Fatalf("agent got %+v", evs)
	}
	if err := p.cmdDel(cmdArgs([]byte("{garbage"))); err != nil {
		t.Fatalf("DEL with bad config: %v", err)
	}
	if err := p.cmdCheck(cmdArgs(nil)); err != nil {
		t.Fatal(err)
	}
}

func TestK8sArgs(t *testing.T) {
	for _, tc := range []struct{ in, ns, name, uid string }{
		{"K8S_POD_NAMESPACE=a;K8S_POD_NAME=b;K8S_POD_UID=c", "a", "b", "c"},
		{"IgnoreUnknown=1;K8S_POD_NAME=b", "", "b", ""},
		{"", "", "", ""},
		{"garbage;;K8S_POD_UID=x=y", "", "", "x=y"},
	} {
		ns, name, uid := k8sArgs(tc.in)
		if ns != tc.ns || name != tc.name || uid != tc.uid {
			t.Errorf("k8sArgs(%q) = %q %q %q", tc.in, ns, name, uid)
		}
	}
}

// TestBinary runs the built plugin the way a runtime does.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "weft-cni")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	run := func(t *testing.T, command string, data []byte) (int, []byte, []byte) {
		t.Helper()
		cmd := exec.Command(bin)
		cmd.Env = []string{
			"CNI_COMMAND=" + command, "CNI_CONTAINERID=c0ffee", "CNI_NETNS=/var/run/netns/pod1",
			"CNI_IFNAME=eth0", "CNI_PATH=" + filepath.Dir(bin),
			"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=productpage-1;K8S_POD_UID=1234-5678",
		}
		cmd.Stdin = bytes.NewReader(data)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			code = exitErr.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, stdout.Bytes(), stderr.Bytes()
	}

	t.Run("agent down: spooled, exit 0, prevResult passed through", func(t *testing.T) {
		dir := t.TempDir()
		code, out, errOut := run(t, "ADD", stdin(t, dir, "1.0.0", true))
		if code != 0 || !jsonEqual(t, out, []byte(prevResult)) {
			t.Fatalf("exit %d stdout %s stderr %s", code, out, errOut)
		}
		if files := spool(t, dir); len(files) != 1 {
			t.Fatalf("spool %v", files)
		}
		if !bytes.Contains(errOut, []byte("spooled")) {
			t.Errorf("stderr does not say it spooled: %s", errOut)
		}
		for range 2 {
			if code, out, errOut := run(t, "DEL", stdin(t, dir, "1.0.0", true)); code != 0 || len(out) != 0 {
				t.Fatalf("DEL exit %d stdout %s stderr %s", code, out, errOut)
			}
		}
	})
	t.Run("agent up: delivered", func(t *testing.T) {
		dir := t.TempDir()
		a := startAgent(t, dir)
		code, out, errOut := run(t, "ADD", stdin(t, dir, "1.0.0", true))
		if code != 0 || !jsonEqual(t, out, []byte(prevResult)) {
			t.Fatalf("exit %d stdout %s stderr %s", code, out, errOut)
		}
		if evs := a.got(); len(evs) != 1 || evs[0].PodName != "productpage-1" || evs[0].HostInterface != "lo" || evs[0].HostIfindex == 0 {
			t.Fatalf("agent got %+v", evs)
		}
		if code, _, _ := run(t, "CHECK", stdin(t, dir, "1.0.0", true)); code != 0 {
			t.Fatalf("CHECK exit %d", code)
		}
		if code, _, errOut := run(t, "STATUS", []byte(`{"cniVersion":"1.1.0","name":"n","type":"weft-cni"}`)); code != 0 {
			t.Fatalf("STATUS exit %d: %s", code, errOut)
		}
	})
	t.Run("missing prevResult: CNI error", func(t *testing.T) {
		dir := t.TempDir()
		code, out, _ := run(t, "ADD", stdin(t, dir, "1.0.0", false))
		var e struct {
			CNIVersion string `json:"cniVersion"`
			types.Error
		}
		if err := json.Unmarshal(out, &e); err != nil {
			t.Fatalf("stdout %s: %v", out, err)
		}
		if code != 1 || e.Code != types.ErrInvalidNetworkConfig || !strings.Contains(e.Msg, "prevResult") || e.CNIVersion != "1.0.0" {
			t.Fatalf("exit %d, error %s", code, out)
		}
	})
	t.Run("VERSION", func(t *testing.T) {
		code, out, _ := run(t, "VERSION", []byte(`{"cniVersion":"1.0.0"}`))
		if code != 0 || !bytes.Contains(out, []byte(`"0.4.0"`)) || !bytes.Contains(out, []byte(`"1.0.0"`)) {
			t.Fatalf("exit %d: %s", code, out)
		}
	})
}
