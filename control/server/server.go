// Package server wires weft-control together: discovery, translation
// (workloads and waypoints), the xDS server, the CA, the waypoint deployment
// controller, leader election and the monitoring endpoints.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	meshapi "istio.io/api/mesh/v1alpha1"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	cav1 "github.com/weft-mesh/weft/api/ca/v1"
	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/control/ca"
	"github.com/weft-mesh/weft/control/discovery"
	"github.com/weft-mesh/weft/control/server/access"
	"github.com/weft-mesh/weft/control/status"
	"github.com/weft-mesh/weft/control/waypoint"
	"github.com/weft-mesh/weft/control/waypoint/deploy"
	"github.com/weft-mesh/weft/control/workload"
	"github.com/weft-mesh/weft/control/xds"
)

// Options configure the control plane (flags of weft-control).
type Options struct {
	Kubeconfig, Namespace, PodName       string
	TrustDomain, ClusterID, DomainSuffix string
	RootNamespace                        string
	XDSAddress, MonitoringAddress        string
	CertTTL, MaxCertTTL                  time.Duration
	CAAudience, NodeAgentServiceAccount  string
	ServiceName                          string
	LeaderElect                          bool
	Debounce                             time.Duration
	// WaypointImage is the weft-waypoint image of waypoint Deployments;
	// WaypointPullPolicy its pull policy (default IfNotPresent).
	WaypointImage, WaypointPullPolicy string
	// WaypointTracingEndpoint is the OTLP/HTTP endpoint waypoints send
	// spans to (empty: no spans); see deploy.Config.TracingEndpoint.
	WaypointTracingEndpoint string
	// WaypointGODEBUG is the GODEBUG of waypoint and gateway Deployments
	// (deploy.Config.GODEBUG).
	WaypointGODEBUG string
	// WaypointGOMAXPROCS pins GOMAXPROCS of waypoint and gateway
	// Deployments (deploy.Config.GOMAXPROCS); 0: they follow their load.
	WaypointGOMAXPROCS int
	// ServiceAccount is weft-control's own (in Namespace);
	// GatewaySecretsRole and SecretCheckRole the ClusterRoles a deployed
	// ingress gateway's RoleBindings grant (deploy.Config).
	ServiceAccount, GatewaySecretsRole, SecretCheckRole string
	// PathNormalization is how waypoints and gateways normalize request
	// paths (Istio's meshConfig.pathNormalization; "" = BASE).
	PathNormalization waypoint.PathNormalization
	// ExtensionProviders are Istio's meshConfig.extensionProviders
	// (waypoint.ParseExtensionProviders).
	ExtensionProviders []*meshapi.MeshConfig_ExtensionProvider
	// MaxStreamsPerSource caps the xDS streams one address holds open
	// (0: DefaultMaxStreamsPerSource).
	MaxStreamsPerSource int
	// Dashboard serves the live mesh page on the monitoring port.
	Dashboard bool
	Log       *slog.Logger
}

// Run serves until ctx ends.
func Run(ctx context.Context, o Options) error {
	log := o.Log
	klog.SetSlogLogger(log) // client-go's own logs (leader election...) in the same format
	if o.RootNamespace == "" {
		o.RootNamespace = o.Namespace
	}
	p, err := newPlane(ctx, o)
	if err != nil {
		return err
	}
	ready := &readiness{}
	syncz := &syncz{pod: o.PodName}
	guard := access.NewGuard(p.authn, o.Namespace, openPaths, log.With("component", "monitoring"))
	served := func() map[string]map[string]bool {
		if addrs := p.addresses.Load(); addrs != nil {
			return workload.WaypointNamespaces(*addrs)
		}
		return nil
	}
	mon := monitoringServer(o.MonitoringAddress, p.reg, ready, syncz, guard, dashboardRoutes(ctx, o, p.kube, p.cluster, served))
	monErr := make(chan error, 1)
	go func() { monErr <- mon.ListenAndServe() }()
	defer mon.Close()

	if err := p.cluster.Start(ctx); err != nil {
		return err
	}
	p.xds = xds.New(ctx, log, p.reg)
	syncz.setClients(p.xds)
	p.tr = newTranslator(o, log, p.cluster, p.xds, p.reg)
	p.tr.published = &p.addresses
	p.tr.push() // the full state before serving: no client ever sees a partial mesh
	go p.tr.run(ctx, o.Debounce)

	g, err := p.grpcServer()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.XDSAddress)
	if err != nil {
		return fmt.Errorf("listen %s: %w", o.XDSAddress, err)
	}
	grpcErr := make(chan error, 1)
	go func() { grpcErr <- g.Serve(ln) }()
	ready.set()
	log.Info("weft-control serving", "xds", o.XDSAddress, "monitoring", o.MonitoringAddress,
		"trustDomain", o.TrustDomain, "ca", p.authority.Source())

	var wg sync.WaitGroup
	leaderCtx, stopLeading := context.WithCancel(ctx)
	defer func() { stopLeading(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if !o.LeaderElect {
			p.leaderWork(leaderCtx)
			return
		}
		runLeaderElection(leaderCtx, p.kube, o, log, p.leaderWork)
	}()

	select {
	case <-ctx.Done():
	case err := <-grpcErr:
		return fmt.Errorf("gRPC server: %w", err)
	case err := <-monErr:
		return fmt.Errorf("monitoring server: %w", err)
	}
	ready.unset()
	stopLeading() // release the lease at once so another replica takes over
	stopGRPC(g, 5*time.Second)
	return ctx.Err()
}

