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
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"
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
	// PathNormalization is how waypoints and gateways normalize request
	// paths (Istio's meshConfig.pathNormalization; "" = BASE).
	PathNormalization waypoint.PathNormalization
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
	td, err := spiffeid.TrustDomainFromString(o.TrustDomain)
	if err != nil {
		return fmt.Errorf("--trust-domain %q: %w", o.TrustDomain, err)
	}
	nodeAgent, err := ca.ParseServiceAccountRef(o.NodeAgentServiceAccount)
	if err != nil {
		return fmt.Errorf("--node-agent-service-account: %w", err)
	}
	cfg, err := restConfig(o.Kubeconfig)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	istio, err := istioclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	gw, err := gatewayclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	cluster, err := discovery.New(log, discovery.Clients{Kube: kube, Istio: istio, Gateway: gw})
	if err != nil {
		return err
	}
	if err := cluster.Pods().AddIndexers(ca.PodIndexers()); err != nil {
		return err
	}
	authority, err := ca.LoadOrCreateRoot(ctx, kube, o.Namespace, ca.Options{
		TrustDomain: td, DefaultTTL: o.CertTTL, MaxTTL: o.MaxCertTTL, Logger: log,
	})
	if err != nil {
		return err
	}
	// One authenticator (and cache) for xDS, the CA and the monitoring port.
	authn := ca.NewTokenReviewAuthenticator(kube, ca.TokenReviewOptions{Audience: o.CAAudience})
	ready := &readiness{}
	syncz := &syncz{pod: o.PodName}
	guard := access.NewGuard(authn, o.Namespace, openPaths, log.With("component", "monitoring"))
	mon := monitoringServer(o.MonitoringAddress, reg, ready, syncz, guard, dashboardRoutes(ctx, o, kube, cluster))
	monErr := make(chan error, 1)
	go func() { monErr <- mon.ListenAndServe() }()
	defer mon.Close()

	if err := cluster.Start(ctx); err != nil {
		return err
	}
	xdsServer := xds.New(ctx, log, reg)
	syncz.setClients(xdsServer)
	tr := &translator{log: log, cluster: cluster, xds: xdsServer, pushed: make(chan struct{}, 1), cfg: workload.Config{
		TrustDomain: o.TrustDomain, ClusterID: o.ClusterID, DomainSuffix: o.DomainSuffix, RootNamespace: o.RootNamespace,
	}, waypoints: waypointTranslator}
	tr.waypointCfg = waypoint.Config{TrustDomain: tr.cfg.TrustDomain, ClusterID: tr.cfg.ClusterID, DomainSuffix: tr.cfg.DomainSuffix,
		RootNamespace: tr.cfg.RootNamespace, PathNormalization: o.PathNormalization}
	if tr.waypoints == nil {
		log.Warn("built without the waypoint translation (control/waypoint): waypoints and proxyless gRPC get no Envoy resources")
	}
	tr.push() // the full state before serving: no client ever sees a partial mesh
	go discovery.Debounce(ctx, cluster.Changed(), o.Debounce, 10*o.Debounce, tr.push)

	authz := ca.NewNodeAuthorizer(td, nodeAgent, ca.NewIndexerPodLookup(cluster.Pods().GetIndexer()))
	rotator, err := ca.NewServingRotator(authority, servingNames(o.ServiceName, o.Namespace, o.DomainSuffix), ca.ServingRotatorOptions{Logger: log})
	if err != nil {
		return err
	}
	// TLS 1.2 is the floor, not 1.3: Envoy (waypoints) defaults to 1.2 as a client.
	g := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(rotator.TLSConfig())),
		grpc.StreamInterceptor(requireToken(authn, log)),
		grpc.MaxRecvMsgSize(16<<20),
	)
	xdsServer.Register(g)
	cav1.RegisterCertificateServiceServer(g, ca.NewService(authority, authn, authz, ca.ServiceOptions{Registerer: reg, Logger: log}))
	ln, err := net.Listen("tcp", o.XDSAddress)
	if err != nil {
		return fmt.Errorf("listen %s: %w", o.XDSAddress, err)
	}
	grpcErr := make(chan error, 1)
	go func() { grpcErr <- g.Serve(ln) }()
	ready.set()
	log.Info("weft-control serving", "xds", o.XDSAddress, "monitoring", o.MonitoringAddress,
		"trustDomain", o.TrustDomain, "ca", authority.Source())

	var wg sync.WaitGroup
	leaderCtx, stopLeading := context.WithCancel(ctx)
	defer func() { stopLeading(); wg.Wait() }()
	statusWriter := &status.Writer{Client: istio, Gateway: gw, Log: log}
	leaderWork := func(ctx context.Context) {
		go tr.reportStatus(ctx, statusWriter)
		if gateways := cluster.Gateways(); gateways != nil {
			ctrl := &deploy.Controller{Kube: kube, Gateway: gw, Gateways: gateways, Log: log,
				Config: deploy.Config{Image: o.WaypointImage, PullPolicy: corev1.PullPolicy(o.WaypointPullPolicy),
					TracingEndpoint: o.WaypointTracingEndpoint}}
			go func() {
				if err := ctrl.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
					log.Error("waypoint deployment controller stopped", "err", err)
				}
			}()
		}
		pub, err := ca.NewBundlePublisher(kube, cluster.Namespaces(), authority.BundlePEM(), ca.BundlePublisherOptions{Logger: log})
		if err != nil {
			log.Error("trust bundle publisher", "err", err)
			return
		}
		if err := pub.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("trust bundle publisher stopped", "err", err)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if !o.LeaderElect {
			leaderWork(leaderCtx)
			return
		}
		runLeaderElection(leaderCtx, kube, o, log, leaderWork)
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
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		g.Stop()
	}
	return ctx.Err()
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

