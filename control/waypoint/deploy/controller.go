package deploy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
)

// Controller reconciles waypoint Gateways. Run it on the leader only.
type Controller struct {
	Kube    kubernetes.Interface
	Gateway gatewayclient.Interface
	// Gateways is the shared Gateway informer (control/discovery), started
	// by its owner.
	Gateways cache.SharedIndexInformer
	// ReferenceGrants is the shared ReferenceGrant informer
	// (control/discovery); nil when the kind is not served (then no
	// cross-namespace certificateRef resolves).
	ReferenceGrants cache.SharedIndexInformer
	Config          Config
	Log             *slog.Logger
	// Workers reconciling in parallel (default 2).
	Workers int

	deployments, services cache.Indexer
	// httpRoutes are all HTTPRoutes, for the ingress listeners'
	// attachedRoutes; nil outside Run (then listed from the API).
	httpRoutes cache.Indexer
	// grants are all ReferenceGrants, for the ingress listeners'
	// certificateRefs; nil outside Run (then listed from the API).
	grants  cache.Indexer
	requeue func(key string, after time.Duration) // nil outside Run
}

// watchHTTPRoutes watches HTTPRoutes: a route's parent Gateways (before
// and after a change) count it in their listeners' attachedRoutes; and
// ReferenceGrants, which decide whether ingress listeners' certificateRefs
// resolve (the shared informer, started by its owner; stop removes the
// handler). The route informer is started with the factory returned.
func (c *Controller) watchHTTPRoutes(queue workqueue.TypedRateLimitingInterface[string]) (gatewayinformers.SharedInformerFactory, []cache.InformerSynced, func(), error) {
	routeFactory := gatewayinformers.NewSharedInformerFactory(c.Gateway, 0)
	hrInf := routeFactory.Gateway().V1().HTTPRoutes().Informer()
	c.httpRoutes = hrInf.GetIndexer()
	enqueueParents := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if hr, ok := obj.(*gatewayv1.HTTPRoute); ok {
			for _, pr := range hr.Spec.ParentRefs {
				if (pr.Group == nil || *pr.Group == gatewayv1.GroupName) && (pr.Kind == nil || *pr.Kind == "Gateway") {
					queue.Add(string(ptr.Deref(pr.Namespace, gatewayv1.Namespace(hr.Namespace))) + "/" + string(pr.Name))
				}
			}
		}
	}
	if _, err := hrInf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueueParents,
		UpdateFunc: func(old, obj any) { enqueueParents(old); enqueueParents(obj) }, DeleteFunc: enqueueParents}); err != nil {
		return nil, nil, nil, err
	}
	synced := []cache.InformerSynced{hrInf.HasSynced}
	if c.ReferenceGrants == nil {
		c.grants = cache.NewIndexer(cache.MetaNamespaceKeyFunc, nil) // none
		return routeFactory, synced, func() {}, nil
	}
	// A ReferenceGrant may allow or refuse any ingress Gateway's
	// certificateRefs: look at them all again (they are few).
	c.grants = c.ReferenceGrants.GetIndexer()
	enqueueIngress := func(any) {
		for _, o := range c.Gateways.GetStore().List() {
			if gw, ok := o.(*gatewayv1.Gateway); ok && IsIngress(gw) {
				queue.Add(gw.Namespace + "/" + gw.Name)
			}
		}
	}
	reg, err := c.ReferenceGrants.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueueIngress,
		UpdateFunc: func(_, obj any) { enqueueIngress(obj) }, DeleteFunc: enqueueIngress})
	if err != nil {
		return nil, nil, nil, err
	}
	stop := func() { _ = c.ReferenceGrants.RemoveEventHandler(reg) }
	return routeFactory, append(synced, c.ReferenceGrants.HasSynced, reg.HasSynced), stop, nil
}