// plane is what Run wires together and its parts share: the API clients,
// the cluster view, the CA and the translation into xDS.
type plane struct {
	o         Options
	log       *slog.Logger
	td        spiffeid.TrustDomain
	nodeAgent ca.ServiceAccountRef // the node agents' service account

	kube    *kubernetes.Clientset
	istio   *istioclient.Clientset
	gateway *gatewayclient.Clientset
	dynamic *dynamic.DynamicClient
	reg     *prometheus.Registry
	cluster *discovery.Cluster // not started
	status  *status.Writer

	authority *ca.Authority
	// authn is the one authenticator (and cache) for xDS, the CA and the
	// monitoring port.
	authn *ca.TokenReviewAuthenticator

	xds *xds.Server // set by Run once the cluster view has started
	tr  *translator // idem
	// addresses is the last push's workload Addresses (read-only), for
	// the dashboard to know which namespaces each waypoint serves.
	addresses atomic.Pointer[map[string]*workloadv1.Address]
}

// newPlane checks the options, connects to the API server and loads (or
// creates) the CA's root. Nothing serves yet.
func newPlane(ctx context.Context, o Options) (*plane, error) {
	p := &plane{o: o, log: o.Log}
	var err error
	if p.td, err = spiffeid.TrustDomainFromString(o.TrustDomain); err != nil {
		return nil, fmt.Errorf("--trust-domain %q: %w", o.TrustDomain, err)
	}
	if p.nodeAgent, err = ca.ParseServiceAccountRef(o.NodeAgentServiceAccount); err != nil {
		return nil, fmt.Errorf("--node-agent-service-account: %w", err)
	}
	cfg, err := restConfig(o.Kubeconfig)
	if err != nil {
		return nil, err
	}
	// client-go's default (5 requests/s, bursts of 10) would take minutes
	// to write the statuses of a thousand changed objects; istiod allows
	// about as much as this.
	cfg.QPS, cfg.Burst = 50, 100
	if p.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if p.istio, err = istioclient.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if p.gateway, err = gatewayclient.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if p.dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, err
	}
	p.status = &status.Writer{Client: p.istio, Gateway: p.gateway, Dynamic: p.dynamic, Log: p.log}
	p.reg = prometheus.NewRegistry()
	p.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	if p.cluster, err = discovery.New(p.log, discovery.Clients{Kube: p.kube, Istio: p.istio, Gateway: p.gateway, Dynamic: p.dynamic}); err != nil {
		return nil, err
	}
	if err := p.cluster.Pods().AddIndexers(ca.PodIndexers()); err != nil {
		return nil, err
	}
	p.authority, err = ca.LoadOrCreateRoot(ctx, p.kube, o.Namespace, ca.Options{
		TrustDomain: p.td, DefaultTTL: o.CertTTL, MaxTTL: o.MaxCertTTL, Logger: p.log,
	})
	if err != nil {
		return nil, err
	}
	p.authn = ca.NewTokenReviewAuthenticator(p.kube, ca.TokenReviewOptions{Audience: o.CAAudience})
	return p, nil
}

