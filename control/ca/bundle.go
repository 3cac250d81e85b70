package ca

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// The ConfigMap every namespace gets with the trust bundle (the same shape
// as Istio's istio-ca-root-cert).
const (
	BundleConfigMapName = "weft-ca-root-cert"
	BundleConfigMapKey  = "root-cert.pem"
)

// BundleConfigMapListOptions restricts a ConfigMap informer to the bundle
// ConfigMaps, for BundlePublisherOptions.ConfigMaps, e.g.
// informers.NewSharedInformerFactoryWithOptions(client, resync,
// informers.WithTweakListOptions(ca.BundleConfigMapListOptions)).
func BundleConfigMapListOptions(o *metav1.ListOptions) {
	o.FieldSelector = fields.OneTermEqualSelector("metadata.name", BundleConfigMapName).String()
}

// BundlePublisherOptions configure a BundlePublisher. Zero is usable.
type BundlePublisherOptions struct {
	// ConfigMaps is an optional informer on the bundle ConfigMaps (see
	// BundleConfigMapListOptions). With it, a deleted or edited ConfigMap is
	// repaired at once and reads come from its cache; without it, each
	// namespace event costs a GET.
	ConfigMaps cache.SharedIndexInformer
	// Workers reconciling namespaces in parallel. Default 2.
	Workers int
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

// BundlePublisher keeps ConfigMap weft-ca-root-cert (key root-cert.pem,
// the PEM roots) in every namespace that is not terminating. It creates the
// ConfigMap, or updates it when its content differs, and leaves other keys
// alone. Run it on the leader only.
type BundlePublisher struct {
	client     kubernetes.Interface
	namespaces cache.SharedIndexInformer
	configMaps cache.SharedIndexInformer
	bundle     string
	workers    int
	logger     *slog.Logger
}

// NewBundlePublisher publishes bundlePEM (Authority.BundlePEM) to every
// namespace in the namespaces informer. The caller starts the informers.
func NewBundlePublisher(client kubernetes.Interface, namespaces cache.SharedIndexInformer, bundlePEM []byte, opts BundlePublisherOptions) (*BundlePublisher, error) {
	if client == nil || namespaces == nil {
		return nil, errors.New("bundle publisher needs a client and a namespace informer")
	}
	if len(bytes.TrimSpace(bundlePEM)) == 0 {
		return nil, errors.New("bundle publisher needs a non-empty trust bundle")
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &BundlePublisher{
		client:     client,
		namespaces: namespaces,
		configMaps: opts.ConfigMaps,
		bundle:     string(bundlePEM),
		workers:    opts.Workers,
		logger:     opts.Logger,
	}, nil
}

// Run reconciles until ctx is done. It waits for the informers to sync
// (they must be started by the caller) and returns ctx.Err() if they do not
// before ctx ends.
func (p *BundlePublisher) Run(ctx context.Context) error {
	queue := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "weft_ca_bundle"})
	defer queue.ShutDown()

	enqueue := func(obj any) {
		if m := objectMeta(obj); m != nil {
			ns := m.GetNamespace()
			if ns == "" { // a Namespace object
				ns = m.GetName()
			}
			queue.Add(ns)
		}
	}
	nsReg, err := p.namespaces.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	})
	if err != nil {
		return fmt.Errorf("watching namespaces: %w", err)
	}
	defer func() { _ = p.namespaces.RemoveEventHandler(nsReg) }()
	synced := []cache.InformerSynced{p.namespaces.HasSynced, nsReg.HasSynced}
	if p.configMaps != nil {
		onCM := func(obj any) {
			if m := objectMeta(obj); m != nil && m.GetName() == BundleConfigMapName {
				queue.Add(m.GetNamespace())
			}
		}
		cmReg, err := p.configMaps.AddEventHandler(cache.ResourceEventHandlerFuncs{
			UpdateFunc: func(_, obj any) { onCM(obj) },
			DeleteFunc: onCM,
		})
		if err != nil {
			return fmt.Errorf("watching ConfigMaps: %w", err)
		}
		defer func() { _ = p.configMaps.RemoveEventHandler(cmReg) }()
		synced = append(synced, p.configMaps.HasSynced, cmReg.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return ctx.Err()
	}
	p.logger.Info("publishing trust bundle", "configMap", BundleConfigMapName, "key", BundleConfigMapKey)

	var wg sync.WaitGroup
	for range p.workers {
		wg.Go(func() {
			for p.next(ctx, queue) {
			}
		})
	}
	<-ctx.Done()
	queue.ShutDown()
	wg.Wait()
	return nil
}

