package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sys/unix"

	cav1 "github.com/weft-mesh/weft/api/ca/v1"
	"github.com/weft-mesh/weft/bpf"
	"github.com/weft-mesh/weft/node-agent/cni"
	"github.com/weft-mesh/weft/node-agent/config"
	"github.com/weft-mesh/weft/node-agent/dns"
	"github.com/weft-mesh/weft/node-agent/proxy"
	weftadmin "github.com/weft-mesh/weft/pkg/admin"
	"github.com/weft-mesh/weft/pkg/controlclient"
	"github.com/weft-mesh/weft/pkg/hbone"
	"github.com/weft-mesh/weft/pkg/identity"
	"github.com/weft-mesh/weft/pkg/mesh"
	"github.com/weft-mesh/weft/pkg/xdsclient"
)

// agent is the node agent's parts, as start wires them; the reconciler
// drives them. Wiring is in the order the parts depend on one another:
// control connection, capture, proxies, enrolment, CNI, admin.
type agent struct {
	cfg Config
	log *slog.Logger

	reg        *prometheus.Registry
	metrics    *proxy.Metrics
	dnsMetrics *dns.Metrics
	shed       *prometheus.CounterVec // by listener (newShedCounter)

	store *config.Store
	xds   *xdsclient.Client
	ids   *identity.Manager

	// The three proxies: outbound, the HBONE server (proxy.Inbound) and
	// plaintext inbound, on sockets bound at start (see proxySockets).
	sockets   *proxySockets
	dnsPort   uint16 // where the DNS proxy listens; 0: not (yet)
	capture   *bpf.Capture
	outbound  *proxy.Outbound
	hbone     *proxy.Inbound
	plaintext *proxy.InboundPlaintext
	succ      *succession
	enroller  *Enroller
	// enrolledNS says at CNI ADD which namespaces are enrolled, also
	// across restarts while the control plane is away.
	enrolledNS *enrolledNamespaces

	kicks chan struct{} // kick: a CNI event or readiness asks for a reconcile now
	ready readiness

	closers []func() // run last first by close
}

// start wires every part and starts their goroutines, which end with ctx.
// The proxy listeners are not opened here: the reconciler opens them once
// the configuration is synced. Whatever start opened, close closes, also
// when start fails halfway.
func (a *agent) start(ctx context.Context) error {
	a.reg = prometheus.NewRegistry()
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := proxy.NewMetrics(a.reg)
	if err != nil {
		return err
	}
	a.metrics = metrics
	a.shed = newShedCounter(a.reg)
	if a.cfg.DNSCapture {
		a.dnsMetrics = dns.NewMetrics(a.reg)
	}
	if err := a.connectControl(); err != nil {
		return err
	}
	capture, err := setupCapture(a.cfg, a.log)
	if err != nil {
		return err
	}
	a.capture = capture
	a.onClose(func() { capture.Close() })
	a.recoverEnrolment()
	a.newProxies(ctx) // after the enroller: the proxies ask it about held pods
	a.succ = newSuccession(a.cfg.lease(), 3*beat)
	// Capture fails closed from here: until the listeners open (once the
	// configuration is synced, see reconciler.becomeReady) enrolled pods'
	// SYNs meet bound sockets that do not listen and are dropped and
	// retransmitted, or during a rolling update go to the previous agent,
	// which still listens. A listener with no configuration would take
	// every captured connection for a non-mesh one.
	if a.sockets, err = a.bindProxySockets(); err != nil {
		return err
	}
	a.onClose(a.sockets.Close)
	// A live predecessor keeps the capture until this agent is ready
	// (becomeReady points it here).
	if !a.succ.otherLive() {
		if err := a.capture.SetProxyListeners(a.captureListeners()); err != nil {
			return err
		}
	}
	// DNS capture off: an earlier agent may have turned it on. On, it is
	// steered once the DNS proxy listens (serveDNS); until then queries
	// fail open to the pods' own resolver, or reach the previous agent.
	if !a.cfg.DNSCapture {
		if err := a.capture.SetDNSPort(0); err != nil {
			return err
		}
	}
	if err := a.serveCNI(ctx); err != nil {
		return err
	}
	go a.xds.Run(ctx)
	go a.ids.Run(ctx)
	if err := a.serveAdmin(ctx); err != nil {
		return err
	}
	if a.cfg.ReleasePods {
		a.log.Info("release mode: every pod on this node is unenrolled (new connections go direct) and none is enrolled; the mesh is being uninstalled")
	}
	a.log.Info("node agent started", "node", a.cfg.NodeName, "control", a.cfg.ControlAddress,
		"ports", map[string]uint16{"outbound": a.sockets.outbound.Port, "inbound-plaintext": a.sockets.plaintext.Port, "hbone": a.sockets.hbone.Port})
	return nil
}