// newTranslator is the translation of the cluster into xds's state, with
// the workload and waypoint settings of o.
func newTranslator(o Options, log *slog.Logger, cluster *discovery.Cluster, xdsServer *xds.Server, reg prometheus.Registerer) *translator {
	cfg := waypoint.Config{
		Config: workload.Config{
			TrustDomain: o.TrustDomain, ClusterID: o.ClusterID, DomainSuffix: o.DomainSuffix, RootNamespace: o.RootNamespace,
		},
		PathNormalization:  o.PathNormalization,
		ExtensionProviders: o.ExtensionProviders,
		TracingEndpoint:    o.WaypointTracingEndpoint,
	}
	return &translator{log: log, cluster: cluster, xds: xdsServer, pushed: make(chan struct{}, 1), cfg: cfg,
		workloads: workload.NewTranslator(cfg.Config), waypoints: waypoint.NewTranslator(cfg), metrics: newTranslationMetrics(reg)}
}

// grpcServer is the xDS and CA server, with a serving certificate the CA
// keeps rotating and every stream authenticated by its token.
func (p *plane) grpcServer() (*grpc.Server, error) {
	authz := ca.NewNodeAuthorizer(p.td, p.nodeAgent, ca.NewIndexerPodLookup(p.cluster.Pods().GetIndexer()))
	rotator, err := ca.NewServingRotator(p.authority, servingNames(p.o.ServiceName, p.o.Namespace, p.o.DomainSuffix), ca.ServingRotatorOptions{Logger: p.log})
	if err != nil {
		return nil, err
	}
	// TLS 1.2 is the floor, not 1.3: Envoy (waypoints) defaults to 1.2 as a client.
	g := grpc.NewServer(append(xds.ServerOptions(),
		grpc.Creds(credentials.NewTLS(rotator.TLSConfig())),
		xdsInterceptors(newStreamCap(p.o.MaxStreamsPerSource, p.reg), p.authn, p.log),
		grpc.MaxRecvMsgSize(16<<20),
	)...)
	p.xds.Register(g)
	cav1.RegisterCertificateServiceServer(g, ca.NewService(p.authority, p.authn, authz, ca.ServiceOptions{Registerer: p.reg, Logger: p.log}))
	return g, nil
}

// leaderWork is what only one replica does at a time (the leader, or the
// only one without leader election): write policy status, deploy
// waypoints and publish the trust bundle, until ctx ends.
func (p *plane) leaderWork(ctx context.Context) {
	go p.tr.reportStatus(ctx, p.status)
	if gateways := p.cluster.Gateways(); gateways != nil {
		ctrl := &deploy.Controller{Kube: p.kube, Gateway: p.gateway, Gateways: gateways, ReferenceGrants: p.cluster.ReferenceGrants(), Log: p.log,
			Config: deploy.Config{Image: p.o.WaypointImage, PullPolicy: corev1.PullPolicy(p.o.WaypointPullPolicy),
				TracingEndpoint: p.o.WaypointTracingEndpoint, GODEBUG: p.o.WaypointGODEBUG, GOMAXPROCS: p.o.WaypointGOMAXPROCS, GatewaySecretsRole: p.o.GatewaySecretsRole, SecretCheckRole: p.o.SecretCheckRole,
				ControlServiceAccount: p.o.Namespace + "/" + p.o.ServiceAccount}}
		go func() {
			if err := ctrl.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				p.log.Error("waypoint deployment controller stopped", "err", err)
			}
		}()
	}
	pub, err := ca.NewBundlePublisher(p.kube, p.cluster.Namespaces(), p.authority.BundlePEM(), ca.BundlePublisherOptions{Logger: p.log})
	if err != nil {
		p.log.Error("trust bundle publisher", "err", err)
		return
	}
	if err := pub.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		p.log.Error("trust bundle publisher stopped", "err", err)
	}
}

// stopGRPC lets g's streams finish for up to timeout, then closes them.
func stopGRPC(g *grpc.Server, timeout time.Duration) {
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(timeout):
		g.Stop()
	}
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("no --kubeconfig and not in a cluster: %w", err)
	}
	return cfg, nil
}

func servingNames(service, ns, suffix string) []string {
	return []string{service, service + "." + ns, service + "." + ns + ".svc", service + "." + ns + ".svc." + suffix}
}

// translator turns the cluster into xDS state.
type translator struct {
	log     *slog.Logger
	cluster *discovery.Cluster
	xds     *xds.Server
	// cfg is the settings of both translations (cfg.Config the workload
	// one's).
	cfg waypoint.Config
	// workloads translates for node agents, again only the pods that
	// changed when nothing else did.
	workloads *workload.Translator
	// waypoints translates for waypoints, gateways and proxyless gRPC,
	// again only the load assignments of workloads whose health alone
	// changed when nothing else did.
	waypoints *waypoint.Translator
	metrics   translationMetrics
	// published, when set, gets each push's Addresses.
	published *atomic.Pointer[map[string]*workloadv1.Address]
	problems  map[string]bool // logged already
	pushed    chan struct{}   // coalesced: a push happened
	pushes    uint64

	mu      sync.Mutex
	objects status.Objects // as of the last push
	last    []workload.Problem
}

