package shipped

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/weft-mesh/weft/bpf"
	"github.com/weft-mesh/weft/control/xds"
	"github.com/weft-mesh/weft/internal/benchkit"
	"github.com/weft-mesh/weft/node-agent/nodebench/synth"
	"github.com/weft-mesh/weft/pkg/mesh"
	"github.com/weft-mesh/weft/pkg/netns"
	"github.com/weft-mesh/weft/pkg/testpki"
)

// Names of what a run creates carry its PID, so the next run can remove
// what a killed run left behind (benchkit.SweepStale).
const (
	netnsPrefix   = "wsa"           // wsa<pid>-node
	workDirPrefix = "weft-shipped-" // $TMPDIR/weft-shipped-<pid>-*, holds the bpffs
)

func writeFile(tb testing.TB, path string, b []byte) {
	tb.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// The shipped node agent's node: one netns whose uplink (a veth whose peer
// stays in the netns: the kernel may lack the dummy device) carries the
// default route, as a node's would.
const (
	shippedNode    = "node-shipped"
	shippedUplink  = "192.168.79.1"
	shippedGateway = "192.168.79.254"
	shippedControl = "localhost:15012" // weft-control's xDS, served by the test process inside the node's netns
)

// shippedAgentBinary is weft-node-agent as `make build` built it
// (WEFT_BIN_DIR, which make sets; else the repository's _output/bin).
// Missing, the test skips, or fails under WEFT_E2E_REQUIRE=1.
func shippedAgentBinary(tb testing.TB) string {
	tb.Helper()
	dir := os.Getenv("WEFT_BIN_DIR")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(file), "..", "..", "..", "_output", "bin")
	}
	bin := filepath.Join(dir, "weft-node-agent")
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("WEFT_E2E_REQUIRE") == "1" {
			tb.Fatalf("WEFT_E2E_REQUIRE=1 but %s is missing (make build)", bin)
		}
		tb.Skipf("%s is missing (make build)", bin)
	}
	return bin
}

// shippedAgent is weft-node-agent as shipped, running in a node netns of
// its own with the chart's flags and GODEBUG, subscribed to weft-control's
// xDS server (control/xds, in this process) that serves the synthetic mesh
// of a scale. Left out: --namespaces-from-api and --pod-labels-from-api
// (they need a cluster's API server; they are only read at a CNI ADD). No
// pod is enrolled: it holds the mesh and serves nothing.
type shippedAgent struct {
	*benchkit.Child
	ns      string        // netns path
	readyIn time.Duration // from its start to its ready file
}

// startShippedAgent starts it and waits until it is ready (its ready file,
// which exists once its configuration is synced and its listeners open).
// Everything is undone by tb.Cleanup.
func startShippedAgent(tb testing.TB, s synth.Scale, env ...string) *shippedAgent {
	tb.Helper()
	benchkit.RequireRoot(tb, "shipped node agent harness (network namespace, BPF programs, bpffs)")
	bin := shippedAgentBinary(tb)
	benchkit.SweepStale(tb, netnsPrefix, workDirPrefix, "shipped")
	tmp, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", workDirPrefix, os.Getpid()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(tmp) })
	ns := shippedNetns(tb)
	pins := shippedBPFFS(tb, tmp)
	serveControl(tb, ns, tmp, s)

	ready, start := filepath.Join(tmp, "ready"), time.Now()
	cmd := exec.Command(bin, "--node-name="+shippedNode, "--control-address="+shippedControl,
		"--ca-root-cert="+filepath.Join(tmp, "root.pem"), "--token-file="+filepath.Join(tmp, "token"),
		"--bpf-dir="+pins, "--install-cni=false", "--run-dir="+filepath.Join(tmp, "run"),
		"--ready-file="+ready, "--log-level=info", "--dns-capture=false")
	// The chart's GODEBUG; GOGC only as the leaf sets it (the "idle" leaves
	// measure the agent's own, whatever the test process runs with).
	inherited := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GOGC=") })
	cmd.Env = append(append(inherited, "GODEBUG="+mesh.ProxyGODEBUG), env...)
	child, _ := benchkit.StartChild(tb, cmd, benchkit.ChildOptions{
		Name:   "weft-node-agent",
		Stderr: filepath.Join(tmp, "agent.log"),
		Start:  func(cmd *exec.Cmd) error { return netns.Start(cmd, ns) },
		Ready:  readyFile(ready),
	})
	return &shippedAgent{Child: child, ns: ns, readyIn: time.Since(start)}
}

