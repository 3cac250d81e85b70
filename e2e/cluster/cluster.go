package cluster

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/weft-mesh/weft/pkg/netns"

	"golang.org/x/sys/unix"
)

//go:embed addons/coredns.yaml
var corednsManifest []byte

// Cluster is a running local cluster owned by this process.
type Cluster struct {
	Config     Config
	Kubeconfig string // admin kubeconfig for use from the host
	REST       *rest.Config
	Client     kubernetes.Interface

	l       layout
	p       plan
	log     *slog.Logger
	cg      *cgroup
	fwd     *forwarder
	lbs     *loadBalancers
	cp      []*process // etcd, apiserver, controller-manager, scheduler
	nodes   []*process // kubelets and kube-proxies
	watch   *startWatch
	stopped bool
}

// State is what `status` and `down` read back about a cluster.
type State struct {
	Name       string    `json:"name"`
	PID        int       `json:"pid"`
	Nodes      int       `json:"nodes"`
	APIPort    int       `json:"apiPort"`
	Kubeconfig string    `json:"kubeconfig"`
	Started    time.Time `json:"started"`
}

// Start brings a cluster up and returns once every node is Ready and cluster
// DNS serves. On any error it removes everything it made before returning.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (c *Cluster, err error) {
	cfg.Defaults()
	if err := absPaths(&cfg); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid cluster config:\n%w", err)
	}
	l := layout{dir: cfg.StateDir}
	if st, err := ReadState(cfg.StateDir); err == nil && ProcessAlive(st.PID) {
		return nil, fmt.Errorf("cluster %q is already up (pid %d, kubeconfig %s): run `weft-cluster down --name %s` first", cfg.Name, st.PID, st.Kubeconfig, cfg.Name)
	}
	// The same name from another state directory (another checkout's make
	// demo or e2e) shares the network namespaces and cgroup: "cleaning up"
	// would tear that cluster down under its owner.
	if pid := clusterOwner(cfg.Name); pid != 0 {
		return nil, fmt.Errorf("cluster %q is up, run by pid %d from another state directory: stop that one (`weft-cluster down --name %s --state-dir <its dir>`, or end pid %d) or choose another --name", cfg.Name, pid, cfg.Name, pid)
	}
	if left := leftovers(cfg.Name, cfg.StateDir); len(left) > 0 {
		log.Info("removing leftovers of an earlier run", "cluster", cfg.Name, "leftovers", left)
		if err := Cleanup(cfg.Name, cfg.StateDir); err != nil {
			return nil, fmt.Errorf("clean up earlier run: %w", err)
		}
	}
	// Claim the host port first: a clash must fail before anything is made.
	ln, err := listenLoopback(cfg.APIPort)
	if err != nil {
		return nil, fmt.Errorf("API server port 127.0.0.1:%d: %w (choose another with --api-port)", cfg.APIPort, err)
	}
	cfg.APIPort = ln.Addr().(*net.TCPAddr).Port

	// Orphaned descendants (containers whose kubelet stopped first) become
	// our children, so Stop can reap them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		ln.Close()
		return nil, fmt.Errorf("become child subreaper: %w", err)
	}
	c = &Cluster{Config: cfg, l: l, p: newPlan(cfg.Index, cfg.Nodes), log: log, Kubeconfig: l.adminKubeconfig()}
	c.fwd = &forwarder{ln: ln, netns: netnsPath(controlPlaneNS(cfg.Name)), target: net.JoinHostPort(c.p.apiAddr.String(), itoa(apiPort)), log: log}
	c.watch = newStartWatch(ctx)
	defer c.watch.done()
	ctx = c.watch.ctx
	defer func() {
		if err != nil {
			if ce := exitCause(ctx); ce != nil {
				err = ce // the root cause, not what it made fail
			}
			log.Error("cluster start failed; tearing down", "err", err)
			_ = c.Stop()
			c = nil
		}
	}()
	if err := c.prepare(); err != nil {
		return c, err
	}
	go c.fwd.serve()
	if err := c.startControlPlane(ctx); err != nil {
		return c, err
	}
	if err := c.bootstrap(ctx); err != nil {
		return c, err
	}
	if err := c.startNodes(ctx); err != nil {
		return c, err
	}
	if err := c.waitReady(ctx); err != nil {
		return c, err
	}
	c.lbs = &loadBalancers{client: c.Client, index: cfg.Index, fabric: netnsPath(fabricNS(cfg.Name)), node: c.p.nodeAddr[0], log: log}
	if err := c.lbs.start(); err != nil {
		return c, fmt.Errorf("load balancer emulation: %w", err)
	}
	st := State{Name: cfg.Name, PID: os.Getpid(), Nodes: cfg.Nodes, APIPort: cfg.APIPort, Kubeconfig: c.Kubeconfig, Started: time.Now()}
	data, _ := json.MarshalIndent(st, "", "  ")
	return c, os.WriteFile(l.stateFile(), data, 0o644)
}

