package kubelet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// Kubelet is one node's kubelet.
type Kubelet struct {
	cfg      Config
	log      *slog.Logger
	client   kubernetes.Interface
	images   *ImageMap
	rt       *Runtime
	recorder record.EventRecorder

	podLister corelisters.PodLister
	svcLister corelisters.ServiceLister
	queue     workqueue.TypedRateLimitingInterface[string]

	tokens *tokenManager

	nodeCPU, nodeMemory resource.Quantity

	mu   sync.Mutex
	pods map[types.UID]*podState
}

// Run runs the kubelet until ctx is done. Containers keep running when it
// returns; a later Run adopts them.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	k, err := newKubelet(cfg)
	if err != nil {
		return err
	}
	return k.run(ctx)
}

func newKubelet(cfg Config) (*Kubelet, error) {
	restCfg := cfg.RestConfig
	if restCfg == nil {
		var err error
		restCfg, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("loading kubeconfig: %w", err)
		}
	}
	restCfg.UserAgent = "weft-kubelet/" + KubeletVersion + " (" + cfg.NodeName + ")"
	if restCfg.QPS == 0 {
		restCfg.QPS, restCfg.Burst = 50, 100
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, err
	}
	images, err := LoadImageMaps(cfg.ImageMaps, cfg.BinDir)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{cfg.StateDir, filepath.Join(cfg.StateDir, "pods"), cfg.CNICacheDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	k := &Kubelet{
		cfg:    cfg,
		log:    cfg.Logger,
		client: client,
		images: images,
		rt: &Runtime{
			SelfBinary:   cfg.SelfBinary,
			CgroupRoot:   DetectCgroupRoot(),
			CgroupParent: cfg.CgroupParent,
			Log:          cfg.Logger,
		},
		pods: map[types.UID]*podState{},
	}
	k.tokens = &tokenManager{k: k, cache: map[string]*cachedToken{}}
	k.nodeCPU, k.nodeMemory = nodeResources()
	return k, nil
}

func (k *Kubelet) run(ctx context.Context) error {
	k.log.Info("starting weft-kubelet", "node", k.cfg.NodeName, "nodeIP", k.cfg.NodeIP, "stateDir", k.cfg.StateDir, "cgroupRoot", k.rt.CgroupRoot)

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: k.client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	k.recorder = broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "kubelet", Host: k.cfg.NodeName})

	// The server comes first: the apiserver needs it for logs/exec even
	// while the node registers.
	srvErr := make(chan error, 1)
	go func() { srvErr <- k.serve(ctx) }()

	if err := k.registerNode(ctx); err != nil {
		return err
	}
	go k.heartbeat(ctx)

	podFactory := informers.NewSharedInformerFactoryWithOptions(k.client, time.Minute,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", k.cfg.NodeName).String()
		}))
	podInformer := podFactory.Core().V1().Pods()
	k.podLister = podInformer.Lister()
	svcFactory := informers.NewSharedInformerFactory(k.client, 10*time.Minute)
	k.svcLister = svcFactory.Core().V1().Services().Lister()

	k.queue = workqueue.NewTypedRateLimitingQueue(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](500*time.Millisecond, 60*time.Second))
	defer k.queue.ShutDown()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			k.queue.Add(key)
		}
	}
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		return err
	}
	podFactory.Start(ctx.Done())
	svcFactory.Start(ctx.Done())
	defer podFactory.Shutdown()
	defer svcFactory.Shutdown()
	for typ, ok := range podFactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("informer for %v did not sync", typ)
		}
	}
	svcFactory.WaitForCacheSync(ctx.Done())

	k.recoverPods(ctx)

	const workers = 8
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k.processNext(ctx) {
			}
		}()
	}
	k.log.Info("weft-kubelet ready")
	select {
	case <-ctx.Done():
	case err := <-srvErr:
		if err != nil && !errors.Is(err, context.Canceled) {
			k.log.Error("kubelet server failed", "err", err)
			k.queue.ShutDown()
			wg.Wait()
			return err
		}
	}
	k.queue.ShutDown()
	wg.Wait()
	k.log.Info("weft-kubelet stopped; containers keep running")
	return nil
}

func (k *Kubelet) processNext(ctx context.Context) bool {
	key, quit := k.queue.Get()
	if quit {
		return false
	}
	defer k.queue.Done(key)
	requeue, err := k.syncKey(ctx, key)
	if err != nil {
		k.log.Warn("sync failed", "pod", key, "err", err)
		k.queue.AddRateLimited(key)
		return true
	}
	k.queue.Forget(key)
	if requeue > 0 {
		k.queue.AddAfter(key, requeue)
	}
	return true
}

func (k *Kubelet) enqueue(key string) {
	if k.queue != nil {
		k.queue.Add(key)
	}
}

func (k *Kubelet) scheduleResync(pod *v1.Pod, after time.Duration) {
	if k.queue != nil {
		k.queue.AddAfter(pod.Namespace+"/"+pod.Name, after)
	}
}

// nodeResources reads cpu count and memory.
func nodeResources() (cpu, mem resource.Quantity) {
	cpu = *resource.NewQuantity(int64(numCPU()), resource.DecimalSI)
	mem = *resource.NewQuantity(memTotal(), resource.BinarySI)
	return cpu, mem
}

func memTotal() int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			var kb int64
			fmt.Sscan(f[1], &kb)
			return kb * 1024
		}
	}
	return 0
}