func (p *BundlePublisher) next(ctx context.Context, queue workqueue.TypedRateLimitingInterface[string]) bool {
	ns, shutdown := queue.Get()
	if shutdown {
		return false
	}
	defer queue.Done(ns)
	if err := p.Sync(ctx, ns); err != nil {
		p.logger.Warn("publishing trust bundle failed; will retry", "namespace", ns, "error", err)
		queue.AddRateLimited(ns)
		return true
	}
	queue.Forget(ns)
	return true
}

// Sync makes namespace's bundle ConfigMap current. It is idempotent: with
// the right content already in place it writes nothing. Namespaces that are
// unknown to the informer or terminating are skipped.
func (p *BundlePublisher) Sync(ctx context.Context, namespace string) error {
	obj, exists, err := p.namespaces.GetStore().GetByKey(namespace)
	if err != nil {
		return err
	}
	if !exists {
		return nil
	}
	if ns, ok := obj.(*corev1.Namespace); !ok || terminating(ns) {
		return nil
	}

	current, err := p.current(ctx, namespace)
	if err != nil {
		return err
	}
	cms := p.client.CoreV1().ConfigMaps(namespace)
	if current == nil {
		_, err := cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{
				Name:      BundleConfigMapName,
				Namespace: namespace,
				Labels:    map[string]string{"app.kubernetes.io/managed-by": "weft-control"},
			},
			Data: map[string]string{BundleConfigMapKey: p.bundle},
		}, metav1.CreateOptions{})
		switch {
		case err == nil:
			p.logger.Debug("created trust bundle ConfigMap", "namespace", namespace)
			return nil
		case ignorable(err):
			return nil
		case !apierrors.IsAlreadyExists(err):
			return fmt.Errorf("creating ConfigMap %s/%s: %w", namespace, BundleConfigMapName, err)
		}
		// Our cache is behind: read it from the API server and update.
		if current, err = cms.Get(ctx, BundleConfigMapName, metav1.GetOptions{}); err != nil {
			return fmt.Errorf("reading ConfigMap %s/%s: %w", namespace, BundleConfigMapName, err)
		}
	}
	if v, ok := current.Data[BundleConfigMapKey]; ok && v == p.bundle {
		return nil
	}
	updated := current.DeepCopy()
	if updated.Data == nil {
		updated.Data = map[string]string{}
	}
	updated.Data[BundleConfigMapKey] = p.bundle
	if _, err := cms.Update(ctx, updated, metav1.UpdateOptions{}); err != nil && !ignorable(err) {
		return fmt.Errorf("updating ConfigMap %s/%s: %w", namespace, BundleConfigMapName, err)
	}
	p.logger.Info("updated trust bundle ConfigMap", "namespace", namespace)
	return nil
}

// current returns the bundle ConfigMap, or nil if there is none.
func (p *BundlePublisher) current(ctx context.Context, namespace string) (*corev1.ConfigMap, error) {
	if p.configMaps != nil {
		obj, exists, err := p.configMaps.GetStore().GetByKey(namespace + "/" + BundleConfigMapName)
		if err != nil || !exists {
			return nil, err
		}
		cm, _ := obj.(*corev1.ConfigMap)
		return cm, nil
	}
	cm, err := p.client.CoreV1().ConfigMaps(namespace).Get(ctx, BundleConfigMapName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading ConfigMap %s/%s: %w", namespace, BundleConfigMapName, err)
	}
	return cm, nil
}

func terminating(ns *corev1.Namespace) bool {
	return ns.DeletionTimestamp != nil || ns.Status.Phase == corev1.NamespaceTerminating
}

// ignorable errors mean the namespace is going away: nothing to do.
func ignorable(err error) bool {
	return apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) ||
		(apierrors.IsNotFound(err) && !isConfigMapNotFound(err))
}

// isConfigMapNotFound tells a missing ConfigMap (retry) from a missing
// namespace (ignore).
func isConfigMapNotFound(err error) bool {
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		return false
	}
	d := se.Status().Details
	return d != nil && d.Kind == "configmaps"
}

func objectMeta(obj any) metav1.Object {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		utilruntime.HandleError(fmt.Errorf("unexpected object %T in bundle publisher: %w", obj, err))
		return nil
	}
	return m
}
