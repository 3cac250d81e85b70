// Package daemon wires weft-waypoint: its own certificate from the
// control plane's CA, the xDS subscription, the proxy with its HBONE or
// gateway listeners, tracing, and the metrics, readiness and admin
// endpoints. The proxy and routing live in waypoint/proxy and
// waypoint/route; this package only connects them and owns their
// lifecycle. See waypoint/README.md.
package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	cav1 "github.com/weft-mesh/weft/api/ca/v1"
	weftadmin "github.com/weft-mesh/weft/pkg/admin"
	"github.com/weft-mesh/weft/pkg/connlimit"
	"github.com/weft-mesh/weft/pkg/controlclient"
	"github.com/weft-mesh/weft/pkg/hbone"
	"github.com/weft-mesh/weft/pkg/identity"
	"github.com/weft-mesh/weft/pkg/mesh"
	"github.com/weft-mesh/weft/pkg/xdsclient"
	"github.com/weft-mesh/weft/waypoint/proxy"
)

// Modes of weft-waypoint.
const (
	ModeWaypoint = "waypoint" // HBONE in (from node agents), HBONE out
	ModeGateway  = "gateway"  // an ingress gateway: plain HTTP in, HBONE out
)

// Config is the waypoint's command line.
type Config struct {
	// Mode is ModeWaypoint (default) or ModeGateway.
	Mode string
	// The Gateway this waypoint serves; in gateway mode the gateway
	// deployment's name (logs, telemetry).
	Namespace, Gateway string
	PodName            string
	ServiceAccount     string // "" = the gateway name
	TrustDomain        string
	ControlAddress     string
	CARootCert         string
	TokenFile          string

	HBONEAddress, MetricsAddress, ReadinessAddress, AdminAddress string
	// CredentialNamespaces: in gateway mode, namespaces besides its own
	// whose Secrets the gateway may serve as Gateway API listeners'
	// certificates (charts/gateway credentialNamespaces).
	CredentialNamespaces []string
	// Certificates gives a gateway the credentials of its TLS servers
	// (nil: none, handshakes refused). Gateway mode requires it: only
	// weft-gateway sets it (gatewaycreds.FromCluster), so that waypoints
	// do not load a Kubernetes client they never use.
	Certificates CertificateSource
	// MaxConnections caps the open connections of the HBONE listener and
	// of each gateway listener (0: no cap); more wait in the kernel's
	// accept queue, as on the node agent (pkg/connlimit).
	MaxConnections int
	// DrainDuration is how long the waypoint keeps serving after it is
	// told to stop (SIGTERM), not ready: node agents and clients that
	// have not yet learned it is going (its endpoint turns unhealthy
	// through the control plane) are still served. Istio's
	// terminationDrainDuration.
	DrainDuration time.Duration

	Log       *slog.Logger
	AccessLog io.Writer
}

// CertificateSource gives a gateway the credentials of its TLS servers
// from the Secrets of namespace ns and the extra ones, watched until ctx
// ends (nil: none).
type CertificateSource func(ctx context.Context, ns string, extra []string, reg prometheus.Registerer, log *slog.Logger) proxy.Certificates

// NodeID is the xDS node ID naming this waypoint, or in gateway mode the
// gateway's service account (waypoint/README.md).
func (c *Config) NodeID() string {
	if c.Mode == ModeGateway {
		return mesh.GatewayID(c.Namespace, c.serviceAccount(), c.PodName).String()
	}
	return mesh.WaypointID(c.Namespace, c.Gateway, c.PodName).String()
}

func (c *Config) serviceAccount() string {
	if c.ServiceAccount == "" {
		return c.Gateway
	}
	return c.ServiceAccount
}

// Identity is the waypoint's own SPIFFE ID.
func (c *Config) Identity() (spiffeid.ID, error) {
	sa := c.serviceAccount()
	td, err := spiffeid.TrustDomainFromString(c.TrustDomain)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("--trust-domain %q: %w", c.TrustDomain, err)
	}
	return mesh.WorkloadID(td, c.Namespace, sa)
}

func (c *Config) validate() error {
	var errs []error
	if c.PodName == "" {
		errs = append(errs, errors.New("--pod-name (or POD_NAME) is required"))
	}
	required := map[string]string{"--control-address": c.ControlAddress, "--ca-root-cert": c.CARootCert, "--token-file": c.TokenFile}
	switch c.Mode {
	case "", ModeWaypoint:
		c.Mode = ModeWaypoint
		required["--hbone-address"] = c.HBONEAddress
	case ModeGateway:
		if c.Certificates == nil {
			errs = append(errs, errors.New("--mode gateway: run weft-gateway (the same image), which reads the gateway's certificates from Secrets"))
		}
	default:
		errs = append(errs, fmt.Errorf("--mode %q: want %s or %s", c.Mode, ModeWaypoint, ModeGateway))
	}
	for flag, v := range required {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is required", flag))
		}
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return errors.Join(errs...)
}

