// Package agent wires the node agent: eBPF capture and enrolment, the CNI
// socket, the xDS subscription, workload certificates, the tunnel proxy and
// the admin, readiness and metrics endpoints. Each part lives in its own
// package; this one only connects them and owns their lifecycle.
package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weft-mesh/weft/bpf"
	"github.com/weft-mesh/weft/node-agent/cni"
	"github.com/weft-mesh/weft/node-agent/config"
)

// Config is the agent's command line.
type Config struct {
	NodeName       string
	ControlAddress string // host:port of weft-control's xDS/CA (TLS)
	CARootCert     string // PEM trust anchors for the control plane's certificate
	TokenFile      string // projected service-account token, audience weft-ca
	BPFDir         string // pin directory on a bpffs
	CNIBinDir      string // node's CNI plugin dir, as mounted in the agent
	CNIConfDir     string // node's CNI config dir, as mounted in the agent
	CNIPlugin      string // weft-cni binary to install; "" = next to this executable
	// InstallCNI: the agent installs weft-cni and keeps it installed.
	// False when a separate container does (RunCNIInstaller), so that the
	// process terminating untrusted TLS cannot write the CNI directories.
	InstallCNI bool
	RunDir     string // CNI socket and spool; the same path on the node
	Uplink     string // "" = the default-route interface
	// NamespaceLabels reads a namespace's labels from the API server. At
	// CNI ADD it decides whether the pod's namespace is enrolled when
	// neither the control plane nor a remembered set can (a new node while
	// the control plane is unreachable); then a failed read fails the ADD.
	// nil: no API access, and such a pod starts uncaptured until its
	// workload arrives.
	NamespaceLabels func(ctx context.Context, name string) (map[string]string, error)
	// PodLabels reads a pod's labels and UID from the API server. At CNI
	// ADD the pod's own istio.io/dataplane-mode label decides before its
	// namespace's: ambient captures a pod of a namespace that is not
	// enrolled, none leaves a pod of an enrolled one alone, from its first
	// packet. nil, or a read that fails, leaves the namespace to decide,
	// and the pod's own label applies once its workload arrives.
	PodLabels func(ctx context.Context, namespace, name string) (labels map[string]string, uid string, err error)
	// ReadinessTaint, when set, is the key of a taint nodes are created
	// with (kubelet --register-with-taints) so that no pod is scheduled on
	// a new node before weft-cni is installed there: pods that start
	// before it never pass through the plugin and talk plaintext until
	// their workload arrives. The CNI installer removes it from NodeName
	// with RemoveNodeTaint once the plugin is installed (and so an agent
	// answers it).
	ReadinessTaint  string
	RemoveNodeTaint func(ctx context.Context, node, key string) (bool, error)

	// The proxy listeners' ports: outbound capture, plaintext inbound
	// (clients outside the mesh), plaintext inbound that netfilter DNATed
	// (NodePort and the like, bpf.NATSteering) and the HBONE server
	// (tunnels).
	OutboundPort, InboundPlaintextPort, InboundNATPort, HBONEPort uint16

	// DNSCapture runs the DNS proxy (node-agent/dns) on DNSPort, UDP and
	// TCP, answering for mesh hosts.
	DNSCapture bool
	DNSPort    uint16

	MetricsAddress   string // /metrics
	ReadinessAddress string // /healthz/ready, /healthz/live
	AdminAddress     string // /config_dump, /connections

	// MaxConnections caps the open connections of each proxy listener, so
	// a connection storm costs bounded memory: beyond it the kernel's accept
	// queue fills and new SYNs wait (0: no cap).
	MaxConnections int
	// MaxConnectionsPerSource caps what one source address (a local pod,
	// a client) holds of the outbound and plaintext listeners, so that one
	// pod leaking or storming connections cannot take every slot; beyond
	// it its new connections are reset. Not on the NAT and HBONE
	// listeners, whose sources may be one address for many workloads (see
	// proxyListeners); on HBONE it caps what one peer identity holds
	// instead (hbone.Options.MaxConnectionsPerPeer) (0: no cap).
	MaxConnectionsPerSource int

	DrainTimeout time.Duration
	// HandoverWait is how long a stopping agent keeps serving while it
	// waits for a successor (a surge rollout's new agent) to be ready;
	// ShutdownDrain how long it then lets its open connections finish.
	HandoverWait, ShutdownDrain time.Duration
	// ReleasePods makes the agent enrol nothing and unenrol (drain) every
	// pod: the first step of an uninstall (weftctl uninstall), so that no
	// new connection waits for an agent that is going away.
	ReleasePods bool
	// ReadyFile, if set, exists exactly while this process is ready: the
	// kubelet's exec readiness probe reads it. An HTTP probe cannot tell
	// two agents apart during a rolling update (they share the port).
	ReadyFile string
	Log       *slog.Logger
	AccessLog io.Writer // one JSON line per connection; nil = none
}