// readyFile waits until path exists; the child's stdout (its access log)
// ending first means it exited.
func readyFile(path string) benchkit.Ready {
	return func(stdout io.Reader) (string, error) {
		exited := make(chan struct{})
		go func() { _, _ = io.Copy(io.Discard, stdout); close(exited) }()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, err := os.Stat(path); err == nil {
				return "", nil
			}
			select {
			case <-exited:
				return "", errors.New("exited before it was ready")
			case <-tick.C:
			}
		}
	}
}

// shippedNetns makes the node's netns: loopback, and an uplink with the
// default route.
func shippedNetns(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("%s%d-node", netnsPrefix, os.Getpid())
	benchkit.Run(tb, "ip", "netns", "add", name)
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	benchkit.Run(tb, "ip", "-n", name, "link", "set", "lo", "up")
	benchkit.Run(tb, "ip", "-n", name, "link", "add", "uplink", "type", "veth", "peer", "name", "fabric")
	benchkit.Run(tb, "ip", "-n", name, "addr", "add", shippedUplink+"/24", "dev", "uplink")
	benchkit.Run(tb, "ip", "-n", name, "link", "set", "fabric", "up")
	benchkit.Run(tb, "ip", "-n", name, "link", "set", "uplink", "up")
	benchkit.Run(tb, "ip", "-n", name, "route", "add", "default", "via", shippedGateway, "dev", "uplink")
	return "/run/netns/" + name
}

// shippedBPFFS mounts a bpffs of the run's own and returns the agent's pin
// directory on it.
func shippedBPFFS(tb testing.TB, tmp string) string {
	tb.Helper()
	bpffs := filepath.Join(tmp, "bpffs")
	if err := bpf.EnsureBPFFS(bpffs); err != nil {
		tb.Fatal(err)
	}
	pins := filepath.Join(bpffs, "weft")
	tb.Cleanup(func() {
		err := bpf.RemovePins(pins)
		if uerr := unix.Unmount(bpffs, unix.MNT_DETACH); uerr != nil {
			err = errors.Join(err, uerr)
		}
		if err != nil {
			tb.Errorf("remove bpffs %s: %v", bpffs, err)
		}
	})
	return pins
}

// serveControl serves the mesh of s over weft-control's xDS server, TLS
// with a certificate for localhost, on a listener inside the node's netns,
// and writes the agent's trust anchors and token into tmp. It serves no
// certificates: no workload of the node's asks for one.
func serveControl(tb testing.TB, ns, tmp string, s synth.Scale) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	srv := xds.New(ctx, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	srv.Update(xds.AddressType, s.Addresses())
	srv.Update(xds.AuthorizationType, s.Authorizations())
	srv.Update(xds.EnrolledNamespaceType, s.EnrolledNamespaces())

	ca := testpki.New(tb)
	certPEM, keyPEM := ca.Issue(tb, "localhost")
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		tb.Fatal(err)
	}
	writeFile(tb, filepath.Join(tmp, "root.pem"), ca.CertPEM())
	writeFile(tb, filepath.Join(tmp, "token"), []byte("bench-token"))

	g := grpc.NewServer(append(xds.ServerOptions(), grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))...)
	srv.Register(g)
	var ln net.Listener
	err = netns.Do(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:15012")
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	go g.Serve(ln)
	tb.Cleanup(g.Stop)
}