func absPaths(cfg *Config) error {
	for _, p := range []*string{&cfg.StateDir, &cfg.AssetsDir, &cfg.BinDir} {
		a, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = a
	}
	for i, m := range cfg.ImageMaps {
		a, err := filepath.Abs(m)
		if err != nil {
			return err
		}
		cfg.ImageMaps[i] = a
	}
	return nil
}

// prepare makes the state directory, certificates, kubeconfigs, cgroup,
// network and node roots.
func (c *Cluster) prepare() error {
	l, p := c.l, c.p
	for _, d := range []string{l.logs(), filepath.Dir(l.kubeconfig("x")), l.etcdData()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	ca, err := newCA()
	if err != nil {
		return err
	}
	if err := ca.write(l.pki("")); err != nil {
		return err
	}
	if err := ca.issueAll(l.pki(""), certSpecs(p)); err != nil {
		return err
	}
	if err := writeServiceAccountKey(l.pki("")); err != nil {
		return err
	}
	inside := "https://" + net.JoinHostPort(p.apiAddr.String(), itoa(apiPort))
	kubeconfigs := map[string]string{"controller-manager": inside, "scheduler": inside, "kube-proxy": inside}
	for i := range c.Config.Nodes {
		kubeconfigs["kubelet-"+nodeName(i)] = inside
	}
	for user, server := range kubeconfigs {
		if err := writeKubeconfig(l, l.kubeconfig(user), server, user); err != nil {
			return err
		}
	}
	if err := writeKubeconfig(l, l.adminKubeconfig(), "https://127.0.0.1:"+itoa(c.Config.APIPort), "admin"); err != nil {
		return err
	}
	if c.REST, err = clientcmd.BuildConfigFromFlags("", l.adminKubeconfig()); err != nil {
		return err
	}
	if c.Client, err = kubernetes.NewForConfig(c.REST); err != nil {
		return err
	}
	if c.cg, err = newCgroup(clusterCgroupPath(c.Config.Name)); err != nil {
		return err
	}
	if err := setupNetwork(c.Config.Name, p); err != nil {
		return err
	}
	for i := range c.Config.Nodes {
		if err := prepareNodeRoot(l, c.Config.AssetsDir, p, i); err != nil {
			return err
		}
	}
	return os.WriteFile(l.addonsImageMap(), addonsImageMap(c.Config.AssetsDir), 0o644)
}

// addonsImageMap maps the images whose binaries are kube assets (built by
// hack/kube-assets.sh, not by make build): the cluster's CoreDNS, the
// Prometheus and Jaeger of samples/addons, and the sample applications
// of Istio's tasks (samples/extauthz, samples/httpbin, the envoyproxy/ratelimit
// service of samples/ratelimit) and the Gateway API conformance suite's
// echo backends (make conformance: echo-basic, and Istio's echo app with
// the client its mesh tests exec and the certificate its args name, where
// Istio's image has them). All but CoreDNS are
// optional: the cluster starts without them, and a pod using one waits with
// ErrImagePull naming the missing file.
func addonsImageMap(assets string) []byte {
	return fmt.Appendf(nil, `images:
- image: registry.k8s.io/coredns/coredns
  entrypoint: [%q]
- image: prom/prometheus
  entrypoint: [%q]
- image: registry.istio.io/testing/ext-authz
  entrypoint: [%q]
- image: docker.io/mccutchen/go-httpbin
  entrypoint: [%q]
- image: registry.k8s.io/gateway-api/echo-basic
  entrypoint: [%q]
- image: registry.k8s.io/gateway-api/echo-advanced
  entrypoint: [%q]
  files:
  - {path: /usr/local/bin/client, source: %q}
  - {path: /cert.crt, source: %q}
  - {path: /cert.key, source: %q}
- image: envoyproxy/ratelimit
  entrypoint: [%q]
- image: docker.io/jaegertracing/jaeger
  entrypoint: [%q]
`, filepath.Join(assets, "coredns"), filepath.Join(assets, "prometheus"),
		filepath.Join(assets, "extauthz"), filepath.Join(assets, "go-httpbin"), filepath.Join(assets, "echo-basic"),
		filepath.Join(assets, "echo-server"), filepath.Join(assets, "echo-client"),
		filepath.Join(assets, "echo-advanced-cert.crt"), filepath.Join(assets, "echo-advanced-cert.key"),
		filepath.Join(assets, "ratelimit"), filepath.Join(assets, "jaeger"))
}

func (c *Cluster) newProcess(name, binary, netns string, args ...string) (*process, error) {
	cg, err := newCgroup(filepath.Join(clusterCgroupPath(c.Config.Name), name))
	if err != nil {
		return nil, err
	}
	return &process{name: name, path: binary, args: args, netns: netns, logDir: c.l.logs(), cgroup: cg, onExit: c.watch.exited}, nil
}

func (c *Cluster) startControlPlane(ctx context.Context) error {
	cpNS := netnsPath(controlPlaneNS(c.Config.Name))
	asset := func(n string) string { return filepath.Join(c.Config.AssetsDir, n) }
	etcd, err := c.newProcess("etcd", asset("etcd"), cpNS, etcdArgs(c.l)...)
	if err != nil {
		return err
	}
	if err := c.run(etcd); err != nil {
		return err
	}
	etcdHealth := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return netns.Dial(ctx, cpNS, addr) },
	}}
	if err := poll(ctx, "etcd health", func(ctx context.Context) error {
		return httpOK(ctx, etcdHealth, "http://127.0.0.1:2379/health")
	}); err != nil {
		return err
	}
	apiserver, err := c.newProcess("kube-apiserver", asset("kube-apiserver"), cpNS, apiserverArgs(c.l, c.p)...)
	if err != nil {
		return err
	}
	if err := c.run(apiserver); err != nil {
		return err
	}
	if err := poll(ctx, "kube-apiserver /readyz", func(ctx context.Context) error {
		return c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
	}); err != nil {
		return err
	}
	kcm, err := c.newProcess("kube-controller-manager", asset("kube-controller-manager"), cpNS, controllerManagerArgs(c.l, c.p)...)
	if err != nil {
		return err
	}
	sched, err := c.newProcess("kube-scheduler", asset("kube-scheduler"), cpNS, schedulerArgs(c.l)...)
	if err != nil {
		return err
	}
	for _, p := range []*process{kcm, sched} {
		if err := c.run(p); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) run(p *process) error {
	if err := p.start(c.log); err != nil {
		return err
	}
	if strings.HasPrefix(p.name, "kubelet-") || strings.HasPrefix(p.name, "kube-proxy-") {
		c.nodes = append(c.nodes, p)
	} else {
		c.cp = append(c.cp, p)
	}
	return nil
}