func (c *Config) validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("--node-name (or NODE_NAME) is required"))
	}
	for _, f := range []struct{ flag, value string }{{"--control-address", c.ControlAddress}, {"--ca-root-cert", c.CARootCert},
		{"--token-file", c.TokenFile}, {"--bpf-dir", c.BPFDir}, {"--run-dir", c.RunDir}} {
		if f.value == "" {
			errs = append(errs, fmt.Errorf("%s is required", f.flag))
		}
	}
	if c.InstallCNI && (c.CNIBinDir == "" || c.CNIConfDir == "") {
		errs = append(errs, errors.New("--cni-bin-dir and --cni-conf-dir are required with --install-cni"))
	}
	if c.OutboundPort == 0 || c.InboundPlaintextPort == 0 || c.InboundNATPort == 0 || c.HBONEPort == 0 {
		errs = append(errs, errors.New("proxy ports must be non-zero"))
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return errors.Join(errs...)
}

func (c *Config) socket() string   { return filepath.Join(c.RunDir, "cni.sock") }
func (c *Config) lease() string    { return filepath.Join(c.RunDir, "agent.lease") }
func (c *Config) spoolDir() string { return filepath.Join(c.RunDir, "cni-spool") }
func (c *Config) enrolledNamespaces() string {
	return filepath.Join(c.RunDir, "enrolled-namespaces.json")
}

// Run runs the agent until ctx ends. On the way out it leaves enrolment
// pinned. If a newer agent is serving (a surge rollout; see succession) it
// hands over: the newer agent takes every new connection and this one lets
// its open connections finish (up to ShutdownDrain). Otherwise it closes its
// listeners and new connections of enrolled pods wait (their SYNs are
// dropped and retransmitted) until the next agent starts, instead of
// bypassing the mesh.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	if cfg.ReadyFile != "" {
		// A restarted container must not look ready from its predecessor's file.
		if err := os.Remove(cfg.ReadyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("--ready-file: %w", err)
		}
		defer os.Remove(cfg.ReadyFile)
	}
	a := &agent{cfg: cfg, log: cfg.Log}
	defer a.close()
	if err := a.start(ctx); err != nil {
		return err
	}
	r := &reconciler{agent: a}
	return r.run(ctx)
}

// reconciler is the agent's loop. It reconciles on every accepted
// configuration update (the store's subscription), on CNI events (the
// agent's kick) and every beat (lease renewal, drains waiting for
// connections to end, retries). It does not carry policy: the proxies read
// it from the snapshot of each connection, so an agent that stops
// reconciling (superseded) still enforces the current policy.
type reconciler struct {
	*agent
	superseded bool      // a newer agent on this node holds a live lease
	syncedAt   time.Time // when the configuration was first synced
	ipv6Pods   string    // enrolled pods with IPv6 addresses, last reported
}

func (r *reconciler) run(ctx context.Context) error {
	updates, unsubscribe := r.store.Subscribe()
	defer unsubscribe()
	tick := time.NewTicker(beat)
	defer tick.Stop()
	for {
		snap := r.store.Snapshot()
		if err := r.enrolledNS.save(snap); err != nil {
			r.log.Warn("an agent restarted while the control plane is away will not hold new pods", "err", err)
		}
		if r.ready.Load() {
			// Only a ready agent takes part in succession: an agent that
			// is still starting must not supersede the one serving.
			r.succeed()
		}
		if snap.Synced() && !r.superseded {
			r.enrol(snap)
			if err := r.becomeReady(ctx, snap); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			if r.cfg.ReadyFile != "" {
				_ = os.Remove(r.cfg.ReadyFile) // stopping: not ready any more
			}
			stop(r.cfg, r.succ, r.log, r.outbound, r.hbone, r.plaintext)
			return nil
		case <-updates:
		case <-r.kicks:
		case <-tick.C:
		case <-r.certificatesAwaited():
		}
	}
}

// certificatesAwaited wakes the loop when certificates change while the
// agent waits for them to become ready (nil once ready: never).
func (r *reconciler) certificatesAwaited() <-chan struct{} {
	if r.ready.Load() {
		return nil
	}
	return r.ids.Changed()
}