// Run runs the waypoint until ctx ends. When the control plane goes away
// it keeps serving the last good configuration and certificate.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	log := cfg.Log
	self, err := cfg.Identity()
	if err != nil {
		return err
	}
	// Everything runs on ctx, which outlives the stop request by the drain
	// (drainAfter, once the proxy exists).
	stop := ctx
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	conn, err := controlclient.Dial(cfg.ControlAddress, cfg.CARootCert, cfg.TokenFile)
	if err != nil {
		return err
	}
	defer conn.Close()
	ids, err := startIdentity(ctx, conn, cfg, self)
	if err != nil {
		return err
	}
	// Its spans' service name, unless OTEL_SERVICE_NAME or the tracer
	// sets one: "<gateway>.<namespace>", Istio's service cluster of a
	// waypoint or gateway, which Envoy's Zipkin tracer names spans after.
	tracing, err := proxy.NewTracingFromEnv(ctx, cmp.Or(cfg.Gateway, "weft-waypoint")+"."+cfg.Namespace)
	if err != nil {
		return err
	}
	defer shutdownTracing(tracing)

	var certs proxy.Certificates
	if cfg.Mode == ModeGateway {
		certs = cfg.Certificates(ctx, cfg.Namespace, cfg.CredentialNamespaces, reg, log)
	}
	p, err := proxy.New(proxy.Options{SVID: ids.Source(self), Bundle: ids.Bundles(), Registerer: reg,
		AccessLog: cfg.AccessLog, Tracing: tracing, Log: log, Certificates: certs})
	if err != nil {
		return err
	}
	defer p.Close()
	go drainAfter(stop, ctx, cancel, cfg.DrainDuration, p.Drain, log)

	xds := xdsclient.New(xdsclient.Config{
		Conn:  conn,
		Node:  &core.Node{Id: cfg.NodeID(), Cluster: "weft-waypoint." + cfg.Namespace},
		Types: proxy.Types(),
		Log:   log,
	}, p.Store.Handle)
	go xds.Run(ctx)

	plain, err := serveTraffic(ctx, cancel, cfg, self, p)
	if err != nil {
		return err
	}
	if plain != nil {
		defer plain.Close()
	}
	a := &admin{cfg: cfg, self: self, ids: ids, xds: xds, p: p}
	if err := serveAdmin(ctx, a, reg); err != nil {
		return err
	}
	log.Info("waypoint started", "mode", cfg.Mode, "node", cfg.NodeID(), "identity", self.String(), "control", cfg.ControlAddress, "hbone", cfg.HBONEAddress)
	a.supervise(ctx, plain)
	log.Info("waypoint stopping")
	return nil
}

// drainAfter ends serving (cancel) drain after stop ends, having begun
// the drain (not ready, clients asked to leave) when stop ended; it
// returns at once if serving ends first.
func drainAfter(stop, serving context.Context, cancel context.CancelFunc, drain time.Duration, begin func(), log *slog.Logger) {
	select {
	case <-stop.Done():
	case <-serving.Done():
		return
	}
	begin()
	log.Info("draining: not ready, still serving", "for", drain)
	t := time.NewTimer(drain)
	defer t.Stop()
	select {
	case <-t.C:
	case <-serving.Done():
	}
	cancel()
}

// startIdentity starts getting and renewing the waypoint's own certificate
// from the control plane's CA.
func startIdentity(ctx context.Context, conn *grpc.ClientConn, cfg Config, self spiffeid.ID) (*identity.Manager, error) {
	ids, err := identity.NewManager(identity.Options{
		Client: cav1.NewCertificateServiceClient(conn),
		Tokens: identity.FileTokenSource(cfg.TokenFile),
		Logger: cfg.Log,
	})
	if err != nil {
		return nil, err
	}
	ids.Want([]spiffeid.ID{self})
	go ids.Run(ctx)
	return ids, nil
}

// shutdownTracing flushes the spans still buffered, for a few seconds at
// most.
func shutdownTracing(tracing *proxy.Tracing) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tracing.Shutdown(ctx)
}