// onClose adds f to what close runs.
func (a *agent) onClose(f func()) { a.closers = append(a.closers, f) }

// close closes what start opened, in the reverse order.
func (a *agent) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
}

// connectControl dials weft-control and sets up the two things that use the
// connection: the xDS subscription into the configuration store and the
// workload certificate manager. Neither runs yet.
func (a *agent) connectControl() error {
	conn, err := controlclient.Dial(a.cfg.ControlAddress, a.cfg.CARootCert, a.cfg.TokenFile)
	if err != nil {
		return err
	}
	a.onClose(func() { conn.Close() })
	a.store = config.NewStore(config.Options{Logger: a.log})
	a.xds = xdsclient.New(xdsclient.Config{
		Conn:  conn,
		Node:  &core.Node{Id: mesh.NodeAgentID(a.cfg.NodeName).String(), Cluster: "weft-node-agent"},
		Types: config.Types(),
		Log:   a.log,
	}, a.store.Handle)
	a.ids, err = identity.NewManager(identity.Options{
		Client: cav1.NewCertificateServiceClient(conn),
		Tokens: identity.FileTokenSource(a.cfg.TokenFile),
		Logger: a.log,
	})
	return err
}

// hboneOptions are the HBONE listener's: MaxConnectionsPerSource caps what
// one peer identity holds there (its "no cap", 0, is negative there).
func (a *agent) hboneOptions() hbone.Options {
	perPeer := a.cfg.MaxConnectionsPerSource
	if perPeer <= 0 {
		perPeer = -1
	}
	return hbone.Options{MaxConnectionsPerPeer: perPeer}
}

// newProxies builds the three proxies (outbound, inbound HBONE, inbound
// plaintext) without listeners.
func (a *agent) newProxies(ctx context.Context) {
	var accessLog *slog.Logger
	if a.cfg.AccessLog != nil {
		accessLog = slog.New(slog.NewJSONHandler(a.cfg.AccessLog, nil))
	}
	env := &proxy.Env{Store: a.store, Identities: a.ids, NodeName: a.cfg.NodeName, Held: a.enroller.Held,
		Metrics: a.metrics, AccessLog: accessLog, Logger: a.log, Names: a.newNames(ctx)}
	a.hbone = &proxy.Inbound{Env: env, HBONE: a.hboneOptions()}
	a.reg.MustRegister(weftadmin.HBONEHandshakeMetrics("weft_node_agent", a.hbone.Server())...)
	a.outbound = &proxy.Outbound{Env: env, TunnelPort: a.cfg.HBONEPort, Local: a.hbone}
	a.plaintext = &proxy.InboundPlaintext{Env: env}
	// Open connections follow policy changes (superseded or not).
	go env.RecheckOnChange(ctx)
	a.onClose(func() { a.outbound.Close() })
	a.onClose(func() { a.hbone.Close() })
	a.onClose(func() { a.plaintext.Close() })
}

// serveDNS opens the DNS proxy on 127.0.0.1:DNSPort (or, when that is
// held, as by the agent this one succeeds, on another port), when DNS
// capture is on, then has the programs steer enrolled pods' DNS to it.
func (a *agent) serveDNS(ctx context.Context) error {
	if !a.cfg.DNSCapture {
		return nil
	}
	srv := &dns.Server{Mark: mesh.MarkSkip, Log: a.log, Handler: &dns.Handler{
		Snapshot: a.store.Snapshot, Node: a.cfg.NodeName,
		Forwarder: dns.NewUpstream(mesh.MarkSkip, dnsMaxForwards), Metrics: a.dnsMetrics, Log: a.log,
	}}
	err := srv.Listen(ctx, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(a.cfg.DNSPort))))
	if errors.Is(err, unix.EADDRINUSE) {
		a.log.Info("DNS proxy port in use (the node agent this one succeeds, or another process): listening on another port, where the capture will steer", "port", a.cfg.DNSPort)
		err = srv.Listen(ctx, "127.0.0.1:0")
	}
	if err != nil {
		return err
	}
	a.dnsPort = srv.Addr().Port()
	go srv.Serve(ctx)
	return a.capture.SetDNSPort(a.dnsPort)
}