// known is what the agent's admin endpoint says it holds.
func (a *shippedAgent) known(tb testing.TB) (workloads, services, authorizations int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
		return netns.Dial(ctx, a.ns, addr)
	}}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/config_dump", mesh.AdminPort), nil)
	resp, err := c.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var dump struct {
		XDS    struct{ Synced bool }
		Config struct {
			Workloads, Services, Authorizations map[string]json.RawMessage
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		tb.Fatal(err)
	}
	if !dump.XDS.Synced {
		tb.Fatal("config_dump: not synced")
	}
	return len(dump.Config.Workloads), len(dump.Config.Services), len(dump.Config.Authorizations)
}

// BenchmarkShippedNodeAgent measures weft-node-agent as `make build`
// ships it, idle, holding a synthetic mesh received over xDS: how long it
// took from its start to ready (ready_ms: capture loaded, the mesh
// received, listeners open; polled every 20 ms), and its resident memory
// after an idle window of one reconcile beat (rss_MB), split into
// anonymous memory (anon_MB: heap, stacks) and file-backed pages
// (file_MB: the binary's text and data); and its resident memory once it
// has answered one /config_dump (rss_after_dump_MB), which weftctl reads.
//
// The largest mesh is measured a second time with Go's default
// collection target (idle-GOGC=100): the agent's own is agent.GCPercent,
// which trades collections for memory.
//
// Each leaf run starts its own agent, so -count gives independent
// samples; the window also makes a run longer than the default
// -benchtime, so the framework does not start more agents to ramp b.N.
func BenchmarkShippedNodeAgent(b *testing.B) {
	large := synth.Scale{Workloads: 10_000, Services: 1_000, Policies: 1_000}
	for _, leaf := range []struct {
		s    synth.Scale
		name string
		env  []string
	}{
		{synth.Scale{Workloads: 1_000}, "idle", nil},
		{large, "idle", nil},
		{large, "idle-GOGC=100", []string{"GOGC=100"}},
	} {
		s := leaf.s
		b.Run(s.String()+"/"+leaf.name, func(b *testing.B) {
			a := startShippedAgent(b, s, leaf.env...)
			time.Sleep(idleWindow) // a measurement window, not a wait for a condition
			st, err := benchkit.ReadProcStats(a.Pid())
			if err != nil {
				b.Fatal(err)
			}
			// After the reading: the dump itself costs the agent memory,
			// read again after it.
			if w, svc, p := a.known(b); w != s.Workloads || svc != s.Services || p != s.Policies {
				b.Fatalf("the agent holds %d workloads, %d services, %d policies; want %+v", w, svc, p, s)
			}
			dumped, err := benchkit.ReadProcStats(a.Pid())
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(a.readyIn.Milliseconds()), "ready_ms")
			b.ReportMetric(float64(st.RSS)/(1<<20), "rss_MB")
			b.ReportMetric(float64(st.RSSAnon)/(1<<20), "anon_MB")
			b.ReportMetric(float64(st.RSSFile)/(1<<20), "file_MB")
			b.ReportMetric(float64(dumped.RSS)/(1<<20), "rss_after_dump_MB")
		})
	}
}

// idleWindow is how long the shipped agent idles before its memory is
// read: one reconcile beat (node-agent/agent), at least a second.
const idleWindow = 2 * time.Second

// TestShippedNodeAgentHoldsTheMesh: the shipped binary the benchmark
// measures starts in the bench's node, syncs the synthetic mesh from the
// xDS server and holds all of it.
func TestShippedNodeAgentHoldsTheMesh(t *testing.T) {
	s := synth.Scale{Workloads: 300, Services: 30, Policies: 40}
	a := startShippedAgent(t, s)
	if w, svc, p := a.known(t); w != s.Workloads || svc != s.Services || p != s.Policies {
		t.Fatalf("the agent holds %d workloads, %d services, %d policies; want %+v", w, svc, p, s)
	}
	if log := benchkit.FileText(a.Stderr); strings.Contains(log, `"level":"ERROR"`) {
		t.Errorf("the agent logged errors:\n%s", log)
	}
}