// waypointTranslateFunc translates the cluster into the Envoy resources of
// every waypoint ("<ns>/<name>") and of proxyless gRPC (xds.GroupGRPC), with
// the problems found. addresses is the workload translation's output.
type waypointTranslateFunc func(cfg waypoint.Config, in workload.Inputs, traffic discovery.TrafficInputs,
	addresses map[string]*workloadv1.Address) (map[string]xds.Resources, []workload.Problem)

// translator turns the cluster into xDS state.
type translator struct {
	log       *slog.Logger
	cluster   *discovery.Cluster
	xds       *xds.Server
	cfg       workload.Config
	waypoints waypointTranslateFunc // nil: no Envoy resources
	// waypointCfg is cfg plus the waypoint-only settings.
	waypointCfg waypoint.Config
	problems    map[string]bool // logged already
	pushed      chan struct{}   // coalesced: a push happened
	pushes      uint64

	mu       sync.Mutex
	policies []*securityv1.AuthorizationPolicy // as of the last push
	traffic  discovery.TrafficInputs           // as of the last push
	last     []workload.Problem
}

func (t *translator) push() {
	start := time.Now()
	in, err := t.cluster.Inputs()
	if err != nil {
		t.log.Error("list cluster state", "err", err)
		return
	}
	out := workload.Translate(t.cfg, in)
	addrs := make(map[string]proto.Message, len(out.Addresses))
	for k, v := range out.Addresses {
		addrs[k] = v
	}
	authz := make(map[string]proto.Message, len(out.Authorizations))
	for k, v := range out.Authorizations {
		authz[k] = v
	}
	changed := t.xds.Update(xds.AddressType, addrs) + t.xds.Update(xds.AuthorizationType, authz)
	problems := out.Problems
	traffic, err := t.cluster.TrafficInputs()
	if err != nil {
		t.log.Error("list traffic management state", "err", err)
	} else if t.waypoints != nil {
		t.pushes++
		groups, wpProblems, ok := t.translateWaypoints(in, traffic, out.Addresses)
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
	t.mu.Lock()
	t.policies, t.last = in.AuthorizationPolicies, problems
	t.traffic = traffic
	t.mu.Unlock()
	select {
	case t.pushed <- struct{}{}:
	default:
	}
	if changed > 0 {
		t.log.Debug("pushed", "changed", changed, "addresses", len(addrs), "authorizations", len(authz), "took", time.Since(start))
	}
}

// translateWaypoints runs the waypoint translation; a panic in it is logged
// and the waypoints keep their last snapshots, while the node agents'
// workload state (already pushed) is unaffected.
func (t *translator) translateWaypoints(in workload.Inputs, traffic discovery.TrafficInputs,
	addrs map[string]*workloadv1.Address) (groups map[string]xds.Resources, problems []workload.Problem, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			t.log.Error("waypoint translation panicked; waypoints keep their last configuration", "panic", r, "stack", string(debug.Stack()))
			ok = false
		}
	}()
	groups, problems = t.waypoints(t.waypointCfg, in, traffic, addrs)
	return groups, problems, true
}

// reportStatus writes policy conditions after each push (leader only).
func (t *translator) reportStatus(ctx context.Context, w *status.Writer) {
	for {
		t.mu.Lock()
		policies, traffic, problems := t.policies, t.traffic, t.last
		t.mu.Unlock()
		w.SyncPolicies(ctx, policies, problems)
		if t.waypoints != nil { // without the translation there is nothing to report
			w.SyncTraffic(ctx, traffic.VirtualServices, traffic.DestinationRules, traffic.HTTPRoutes, problems)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.pushed:
		}
	}
}

// requireToken authenticates xDS streams with the same service-account
// tokens as the CA: only workloads of this cluster may read the mesh's
// topology. The CA service authenticates its own unary calls.
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