// Run reconciles until ctx ends. Deployments and Services are watched with
// an informer of its own, limited to the objects Weft made for waypoints
// and ingress gateways (label app.kubernetes.io/managed-by=weft-control),
// started and stopped with it.
func (c *Controller) Run(ctx context.Context) error {
	if c.Gateways == nil {
		return errors.New("no Gateway informer (Gateway API CRDs not installed)")
	}
	if c.Workers <= 0 {
		c.Workers = 2
	}
	queue := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "waypoint-deploy"})
	defer queue.ShutDown()

	factory := informers.NewSharedInformerFactoryWithOptions(c.Kube, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = LabelManagedBy + "=" + ManagedBy }))
	depInf := factory.Apps().V1().Deployments().Informer()
	svcInf := factory.Core().V1().Services().Informer()
	c.deployments, c.services = depInf.GetIndexer(), svcInf.GetIndexer()
	c.requeue = queue.AddAfter

	reg, err := c.watchGateways(queue)
	if err != nil {
		return err
	}
	defer func() { _ = c.Gateways.RemoveEventHandler(reg) }()
	enqueueOwner := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if m, ok := obj.(metav1.Object); ok && m.GetLabels()[LabelGatewayName] != "" {
			queue.Add(m.GetNamespace() + "/" + m.GetLabels()[LabelGatewayName])
		}
	}
	owned := cache.ResourceEventHandlerFuncs{AddFunc: enqueueOwner, UpdateFunc: func(_, o any) { enqueueOwner(o) }, DeleteFunc: enqueueOwner}
	for _, inf := range []cache.SharedIndexInformer{depInf, svcInf} {
		if _, err := inf.AddEventHandler(owned); err != nil {
			return err
		}
	}
	routeFactory, routesSynced, stopGrants, err := c.watchHTTPRoutes(queue)
	if err != nil {
		return err
	}
	defer stopGrants()
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	routeFactory.Start(ctx.Done())
	defer routeFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), append([]cache.InformerSynced{c.Gateways.HasSynced, reg.HasSynced, depInf.HasSynced, svcInf.HasSynced}, routesSynced...)...) {
		return ctx.Err()
	}
	c.Log.Info("waypoint deployment controller started", "image", c.Config.Image, "tracingEndpoint", c.Config.TracingEndpoint)

	var wg sync.WaitGroup
	for range c.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c.next(ctx, queue) {
			}
		}()
	}
	<-ctx.Done()
	queue.ShutDown()
	wg.Wait()
	return nil
}

// watchGateways queues the Gateways the controller handles when they
// change, and deployed ingress Gateways when they are deleted.
func (c *Controller) watchGateways(queue workqueue.TypedRateLimitingInterface[string]) (cache.ResourceEventHandlerRegistration, error) {
	enqueueGateway := func(obj any) {
		if gw, ok := obj.(*gatewayv1.Gateway); ok && (IsWaypoint(gw) || IsIngress(gw)) {
			queue.Add(gw.Namespace + "/" + gw.Name)
		}
	}
	return c.Gateways.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueueGateway,
		UpdateFunc: func(_, obj any) { enqueueGateway(obj) },
		// Deleted: the garbage collector removes what it owned; a deployed
		// gateway's RoleBindings in other namespaces are pruned.
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if gw, ok := obj.(*gatewayv1.Gateway); ok && Deployed(gw) {
				queue.Add(gw.Namespace + "/" + gw.Name)
			}
		},
	})
}

func (c *Controller) next(ctx context.Context, q workqueue.TypedRateLimitingInterface[string]) bool {
	key, quit := q.Get()
	if quit {
		return false
	}
	defer q.Done(key)
	if err := c.Reconcile(ctx, key); err != nil {
		if ctx.Err() != nil {
			return false
		}
		if apierrors.IsConflict(err) {
			c.Log.Debug("waypoint reconcile conflict, retrying", "gateway", key, "err", err)
		} else {
			c.Log.Warn("waypoint reconcile failed, retrying", "gateway", key, "err", err)
		}
		q.AddRateLimited(key)
		return true
	}
	q.Forget(key)
	return true
}

// Reconcile brings one Gateway's objects and status up to date.
func (c *Controller) Reconcile(ctx context.Context, key string) error {
	obj, exists, err := c.Gateways.GetIndexer().GetByKey(key)
	if err != nil {
		return err
	}
	if !exists {
		ns, name, _ := strings.Cut(key, "/")
		return c.pruneBindings(ctx, ns, name, nil)
	}
	gw := obj.(*gatewayv1.Gateway)
	if IsIngress(gw) { // ingress.go
		after, err := c.reconcileIngress(ctx, gw)
		if after > 0 && c.requeue != nil {
			c.requeue(key, after)
		}
		return err
	}
	if !IsWaypoint(gw) {
		return nil
	}
	v := Validate(gw)
	dep, svc := c.observed(gw)
	var applyErr error
	if v.Accepted {
		dep, svc, applyErr = c.apply(ctx, gw, Desired(c.Config, gw, v.Replicas))
	}
	st := Status(gw, v, dep, svc, applyErr, time.Now())
	if !StatusEqual(gw.Status, st) {
		updated := gw.DeepCopy()
		updated.Status = st
		if _, err := c.Gateway.GatewayV1().Gateways(gw.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
			if apierrors.IsNotFound(err) {
				return nil
			}
			return errors.Join(applyErr, fmt.Errorf("gateway status: %w", err))
		}
		c.Log.Debug("waypoint gateway status", "gateway", key, "accepted", v.Accepted, "addresses", len(st.Addresses))
	}
	return applyErr
}