// succeed renews this agent's lease, or notices that a newer agent holds
// one (this agent is superseded) or that it no longer does.
func (r *reconciler) succeed() {
	sup, err := r.succ.beat()
	if err != nil {
		r.log.Warn("renewing the agent lease", "err", err)
	}
	if sup != r.superseded {
		if sup {
			r.log.Info("a newer node agent is ready on this node: this one stops reconciling and keeps serving its connections until stopped")
		} else {
			r.log.Info("the newer node agent is gone: this one reconciles again")
			if err := r.steerCapture(); err != nil {
				r.log.Warn("steering the capture back to this agent's listeners", "err", err)
			}
		}
	}
	r.superseded = sup
}

// enrol brings certificates, enrolment and the local Service VIPs in line
// with the synced snapshot. In release mode (ReleasePods) nothing is
// enrolled, so every pod is drained out of the mesh.
func (r *reconciler) enrol(snap *config.Snapshot) {
	node := r.cfg.NodeName
	r.ids.Want(snap.IdentitiesOnNode(node))
	pods, vips := LocalPods(snap, node), LocalServiceVIPs(snap, node)
	if r.cfg.ReleasePods {
		pods, vips = nil, nil
	}
	if err := r.enroller.Reconcile(pods); err != nil {
		r.log.Warn("enrolment", "err", err)
	}
	if err := r.capture.SetLocalServiceVIPs(vips); err != nil {
		r.log.Warn("service VIPs with local enrolled endpoints", "err", err)
	}
	if v6 := strings.Join(EnrolledWithIPv6(snap, node), ", "); v6 != r.ipv6Pods {
		r.ipv6Pods = v6
		if v6 != "" {
			r.log.Warn("enrolled pods have IPv6 addresses: only IPv4 is captured, so their IPv6 TCP is dropped (weft_node_agent_capture_ipv6_dropped_total)", "pods", v6)
		}
	}
}

// becomeReady, the first time the configuration is synced, opens the proxy
// listeners and writes the ready file. Not before: a listener with no
// configuration would take every captured connection for a non-mesh one.
func (r *reconciler) becomeReady(ctx context.Context, snap *config.Snapshot) error {
	if r.ready.Load() {
		return nil
	}
	// The listeners take every new connection once open (and the capture
	// steers to them): wait for the local workloads' certificates, or a
	// connection would fail for lack of one. Not forever: an identity the
	// CA keeps refusing must not hold the node (and a rolling update).
	if r.syncedAt.IsZero() {
		r.syncedAt = time.Now()
	}
	if ids := snap.IdentitiesOnNode(r.cfg.NodeName); !r.ids.Holds(ids) {
		if time.Since(r.syncedAt) < certificateWait {
			return nil // the next beat or update tries again
		}
		r.log.Warn("listening without a certificate for every local workload: their connections fail until the CA issues them", "waited", certificateWait)
	}
	if err := r.listen(ctx); err != nil {
		return err
	}
	if err := r.steerCapture(); err != nil {
		return err
	}
	r.log.Info("node agent ready: configuration synced, proxy listening", "workloadsOnNode", len(snap.WorkloadsOnNode(r.cfg.NodeName)))
	r.kick() // announce this agent (lease) right away
	if r.cfg.ReadyFile != "" {
		if err := os.WriteFile(r.cfg.ReadyFile, []byte(r.succ.self.ID+"\n"), 0o644); err != nil {
			return fmt.Errorf("--ready-file: %w", err)
		}
	}
	r.ready.Store(true)
	return nil
}

// beat is the period of reconciliation and of the agent lease.
const beat = 2 * time.Second

// certificateWait bounds how long a synced agent waits for its local
// workloads' certificates before it listens anyway.
const certificateWait = 15 * time.Second

// drainer is a proxy that can stop accepting and let its connections end.
type drainer interface {
	Drain(ctx context.Context) error
}

// stop hands over to a successor if one is (or within HandoverWait becomes)
// ready, draining the proxies for up to ShutdownDrain; otherwise the
// deferred Closes end every connection at once.
func stop(cfg Config, succ *succession, log *slog.Logger, proxies ...drainer) {
	if !succ.awaitSuccessor(cfg.HandoverWait) {
		log.Info("node agent stopping with no successor on this node; enrolment stays pinned, new connections wait for the next agent")
		return
	}
	log.Info("node agent handing over to its successor; draining open connections", "timeout", cfg.ShutdownDrain)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownDrain)
	defer cancel()
	errs := make(chan error, len(proxies))
	for _, p := range proxies {
		go func() { errs <- p.Drain(ctx) }()
	}
	var forced bool
	for range proxies {
		if err := <-errs; err != nil {
			forced = true
		}
	}
	log.Info("node agent drained", "took", time.Since(start).Round(time.Millisecond), "closedAtTimeout", forced)
}

