package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	cav1 "github.com/weft-mesh/weft/api/ca/v1"
	"github.com/weft-mesh/weft/node-agent/identity"
	"github.com/weft-mesh/weft/pkg/xdsclient"
	"github.com/weft-mesh/weft/waypoint/proxy"
)

// Config is the waypoint's command line.
type Config struct {
	Namespace, Gateway string // the Gateway this waypoint serves
	PodName            string
	ServiceAccount     string // "" = the gateway name
	TrustDomain        string
	ControlAddress     string
	CARootCert         string
	TokenFile          string

	HBONEAddress, MetricsAddress, ReadinessAddress, AdminAddress string

	Log       *slog.Logger
	AccessLog io.Writer
}

// NodeID is the xDS node ID naming this waypoint (waypoint/README.md).
func (c *Config) NodeID() string {
	return "waypoint~" + c.Namespace + "/" + c.Gateway + "~" + c.PodName
}

// Identity is the waypoint's own SPIFFE ID.
func (c *Config) Identity() (spiffeid.ID, error) {
	sa := c.ServiceAccount
	if sa == "" {
		sa = c.Gateway
	}
	td, err := spiffeid.TrustDomainFromString(c.TrustDomain)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("--trust-domain %q: %w", c.TrustDomain, err)
	}
	return spiffeid.FromSegments(td, "ns", c.Namespace, "sa", sa)
}

func (c *Config) validate() error {
	var errs []error
	if c.PodName == "" {
		errs = append(errs, errors.New("--pod-name (or POD_NAME) is required"))
	}
	for flag, v := range map[string]string{"--control-address": c.ControlAddress, "--ca-root-cert": c.CARootCert,
		"--token-file": c.TokenFile, "--hbone-address": c.HBONEAddress} {
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
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	conn, err := dialControl(cfg)
	if err != nil {
		return err
	}
	defer conn.Close()

	ids, err := identity.NewManager(identity.Options{
		Client: cav1.NewCertificateServiceClient(conn),
		Tokens: identity.FileTokenSource(cfg.TokenFile),
		Logger: log,
	})
	if err != nil {
		return err
	}
	ids.Want([]spiffeid.ID{self})
	go ids.Run(ctx)

	tracing, err := proxy.NewTracingFromEnv(ctx, "weft-waypoint."+cfg.Namespace)
	if err != nil {
		return err
	}
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		tracing.Shutdown(sctx)
	}()

	p, err := proxy.New(proxy.Options{SVID: ids.Source(self), Bundle: ids.Bundles(), Registerer: reg,
		AccessLog: cfg.AccessLog, Tracing: tracing, Log: log})
	if err != nil {
		return err
	}
	defer p.Close()

	xds := xdsclient.New(xdsclient.Config{
		Conn:  conn,
		Node:  &core.Node{Id: cfg.NodeID(), Cluster: "weft-waypoint." + cfg.Namespace},
		Types: proxy.Types(),
		Log:   log,
	}, p.Store.Handle)
	go xds.Run(ctx)

	ln, err := net.Listen("tcp", cfg.HBONEAddress)
	if err != nil {
		return fmt.Errorf("HBONE listener %s: %w", cfg.HBONEAddress, err)
	}
	go func() {
		if err := p.Serve(ln); err != nil && ctx.Err() == nil {
			log.Error("HBONE server stopped", "err", err)
			cancel()
		}
	}()

	a := &admin{cfg: cfg, self: self, ids: ids, xds: xds, p: p}
	for _, s := range []struct {
		addr string
		h    http.Handler
	}{{cfg.MetricsAddress, metricsHandler(reg)}, {cfg.ReadinessAddress, a.healthHandler()}, {cfg.AdminAddress, a.handler()}} {
		if s.addr == "" {
			continue
		}
		if err := serveHTTP(ctx, s.addr, s.h, log); err != nil {
			return err
		}
	}
	log.Info("waypoint started", "node", cfg.NodeID(), "identity", self.String(), "control", cfg.ControlAddress, "hbone", cfg.HBONEAddress)

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	wasReady := false
	for {
		if r := a.ready(); r == "" && !wasReady {
			log.Info("waypoint ready: certificate and configuration received", "config", p.Store.Snapshot().Version)
			wasReady = true
		}
		select {
		case <-ctx.Done():
			log.Info("waypoint stopping")
			return nil
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
	p    *proxy.Proxy
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
		writeJSON(w, ConfigDump{
			Node: a.cfg.NodeID(), Identity: a.self.String(),
			XDS:          XDSStatus{Synced: a.xds.Synced(), Connects: a.xds.Connects()},
			Config:       a.p.Store.Dump(),
			Certificates: a.ids.Status(),
		})
	})
	mux.HandleFunc("GET /certs", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, a.ids.Status()) })
	return mux
}

func (a *admin) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/live", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, _ *http.Request) {
		if why := a.ready(); why != "" {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}

func metricsHandler(reg *prometheus.Registry) http.Handler {
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	mux.Handle("GET /stats/prometheus", h) // Istio's path, for existing scrape configs
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// dialControl connects to weft-control: TLS verified against the mesh root
// (ConfigMap weft-ca-root-cert), the projected token on every stream (the
// certificate requests, unary, carry it from identity.Manager).
func dialControl(cfg Config) (*grpc.ClientConn, error) {
	pem, err := os.ReadFile(cfg.CARootCert)
	if err != nil {
		return nil, fmt.Errorf("control plane trust anchors (ConfigMap weft-ca-root-cert, published by weft-control): %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", cfg.CARootCert)
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	conn, err := grpc.NewClient(cfg.ControlAddress,
		grpc.WithTransportCredentials(creds),
		grpc.WithStreamInterceptor(streamToken(identity.FileTokenSource(cfg.TokenFile))),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, fmt.Errorf("control plane %s: %w", cfg.ControlAddress, err)
	}
	return conn, nil
}

// streamToken authenticates the xDS stream with the projected token, re-read
// for every stream because the kubelet rotates the file.
func streamToken(tokens identity.TokenSource) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		tok, err := tokens.Token(ctx)
		if err != nil {
			return nil, err
		}
		return streamer(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok), desc, cc, method, opts...)
	}
}

func serveHTTP(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		s.Close()
	}()
	go func() {
		if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "addr", addr, "err", err)
		}
	}()
	return nil
}