// run pushes after every change of the cluster (debounced) and when a
// proxyless gRPC client waits for the gRPC group, which pushes leave out
// while no such client is connected (control/xds/grpcgroup.go), until ctx
// ends.
func (t *translator) run(ctx context.Context, debounce time.Duration) {
	changes := discovery.Merge(ctx, t.cluster.Changed(), t.xds.GRPCWanted())
	discovery.Debounce(ctx, changes, debounce, 10*debounce, t.push)
}

func (t *translator) push() {
	start := time.Now()
	in, err := t.cluster.Inputs()
	if err != nil {
		t.log.Error("list cluster state", "err", err)
		return
	}
	wlStart := time.Now()
	out := t.workloads.Translate(in)
	t.metrics.observe("workload", wlStart)
	t.metrics.pods.Add(float64(t.workloads.Translated()))
	if t.published != nil {
		t.published.Store(&out.Addresses)
	}
	changed := t.xds.Update(xds.AddressType, messages(out.Addresses)) + t.xds.Update(xds.AuthorizationType, messages(out.Authorizations)) +
		t.xds.Update(xds.EnrolledNamespaceType, messages(out.EnrolledNamespaces))
	problems := out.Problems
	traffic, err := t.cluster.TrafficInputs()
	if err != nil {
		t.log.Error("list traffic management state", "err", err)
	} else {
		t.pushes++
		wpStart := time.Now()
		groups, wpProblems, ok := t.translateWaypoints(in, traffic, out.Addresses)
		t.metrics.observe("waypoint", wpStart)
		if ok {
			changed += t.xds.SetWaypointSnapshots(strconv.FormatUint(t.pushes, 10), groups)
			problems = append(slices.Clone(problems), wpProblems...)
		} else {
			traffic = discovery.TrafficInputs{} // no status from a translation that did not finish
		}
	}
	// Bad input is reported once per distinct problem, not on every push.
	seen := make(map[string]bool, len(problems))
	for _, p := range problems {
		key := p.String()
		seen[key] = true
		if !t.problems[key] {
			t.log.Warn("configuration problem", "kind", p.Kind, "namespace", p.Namespace, "name", p.Name, "problem", p.Message)
		}
	}
	t.problems = seen
	objects := t.statusObjects(in, traffic)
	t.mu.Lock()
	t.objects, t.last = objects, problems
	t.mu.Unlock()
	select {
	case t.pushed <- struct{}{}:
	default:
	}
	if changed > 0 {
		t.log.Debug("pushed", "changed", changed, "addresses", len(out.Addresses), "authorizations", len(out.Authorizations), "enrolledNamespaces", len(out.EnrolledNamespaces),
			"podsTranslated", t.workloads.Translated(), "took", time.Since(start))
	}
}

// statusObjects are the objects a push translated (traffic: empty when the
// waypoint translation did not finish), and those of unsupported kinds.
func (t *translator) statusObjects(in workload.Inputs, traffic discovery.TrafficInputs) status.Objects {
	only, err := t.cluster.StatusOnly()
	if err != nil {
		t.log.Error("list GatewayClasses and objects of unsupported kinds", "err", err)
	}
	return status.Objects{
		AuthorizationPolicies: in.AuthorizationPolicies, PeerAuthentications: in.PeerAuthentications, ServiceEntries: in.ServiceEntries,
		ServiceEntryAddresses: workload.AllocateAddresses(in.ServiceEntries),
		VirtualServices:       traffic.VirtualServices, DestinationRules: traffic.DestinationRules, IstioGateways: traffic.IstioGateways,
		Gateways: in.Gateways, GatewayClasses: only.GatewayClasses, HTTPRoutes: traffic.HTTPRoutes, GRPCRoutes: only.GRPCRoutes, Services: in.Services, Namespaces: in.Namespaces, ReferenceGrants: traffic.ReferenceGrants,
		RequestAuthentications: traffic.RequestAuthentications, EnvoyFilters: traffic.EnvoyFilters, Telemetries: traffic.Telemetries,
		Unsupported: only.Unsupported,
	}
}

// reportStatus writes conditions after each push (leader only), and again
// a second later while writes fail.
func (t *translator) reportStatus(ctx context.Context, w *status.Writer) {
	for {
		t.mu.Lock()
		objects, problems := t.objects, t.last
		t.mu.Unlock()
		var retry <-chan time.Time
		if w.Sync(ctx, objects, problems) {
			retry = time.After(statusRetry)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.pushed:
		case <-retry:
		}
	}
}