type readiness struct{ atomic.Bool }

// registerCaptureCounters exports the capture programs' SYN counters: a
// rising "dropped" count means new connections of enrolled pods met no
// listener (agent starting or stopping: fail closed).
func registerCaptureCounters(reg prometheus.Registerer, capture *bpf.Capture, log *slog.Logger) {
	read := func(dropped bool) func() float64 {
		return func() float64 {
			c, d, err := capture.Counters()
			if err != nil {
				log.Warn("reading capture counters", "err", err)
			}
			if dropped {
				return float64(d)
			}
			return float64(c)
		}
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "weft_node_agent_capture_ipv6_dropped_total",
		Help: "IPv6 packets from or to enrolled pods dropped because only IPv4 is captured (TCP, and anything but ICMPv6 and UDP).",
	}, func() float64 {
		n, err := capture.IPv6Dropped()
		if err != nil {
			log.Warn("reading the IPv6 drop counter", "err", err)
		}
		return float64(n)
	}))
	for _, result := range []string{"captured", "dropped"} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "weft_node_agent_capture_syns_total",
			Help:        "TCP SYNs of enrolled pods the capture programs steered to a proxy listener (captured) or dropped because none listened (dropped).",
			ConstLabels: prometheus.Labels{"result": result},
		}, read(result == "dropped")))
	}
}

func setupCapture(cfg Config, log *slog.Logger) (*bpf.Capture, error) {
	if err := os.MkdirAll(cfg.BPFDir, 0o700); err != nil {
		return nil, fmt.Errorf("bpf pin directory: %w", err)
	}
	capture, err := bpf.Load(cfg.BPFDir)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*bpf.Capture, error) {
		capture.Close()
		return nil, err
	}
	if err := bpf.DefaultPolicyRouting().Install(); err != nil {
		return fail(err)
	}
	if err := bpf.DefaultNotrack().Install(); err != nil {
		return fail(err)
	}
	if err := capture.SteerNAT(bpf.DefaultNATSteering(), cfg.InboundNATPort); err != nil {
		return fail(err)
	}
	if on, err := bpf.TCPEarlyDemux(); err == nil && on {
		log.Warn("net.ipv4.tcp_early_demux is on: a pod's direct connection may hang for up to 60 s after the pod leaves the mesh (chart value tcpEarlyDemux.disable, docs/node-agent.md)")
	}
	addrs, err := NodeAddresses()
	if err != nil {
		return fail(fmt.Errorf("node addresses: %w", err))
	}
	for _, p := range addrs {
		if err := capture.AddBypass(p); err != nil {
			return fail(err)
		}
	}
	uplink, err := Uplink(cfg.Uplink)
	if err != nil {
		return fail(err)
	}
	if err := capture.AttachInbound(uplink.Attrs().Index); err != nil {
		return fail(err)
	}
	log.Info("capture loaded", "pins", cfg.BPFDir, "uplink", uplink.Attrs().Name, "bypass", len(addrs))
	return capture, nil
}