// steerCapture points the capture programs at this agent's listeners: once
// it is ready, and again when the agent that superseded it is gone.
func (a *agent) steerCapture() error {
	if err := a.capture.SetProxyListeners(a.captureListeners()); err != nil {
		return err
	}
	if a.dnsPort == 0 {
		return nil
	}
	return a.capture.SetDNSPort(a.dnsPort)
}

// dnsMaxForwards bounds the DNS proxy's queries waiting for upstream.
const dnsMaxForwards = 1024

// recoverEnrolment makes the enroller, taking over what a previous agent
// left pinned, and exports the enrolment and capture metrics.
func (a *agent) recoverEnrolment() {
	a.enroller = &Enroller{Capture: a.capture, Resolve: ResolveVeth, OpenConns: a.metrics.OpenFor,
		DrainTimeout: a.cfg.DrainTimeout, ReleasePods: a.cfg.ReleasePods, Log: a.log}
	if err := a.enroller.Recover(); err != nil {
		a.log.Warn("recovering enrolment from pinned maps", "err", err)
	}
	a.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "weft_node_agent_enrolled_pods", Help: "Pods whose traffic this node agent captures.",
	}, func() float64 { return float64(len(a.enroller.Enrolled())) }))
	registerCaptureCounters(a.reg, a.capture, a.log)
}

// serveCNI serves the CNI plugin's socket (and replays the events it
// spooled while no agent listened), then installs the plugin and keeps it
// installed (unless a separate container does: Config.InstallCNI).
func (a *agent) serveCNI(ctx context.Context) error {
	a.kicks = make(chan struct{}, 1)
	a.enrolledNS = loadEnrolledNamespaces(a.cfg.enrolledNamespaces(), a.store.Snapshot, a.log)
	a.enrolledNS.labels, a.enrolledNS.podLabels = a.cfg.NamespaceLabels, a.cfg.PodLabels
	srv := cni.NewServer(a.cfg.socket(), cniHandler(a.enroller, a.enrolledNS.podEnrolled, a.kick, a.log))
	if err := srv.Start(); err != nil {
		return err
	}
	a.onClose(func() { srv.Close() })
	go srv.DrainLoop(ctx, a.cfg.spoolDir(), 2*time.Second, func(err error) { a.log.Warn("replaying spooled CNI events", "err", err) })

	if !a.cfg.InstallCNI {
		return nil // the install-cni container's job (RunCNIInstaller)
	}
	install, err := cniInstallOptions(a.cfg, a.log)
	if err != nil {
		return err
	}
	if err := cni.Install(install); err != nil {
		return fmt.Errorf("install weft-cni: %w", err)
	}
	go cni.Watch(ctx, install)
	return nil
}

// kick asks the reconciler for a pass now, without blocking: one pending
// request is enough.
func (a *agent) kick() {
	select {
	case a.kicks <- struct{}{}:
	default:
	}
}

// serveAdmin serves the metrics, readiness and admin endpoints whose
// address is set, each once its port is free (a rolling update's old agent
// holds them until it exits; none is shared, see pkg/admin).
func (a *agent) serveAdmin(ctx context.Context) error {
	admin := &admin{store: a.store, ids: a.ids, xds: a.xds, enroller: a.enroller, metrics: a.metrics, ready: &a.ready,
		ports: a.captureListeners()}
	for _, s := range []struct {
		addr string
		h    http.Handler
	}{{a.cfg.MetricsAddress, weftadmin.Metrics(a.reg)}, {a.cfg.ReadinessAddress, admin.healthHandler()}, {a.cfg.AdminAddress, admin.handler()}} {
		if s.addr == "" {
			continue
		}
		if err := weftadmin.ServeWhenFree(ctx, s.addr, s.h, a.log); err != nil {
			return err
		}
	}
	return nil
}