// statusRetry is how long reportStatus waits before retrying failed status
// writes (a conflict is usually resolved by the informer by then).
const statusRetry = time.Second

// requireToken authenticates xDS streams with the same service-account
// tokens as the CA: only workloads of this cluster may read the mesh's
// topology. The CA service authenticates its own unary calls.
// xdsInterceptors are the xDS port's stream checks, in order: the cap per
// source address, then the token.
func xdsInterceptors(c *streamCap, authn ca.Authenticator, log *slog.Logger) grpc.ServerOption {
	return grpc.ChainStreamInterceptor(c.intercept, requireToken(authn, log))
}

func requireToken(authn ca.Authenticator, log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		caller, err := ca.AuthenticateContext(ss.Context(), authn)
		if err != nil {
			log.Warn("xds stream rejected", "method", info.FullMethod, "err", err)
			return err
		}
		ctx := xds.WithCaller(ss.Context(), xds.Caller{Namespace: caller.Namespace, ServiceAccount: caller.ServiceAccount})
		return handler(srv, callerStream{ServerStream: ss, ctx: ctx})
	}
}

// callerStream carries the authenticated caller to the xDS server, which
// checks it against the node ID the stream claims.
type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s callerStream) Context() context.Context { return s.ctx }

func runLeaderElection(ctx context.Context, kube kubernetes.Interface, o Options, log *slog.Logger, work func(context.Context)) {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: o.Namespace, Name: "weft-control"},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: o.PodName},
	}
	for ctx.Err() == nil {
		leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
			Lock: lock, ReleaseOnCancel: true, Name: "weft-control",
			LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					log.Info("became leader", "identity", o.PodName)
					work(ctx)
				},
				OnStoppedLeading: func() { log.Info("stopped leading", "identity", o.PodName) },
				OnNewLeader: func(id string) {
					if id != o.PodName {
						log.Info("leader elected", "leader", id)
					}
				},
			},
		})
	}
}

// readiness is true once the first full configuration is in the caches and
// the gRPC listener is up, false again while shutting down.
type readiness struct{ ok atomic.Bool }

func (r *readiness) set()   { r.ok.Store(true) }
func (r *readiness) unset() { r.ok.Store(false) }

// openPaths of the monitoring port answer anyone: Prometheus scrapes
// /metrics (as istiod's), the kubelet probes the others. Everything else
// (/debug/*, /dashboard...) passes the access.Guard.
var openPaths = []string{"/metrics", "/healthz", "/ready"}

func monitoringServer(addr string, reg *prometheus.Registry, ready *readiness, syncz *syncz, guard *access.Guard,
	routes ...func(*http.ServeMux)) *http.Server {
	mux := http.NewServeMux()
	for _, r := range routes {
		r(mux)
	}
	mux.Handle("GET /debug/syncz", syncz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.ok.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return &http.Server{Addr: addr, Handler: guard.Wrap(mux), ReadHeaderTimeout: 5 * time.Second}
}

// Syncz is /debug/syncz's body: the xDS clients connected to this replica
// and whether each acknowledged the latest configuration (read-only; what
// weftctl proxy-status shows). A reader scoped to a namespace sees only the
// clients whose service account is in it.
type Syncz struct {
	Pod     string             `json:"pod"` // this replica
	Clients []xds.ClientStatus `json:"clients"`
}

// clientLister is the xDS server (xds.Server.Clients).
type clientLister interface{ Clients() []xds.ClientStatus }

type syncz struct {
	pod     string
	clients atomic.Pointer[clientLister] // nil until the xDS server exists
}

func (s *syncz) setClients(l clientLister) { s.clients.Store(&l) }

func (s *syncz) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l := s.clients.Load()
	if l == nil {
		http.Error(w, "xDS server not started yet", http.StatusServiceUnavailable)
		return
	}
	scope := access.FromContext(r.Context())
	body := Syncz{Pod: s.pod, Clients: []xds.ClientStatus{}}
	for _, c := range (*l).Clients() {
		if scope.Sees(c.Namespace) {
			body.Clients = append(body.Clients, c)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(body)
}

// messages is a translation's resources as the xDS server takes them.
func messages[M proto.Message](in map[string]M) map[string]proto.Message {
	out := make(map[string]proto.Message, len(in))
	for k, v := range in {
		out[k] = v
	}
	return out
}