// RunCNIInstaller is the CNI installer container (weft-node-agent
// install-cni): once an agent has served the plugin's socket on this node,
// it installs weft-cni and keeps it installed until ctx ends. It needs
// write access to the CNI directories and nothing else; the agent, which
// terminates untrusted TLS, then needs none. Waiting for the socket keeps
// the order the agent itself keeps: the plugin is never installed on a
// node where no agent has served it (it would spool every pod's event and
// let the pod start uncaptured).
func RunCNIInstaller(ctx context.Context, cfg Config) error {
	log := cmp.Or(cfg.Log, slog.Default())
	if cfg.ReadinessTaint != "" && (cfg.NodeName == "" || cfg.RemoveNodeTaint == nil) {
		return errors.New("removing the readiness taint needs the node's name and API access")
	}
	opts, err := cniInstallOptions(cfg, log)
	if err != nil {
		return err
	}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for logged := false; ; logged = true {
		if _, err := os.Stat(cfg.socket()); err == nil {
			break
		}
		if !logged {
			log.Info("waiting for the node agent's CNI socket before installing weft-cni", "socket", cfg.socket())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
	log.Info("installing weft-cni", "bin", cfg.CNIBinDir, "conf", cfg.CNIConfDir)
	if cfg.ReadinessTaint != "" {
		opts.Installed = func() { go removeReadinessTaint(ctx, cfg, log) }
	}
	return cni.Watch(ctx, opts)
}

// removeReadinessTaint removes cfg.ReadinessTaint from this node, trying
// again (1 s, doubling to 30 s) until it is gone or ctx ends: while it
// stays, no pod that does not tolerate it is scheduled here.
func removeReadinessTaint(ctx context.Context, cfg Config, log *slog.Logger) {
	const maxBackoff = 30 * time.Second
	var lastErr string
	for backoff := time.Second; ; backoff = min(2*backoff, maxBackoff) {
		removed, err := cfg.RemoveNodeTaint(ctx, cfg.NodeName, cfg.ReadinessTaint)
		if err == nil {
			if removed {
				log.Info("weft-cni installed: removed the node's readiness taint", "node", cfg.NodeName, "taint", cfg.ReadinessTaint)
			}
			return
		}
		if err.Error() != lastErr {
			log.Warn("cannot remove the node's readiness taint: pods that do not tolerate it are not scheduled here", "node", cfg.NodeName, "taint", cfg.ReadinessTaint, "err", err)
			lastErr = err.Error()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

func cniInstallOptions(cfg Config, log *slog.Logger) (cni.InstallOptions, error) {
	plugin := cfg.CNIPlugin
	if plugin == "" {
		self, err := os.Executable()
		if err != nil {
			return cni.InstallOptions{}, err
		}
		plugin = filepath.Join(filepath.Dir(self), cni.PluginType)
	}
	return cni.InstallOptions{
		BinDir: cfg.CNIBinDir, ConfDir: cfg.CNIConfDir, PluginSource: plugin,
		AgentSocket: cfg.socket(), SpoolDir: cfg.spoolDir(), EnrolledNamespaces: cfg.enrolledNamespaces(),
		Logf: func(format string, args ...any) { log.Info(fmt.Sprintf(format, args...)) },
	}, nil
}

// cniHandler applies CNI events: ADD tells the enroller the pod's veth (the
// workload itself arrives over xDS once the API server has the pod's IP)
// and holds the pod captured if its namespace is enrolled; DEL forgets the
// pod at once.
func cniHandler(e *Enroller, enrolled enrolledFunc, kick func(), log *slog.Logger) cni.Handler {
	return func(ctx context.Context, ev cni.Event) error {
		var ips []netip.Addr
		for _, s := range ev.IPs {
			if ip, err := netip.ParseAddr(s); err == nil {
				ips = append(ips, ip.Unmap())
			}
		}
		log.Debug("cni event", "op", ev.Op, "pod", ev.PodNamespace+"/"+ev.PodName, "ips", ev.IPs, "veth", ev.HostInterface)
		switch ev.Op {
		case cni.OpAdd:
			e.PodAdded(ips, ev.HostIfindex)
			defer kick()
			return holdIfEnrolled(ctx, e, enrolled, ev, ips, log)
		default:
			return e.PodDeleted(ips)
		}
	}
}

// enrolledFunc says whether the pod of a CNI ADD is enrolled
// (enrolledNamespaces.podEnrolled).
type enrolledFunc func(ctx context.Context, ev cni.Event) (bool, error)

// holdIfEnrolled captures a new pod that podEnrolled says is enrolled (see
// enrolledNamespaces), before its containers start. The ADD fails, so that
// the kubelet retries, if it cannot capture the pod or podEnrolled cannot
// tell.
func holdIfEnrolled(ctx context.Context, e *Enroller, podEnrolled enrolledFunc, ev cni.Event, ips []netip.Addr, log *slog.Logger) error {
	enrolled, err := podEnrolled(ctx, ev)
	switch {
	case errors.Is(err, errNoSource):
		log.Warn("pod added before any control plane said which namespaces are enrolled, and no API access to ask: it is captured only once its workload arrives",
			"pod", ev.PodNamespace+"/"+ev.PodName)
		return nil
	case err != nil:
		log.Warn("pod not started: whether its namespace is enrolled is unknown", "pod", ev.PodNamespace+"/"+ev.PodName, "err", err)
		return fmt.Errorf("%w: pod %s/%s: %w", cni.ErrNotCaptured, ev.PodNamespace, ev.PodName, err)
	case !enrolled:
		return nil
	}
	if err := e.Hold(ips, ev.HostIfindex); err != nil {
		return fmt.Errorf("%w: pod %s/%s: %w", cni.ErrNotCaptured, ev.PodNamespace, ev.PodName, err)
	}
	return nil
}