// serveTraffic starts taking traffic. A waypoint serves HBONE (cancel ends
// the waypoint if that server stops); a gateway gets the plain listeners
// its configuration names, returned for supervise to keep in sync, and
// never accepts HBONE.
func serveTraffic(ctx context.Context, cancel context.CancelFunc, cfg Config, self spiffeid.ID, p *proxy.Proxy) (*proxy.PlainListeners, error) {
	if cfg.Mode == ModeGateway {
		return &proxy.PlainListeners{Proxy: p, Source: proxy.Source{ID: self, Baggage: cfg.baggage()}, Listen: cfg.listen}, nil
	}
	ln, err := cfg.listen("tcp", cfg.HBONEAddress)
	if err != nil {
		return nil, fmt.Errorf("HBONE listener %s: %w", cfg.HBONEAddress, err)
	}
	go func() {
		if err := p.Serve(ln); err != nil && ctx.Err() == nil {
			cfg.Log.Error("HBONE server stopped", "err", err)
			cancel()
		}
	}()
	return nil, nil
}

// listen opens a traffic listener holding at most MaxConnections
// connections at a time.
func (c *Config) listen(network, addr string) (net.Listener, error) {
	ln, err := net.Listen(network, addr)
	if err != nil || c.MaxConnections <= 0 {
		return ln, err
	}
	return connlimit.Capped(ln.(*net.TCPListener), c.MaxConnections), nil
}

// serveAdmin starts the metrics, readiness and admin endpoints whose
// address is set.
func serveAdmin(ctx context.Context, a *admin, reg *prometheus.Registry) error {
	for _, s := range []struct {
		addr string
		h    http.Handler
	}{{a.cfg.MetricsAddress, weftadmin.Metrics(reg)}, {a.cfg.ReadinessAddress, weftadmin.Health(a.ready)}, {a.cfg.AdminAddress, a.handler()}} {
		if s.addr == "" {
			continue
		}
		if err := weftadmin.Serve(ctx, s.addr, s.h, a.cfg.Log); err != nil {
			return err
		}
	}
	return nil
}

// supervise runs until ctx ends: every second it moves a gateway's plain
// listeners (nil for a waypoint) to the configured ports, and it logs
// once that the waypoint became ready.
func (a *admin) supervise(ctx context.Context, plain *proxy.PlainListeners) {
	log := a.cfg.Log
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	wasReady := false
	lastListenErr := ""
	for {
		if plain != nil {
			// Listeners follow the configuration within a tick.
			msg := ""
			if err := plain.Sync(a.p.Store.Snapshot().ListenPorts); err != nil {
				msg = err.Error()
			}
			if msg != "" && msg != lastListenErr {
				log.Error("gateway listeners", "err", msg)
			}
			lastListenErr = msg
		}
		if r := a.ready(); r == "" && !wasReady {
			log.Info("waypoint ready: certificate and configuration received", "config", a.p.Store.Snapshot().Version)
			wasReady = true
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// admin serves readiness and the operator's view. Nothing here holds key
// material: certificates are listed by identity, serial and validity only.
type admin struct {
	cfg  Config
	self spiffeid.ID
	ids  *identity.Manager
	xds  *xdsclient.Client
	p    *proxy.Proxy // draining once told to stop (not ready)
}

// ConfigDump is /config_dump's body.
type ConfigDump struct {
	Node         string                `json:"node"`
	Identity     string                `json:"identity"`
	XDS          XDSStatus             `json:"xds"`
	Config       proxy.ConfigDump      `json:"config"`
	Certificates []identity.CertStatus `json:"certificates"`
}

// XDSStatus says whether the waypoint has (had) its configuration.
type XDSStatus struct {
	Synced   bool `json:"synced"`
	Connects int  `json:"connects"`
}

// ready returns "" when ready, else why not: a certificate for our own
// identity and a first complete configuration are both needed.
func (a *admin) ready() string {
	if a.p.Draining() {
		return "draining: stopping"
	}
	if _, err := a.ids.Source(a.self).GetX509SVID(); err != nil {
		return "waiting for the waypoint certificate: " + err.Error()
	}
	if !a.p.Store.Synced() {
		return "waiting for configuration from the control plane"
	}
	return ""
}

func (a *admin) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, _ *http.Request) {
		weftadmin.WriteJSON(w, ConfigDump{
			Node: a.cfg.NodeID(), Identity: a.self.String(),
			XDS:          XDSStatus{Synced: a.xds.Synced(), Connects: a.xds.Connects()},
			Config:       a.p.Store.Dump(),
			Certificates: a.ids.Status(),
		})
	})
	mux.HandleFunc("GET /certs", func(w http.ResponseWriter, _ *http.Request) { weftadmin.WriteJSON(w, a.ids.Status()) })
	return mux
}

// baggage describes the gateway as a source workload, in the form node
// agents send (so destinations label its requests).
func (c *Config) baggage() string {
	return hbone.Baggage{Namespace: c.Namespace, WorkloadType: "deployment", Workload: c.Gateway, Service: c.Gateway, Version: "latest"}.String()
}
