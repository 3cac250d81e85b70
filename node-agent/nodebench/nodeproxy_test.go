package nodebench

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/internal/benchkit"
	"github.com/weft-mesh/weft/node-agent/agent"
	"github.com/weft-mesh/weft/node-agent/config"
	"github.com/weft-mesh/weft/node-agent/nodebench/synth"
	"github.com/weft-mesh/weft/node-agent/proxy"
	"github.com/weft-mesh/weft/pkg/gomaxprocs"
)

// proxyEnv selects "node proxy" mode in a re-executed test binary: its
// value is the path of a proxyConfig JSON file.
const proxyEnv = "WEFT_NODEBENCH_PROXY_CONFIG"

const trustDomain = synth.TrustDomain

// readyLine is what a node proxy prints on stdout once it listens.
const readyLine = "READY"

// profileEnv names a directory where each node proxy writes the CPU
// profile of its whole life, <node>-cpu.pprof (profile before optimising).
const profileEnv = "WEFT_NODEBENCH_CPUPROFILE"

func cpuProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func TestMain(m *testing.M) { benchkit.Main(m, proxyEnv, "node proxy", runNodeProxy) }

// podSpec is one workload of the mesh as every node proxy's store holds it.
type podSpec struct {
	Name, Namespace, ServiceAccount, Node, IP string
}

func (p podSpec) id() spiffeid.ID {
	return spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString(trustDomain), "/ns/"+p.Namespace+"/sa/"+p.ServiceAccount)
}

func (p podSpec) address() *workloadv1.Address { return synth.Workload(synth.Pod(p)) }

// svidFiles are the PEM files of one SVID of a workload on the node.
type svidFiles struct {
	ID, Cert, Key string
}

// proxyConfig is the node proxy's whole input.
type proxyConfig struct {
	Node      string
	Workloads []podSpec   // the harness's pods
	Known     scale       // the rest of the mesh (scale_test.go)
	SVIDs     []svidFiles // only this node's workloads
	Bundle    string      // PEM trust anchors of the test CA
	AccessLog string      // one JSON line per connection
	Ports     struct{ Outbound, Inbound, HBONE uint16 }
}

// fileIdentities is proxy.Identities over SVIDs loaded from files.
type fileIdentities struct {
	svids  map[spiffeid.ID]*x509svid.SVID
	bundle *x509bundle.Bundle
}

type svidSource struct{ s *x509svid.SVID }

func (s svidSource) GetX509SVID() (*x509svid.SVID, error) {
	if s.s == nil {
		return nil, fmt.Errorf("no SVID for this identity on this node")
	}
	return s.s, nil
}

func (f *fileIdentities) Source(id spiffeid.ID) x509svid.Source { return svidSource{f.svids[id]} }
func (f *fileIdentities) Bundles() x509bundle.Source            { return f.bundle }

// runNodeProxy is the node proxy process: the proxy wired as
// node-agent/agent wires it (outbound with in-process delivery to local
// pods, HBONE inbound, plaintext inbound, metrics, access log), with the
// mesh view and certificates from files instead of the control plane. It
// serves until stdin closes (the test process ended) or SIGTERM.
func runNodeProxy(path string) error {
	var cfg proxyConfig
	if err := benchkit.ReadConfig(path, &cfg); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if dir := os.Getenv(profileEnv); dir != "" {
		stop, err := cpuProfile(filepath.Join(dir, cfg.Node+"-cpu.pprof"))
		if err != nil {
			return err
		}
		defer stop()
	}

	store := config.NewStore(config.Options{Logger: log})
	addrs := cfg.Known.Addresses()
	for _, p := range cfg.Workloads {
		a := p.address()
		addrs[a.GetWorkload().GetUid()] = a
	}
	if err := store.Handle(config.AddressType, addrs, nil); err != nil {
		return err
	}
	if err := store.Handle(config.AuthorizationType, cfg.Known.Authorizations(), nil); err != nil {
		return err
	}

	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	bundle, err := x509bundle.Load(td, cfg.Bundle)
	if err != nil {
		return err
	}
	ids := &fileIdentities{svids: map[spiffeid.ID]*x509svid.SVID{}, bundle: bundle}
	for _, f := range cfg.SVIDs {
		s, err := x509svid.Load(f.Cert, f.Key)
		if err != nil {
			return fmt.Errorf("SVID %s: %w", f.ID, err)
		}
		ids.svids[s.ID] = s
	}

	metrics, err := proxy.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		return err
	}
	alog, err := os.OpenFile(cfg.AccessLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer alog.Close()

	env := &proxy.Env{Store: store, Identities: ids, NodeName: cfg.Node,
		Metrics: metrics, AccessLog: slog.New(slog.NewJSONHandler(alog, nil)), Logger: log}
	inbound := &proxy.Inbound{Env: env}
	outbound := &proxy.Outbound{Env: env, TunnelPort: cfg.Ports.HBONE, Local: inbound}
	plaintext := &proxy.InboundPlaintext{Env: env}
	defer outbound.Close()
	defer inbound.Close()
	defer plaintext.Close()

	ctx, stop := benchkit.ChildContext() // SIGTERM, or stdin closed: the test process is gone
	defer stop()
	gomaxprocs.Adapt(ctx, log) // as weft-node-agent
	agent.SetGCPercent(log)
	for _, l := range []struct {
		port  uint16
		serve func(net.Listener) error
	}{{cfg.Ports.Outbound, outbound.Serve}, {cfg.Ports.Inbound, plaintext.Serve}, {cfg.Ports.HBONE, inbound.Serve}} {
		sock, err := proxy.BindTransparent(l.port, true)
		if err != nil {
			return err
		}
		ln, err := sock.Listen()
		if err != nil {
			return err
		}
		go l.serve(ln)
	}
	fmt.Println(readyLine)
	<-ctx.Done()
	return nil
}