// refuseAdoption fails when a ServiceAccount, Deployment or Service named
// like the waypoint (or deployed gateway, ObjectName) exists and is not
// controlled by this Gateway, or one of its RoleBindings (objs) exists and
// was not made for it (ownsBinding). Applying onto it would adopt what
// someone else made: a tenant's Deployment keeps its own containers and
// volumes next to the waypoint's, and they would run with the waypoint's
// identity; a tenant's RoleBinding would grant other subjects. The
// Deployment and Service this Gateway controls are in the informers, so a
// steady waypoint costs no API call; otherwise each is read once.
func (c *Controller) refuseAdoption(ctx context.Context, gw *gatewayv1.Gateway, objs Objects) error {
	if err := c.refuseBindings(ctx, gw, objs); err != nil {
		return err
	}
	dep, svc := c.observed(gw)
	if dep != nil && svc != nil && controlledBy(dep, gw) && controlledBy(svc, gw) {
		return nil
	}
	ns, name := gw.Namespace, ObjectName(gw)
	for _, o := range []struct {
		kind string
		get  func() (metav1.Object, error)
	}{
		{"ServiceAccount", func() (metav1.Object, error) {
			return c.Kube.CoreV1().ServiceAccounts(ns).Get(ctx, name, metav1.GetOptions{})
		}},
		{"Deployment", func() (metav1.Object, error) {
			return c.Kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		}},
		{"Service", func() (metav1.Object, error) { return c.Kube.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{}) }},
	} {
		obj, err := o.get()
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return fmt.Errorf("read %s %s/%s: %w", o.kind, ns, name, err)
		case !controlledBy(obj, gw):
			return fmt.Errorf("%s %s/%s exists and is not this Gateway's: not adopted; delete it or name the Gateway differently", o.kind, ns, name)
		}
	}
	return nil
}

// refuseBindings fails when a RoleBinding of objs exists and was not
// made for gw.
func (c *Controller) refuseBindings(ctx context.Context, gw *gatewayv1.Gateway, objs Objects) error {
	for _, rb := range objs.RoleBindings {
		obj, err := c.Kube.RbacV1().RoleBindings(*rb.Namespace).Get(ctx, *rb.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return fmt.Errorf("read RoleBinding %s/%s: %w", *rb.Namespace, *rb.Name, err)
		case !ownsBinding(obj, gw):
			return fmt.Errorf("RoleBinding %s/%s exists and is not this Gateway's: not adopted; delete it or name the Gateway differently", *rb.Namespace, *rb.Name)
		}
	}
	return nil
}

// controlledBy reports whether obj has gw as its controller.
func controlledBy(obj metav1.Object, gw *gatewayv1.Gateway) bool {
	ref := metav1.GetControllerOf(obj)
	return ref != nil && ref.UID == gw.UID
}

// observed reads the waypoint's Deployment and Service from the informers.
func (c *Controller) observed(gw *gatewayv1.Gateway) (*appsv1.Deployment, *corev1.Service) {
	var dep *appsv1.Deployment
	var svc *corev1.Service
	key := gw.Namespace + "/" + ObjectName(gw)
	if c.deployments == nil { // outside Run
		return nil, nil
	}
	if o, ok, _ := c.deployments.GetByKey(key); ok {
		dep = o.(*appsv1.Deployment)
	}
	if o, ok, _ := c.services.GetByKey(key); ok {
		svc = o.(*corev1.Service)
	}
	return dep, svc
}

// apply server-side applies the desired objects objs of gw. Force: Weft
// owns these fields, a conflicting manager (kubectl edit) is overridden.
// But never on objects this Gateway does not control (see refuseAdoption).
func (c *Controller) apply(ctx context.Context, gw *gatewayv1.Gateway, objs Objects) (*appsv1.Deployment, *corev1.Service, error) {
	if err := c.refuseAdoption(ctx, gw, objs); err != nil {
		return nil, nil, err
	}
	opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
	if _, err := c.Kube.CoreV1().ServiceAccounts(gw.Namespace).Apply(ctx, objs.ServiceAccount, opts); err != nil {
		return nil, nil, fmt.Errorf("apply ServiceAccount: %w", err)
	}
	for _, rb := range objs.RoleBindings {
		if _, err := c.Kube.RbacV1().RoleBindings(*rb.Namespace).Apply(ctx, rb, opts); err != nil {
			return nil, nil, fmt.Errorf("apply RoleBinding %s/%s: %w", *rb.Namespace, *rb.Name, err)
		}
	}
	dep, err := c.Kube.AppsV1().Deployments(gw.Namespace).Apply(ctx, objs.Deployment, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("apply Deployment: %w", err)
	}
	svc, err := c.Kube.CoreV1().Services(gw.Namespace).Apply(ctx, objs.Service, opts)
	if err != nil {
		return dep, nil, fmt.Errorf("apply Service: %w", err)
	}
	return dep, svc, nil
}