// bootstrap publishes the kubernetes Service's endpoints (the apiserver's
// own reconciler is off, see apiserverArgs) and installs cluster DNS.
func (c *Cluster) bootstrap(ctx context.Context) error {
	cs := c.Client
	addr := c.p.apiAddr.String()
	labels := map[string]string{discoveryv1.LabelServiceName: "kubernetes", discoveryv1.LabelManagedBy: "weft-cluster"}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "kubernetes", Namespace: "default", Labels: labels},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("https"), Port: ptr.To(int32(apiPort)), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	// The Service appears shortly after /readyz; wait for it so the slice is
	// not orphaned.
	if err := poll(ctx, "the kubernetes Service", func(ctx context.Context) error {
		_, err := cs.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
		return err
	}); err != nil {
		return err
	}
	if _, err := cs.DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("publish kubernetes endpoints: %w", err)
	}
	return Apply(ctx, c.REST, "kube-system", corednsManifest)
}

func (c *Cluster) startNodes(ctx context.Context) error {
	imageMaps := append([]string{c.l.addonsImageMap()}, c.Config.ImageMaps...)
	for i := range c.Config.Nodes {
		n := nodeName(i)
		ns := netnsPath(nodeNS(c.Config.Name, i))
		kubelet, err := c.newProcess("kubelet-"+n, filepath.Join(c.Config.BinDir, "weft-kubelet"), ns, kubeletArgs(c.l, &c.Config, c.p, i, imageMaps)...)
		if err != nil {
			return err
		}
		kubelet.env = []string{"WEFT_BIN_DIR=" + c.Config.BinDir}
		proxyConf := filepath.Join(c.l.nodeDir(n), "kube-proxy.yaml")
		if err := os.WriteFile(proxyConf, []byte(kubeProxyConfig(c.l, c.p, n)), 0o644); err != nil {
			return err
		}
		proxy, err := c.newProcess("kube-proxy-"+n, filepath.Join(c.Config.AssetsDir, "kube-proxy"), ns, "--config="+proxyConf)
		if err != nil {
			return err
		}
		for _, p := range []*process{kubelet, proxy} {
			if err := c.run(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// waitReady waits for every node to be Ready and cluster DNS to be available.
func (c *Cluster) waitReady(ctx context.Context) error {
	if err := poll(ctx, "nodes Ready", func(ctx context.Context) error {
		nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		ready := 0
		for _, n := range nodes.Items {
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		if ready < c.Config.Nodes {
			return fmt.Errorf("%d of %d nodes Ready", ready, c.Config.Nodes)
		}
		return nil
	}); err != nil {
		return err
	}
	return poll(ctx, "cluster DNS (kube-system/coredns) available", func(ctx context.Context) error {
		d, err := c.Client.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !deploymentAvailable(d) {
			if err := podFailure(ctx, c, "kube-system", "k8s-app=kube-dns"); err != nil {
				return err
			}
			return fmt.Errorf("coredns: %d/%d replicas available", d.Status.AvailableReplicas, ptr.Deref(d.Spec.Replicas, 1))
		}
		return nil
	})
}

func deploymentAvailable(d *appsv1.Deployment) bool {
	return d.Status.ObservedGeneration >= d.Generation && d.Status.AvailableReplicas >= ptr.Deref(d.Spec.Replicas, 1)
}

// Stop tears the cluster down: node components first (so nothing restarts
// pods), then every process in the cluster's cgroup, the control plane, the
// namespaces and mounts. Logs stay in the state directory.
func (c *Cluster) Stop() error {
	if c.stopped {
		return nil
	}
	c.stopped = true
	for _, p := range c.nodes {
		p.stop(5 * time.Second)
	}
	var errs []error
	// Containers next, before the API goes away: each node's pods live in
	// weft-<cluster>/<node> (the kubelets' --cgroup-parent).
	if root, err := cgroupHierarchy(); err == nil {
		for i := range c.Config.Nodes {
			pods := &cgroup{dir: filepath.Join(root, clusterCgroupPath(c.Config.Name), nodeName(i))}
			if err := pods.destroy(10 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if c.lbs != nil {
		c.lbs.close()
	}
	for i := len(c.cp) - 1; i >= 0; i-- {
		c.cp[i].stop(10 * time.Second)
	}
	if c.fwd != nil {
		c.fwd.close()
	}
	if err := Cleanup(c.Config.Name, c.Config.StateDir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// DialContext connects to an address inside the cluster (a pod IP or a
// Service VIP) from the first node's network namespace, as a process on
// that node would. Use it as a gRPC or HTTP dialer in tests.
func (c *Cluster) DialContext(ctx context.Context, _, addr string) (net.Conn, error) {
	return netns.Dial(ctx, netnsPath(nodeNS(c.Config.Name, 0)), addr)
}

// ReadState reads the state file of a cluster that is (or was) up.
func ReadState(stateDir string) (State, error) {
	var st State
	data, err := os.ReadFile(layout{dir: stateDir}.stateFile())
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(data, &st)
}

// ProcessAlive reports whether pid runs. A zombie counts as gone: where PID 1
// does not reap orphans, an exited supervisor stays a zombie.
func ProcessAlive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

func httpOK(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// fatal marks an error that polling cannot outwait.
type fatal struct{ error }

// poll calls check every 250ms until it succeeds, fails fatally or ctx ends,
// returning the last error with what was awaited, or the component exit
// that ended ctx (startWatch).
func poll(ctx context.Context, what string, check func(context.Context) error) error {
	var last error
	for {
		if last = check(ctx); last == nil {
			return nil
		}
		if f, ok := last.(fatal); ok {
			return f.error
		}
		select {
		case <-ctx.Done():
			if ce := exitCause(ctx); ce != nil {
				return ce
			}
			return fmt.Errorf("timed out waiting for %s: %v", what, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
