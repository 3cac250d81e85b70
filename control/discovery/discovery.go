// Package discovery watches the cluster with shared informers (Kubernetes,
// Istio security and networking, Gateway API) and exposes the current state as
// translation inputs, plus a signal whenever anything changed.
package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	istioinformers "istio.io/client-go/pkg/informers/externalversions"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/weft-mesh/weft/control/workload"
)

// Cluster is the informer-backed view of the cluster.
type Cluster struct {
	log     *slog.Logger
	kube    informers.SharedInformerFactory
	istio   istioinformers.SharedInformerFactory
	gateway gatewayinformers.SharedInformerFactory
	changed chan struct{}

	hasIstio, hasGateway bool
	// Traffic management (waypoints): each watched only when served.
	hasNetworking, hasHTTPRoute bool
	// Istio Gateways (ingress gateway deployments), watched when served.
	hasIstioGateway bool
	// ServiceEntries (node agents and waypoints), watched when served.
	hasServiceEntry bool
	pods            cache.SharedIndexInformer
}

// Clients are the API clients discovery needs.
type Clients struct {
	Kube    kubernetes.Interface
	Istio   istioclient.Interface
	Gateway gatewayclient.Interface
}

// New sets up informers. Istio and Gateway API kinds are watched only when
// their CRDs are installed (charts/base); otherwise a warning says so and
// the kinds count as empty.
func New(log *slog.Logger, c Clients) (*Cluster, error) {
	d := &Cluster{
		log:     log,
		kube:    informers.NewSharedInformerFactory(c.Kube, 0),
		istio:   istioinformers.NewSharedInformerFactory(c.Istio, 0),
		gateway: gatewayinformers.NewSharedInformerFactory(c.Gateway, 0),
		changed: make(chan struct{}, 1),
	}
	var err error
	if d.hasIstio, err = served(c.Kube, schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "authorizationpolicies"}); err != nil {
		return nil, err
	}
	if d.hasGateway, err = served(c.Kube, schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gateways"}); err != nil {
		return nil, err
	}
	if d.hasNetworking, err = served(c.Kube, schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}); err != nil {
		return nil, err
	}
	if d.hasNetworking {
		// Both kinds come with the same CRD bundle; be sure anyway.
		if d.hasNetworking, err = served(c.Kube, schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "destinationrules"}); err != nil {
			return nil, err
		}
	}
	if d.hasIstioGateway, err = served(c.Kube, schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "gateways"}); err != nil {
		return nil, err
	}
	if d.hasServiceEntry, err = served(c.Kube, schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "serviceentries"}); err != nil {
		return nil, err
	}
	if d.hasHTTPRoute, err = served(c.Kube, schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}); err != nil {
		return nil, err
	}
	if !d.hasIstio {
		log.Warn("security.istio.io CRDs not installed: AuthorizationPolicy and PeerAuthentication are ignored until the control plane restarts (install charts/base first)")
	}
	if !d.hasGateway {
		log.Warn("Gateway API CRDs not installed: waypoints are ignored until the control plane restarts (install charts/base first)")
	}
	if !d.hasNetworking {
		log.Warn("networking.istio.io/v1 VirtualService and DestinationRule not served: they are ignored until the control plane restarts")
	}
	if !d.hasIstioGateway {
		log.Warn("networking.istio.io/v1 Gateway not served: ingress gateways get no configuration until the control plane restarts")
	}
	if !d.hasServiceEntry {
		log.Warn("networking.istio.io/v1 ServiceEntry not served: ServiceEntries are ignored until the control plane restarts")
	}
	if !d.hasHTTPRoute {
		log.Warn("gateway.networking.k8s.io/v1 HTTPRoute not served: HTTPRoutes are ignored until the control plane restarts")
	}

	notify := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { d.signal() },
		UpdateFunc: func(any, any) { d.signal() },
		DeleteFunc: func(any) { d.signal() },
	}
	d.pods = d.kube.Core().V1().Pods().Informer()
	for _, inf := range d.informers() {
		if _, err := inf.AddEventHandler(notify); err != nil {
			return nil, err
		}
	}
	return d, nil
}

func (d *Cluster) informers() []cache.SharedIndexInformer {
	k := d.kube
	infs := []cache.SharedIndexInformer{
		k.Core().V1().Namespaces().Informer(), d.pods, k.Core().V1().Services().Informer(),
		k.Discovery().V1().EndpointSlices().Informer(),
	}
	if d.hasIstio {
		infs = append(infs, d.istio.Security().V1().AuthorizationPolicies().Informer(),
			d.istio.Security().V1().PeerAuthentications().Informer())
	}
	if d.hasGateway {
		infs = append(infs, d.gateway.Gateway().V1().Gateways().Informer())
	}
	if d.hasNetworking {
		infs = append(infs, d.istio.Networking().V1().VirtualServices().Informer(),
			d.istio.Networking().V1().DestinationRules().Informer())
	}
	if d.hasHTTPRoute {
		infs = append(infs, d.gateway.Gateway().V1().HTTPRoutes().Informer())
	}
	if d.hasIstioGateway {
		infs = append(infs, d.istio.Networking().V1().Gateways().Informer())
	}
	if d.hasServiceEntry {
		infs = append(infs, d.istio.Networking().V1().ServiceEntries().Informer())
	}
	return infs
}

// served reports whether the API server serves the resource.
func served(kube kubernetes.Interface, gvr schema.GroupVersionResource) (bool, error) {
	list, err := kube.Discovery().ServerResourcesForGroupVersion(gvr.GroupVersion().String())
	if err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("discover %s: %w", gvr.GroupVersion(), err)
	}
	for _, r := range list.APIResources {
		if r.Name == gvr.Resource {
			return true, nil
		}
	}
	return false, nil
}

// Start runs the informers and waits for their caches.
func (d *Cluster) Start(ctx context.Context) error {
	d.kube.Start(ctx.Done())
	d.istio.Start(ctx.Done())
	d.gateway.Start(ctx.Done())
	syncCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var synced []cache.InformerSynced
	for _, inf := range d.informers() {
		synced = append(synced, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(syncCtx.Done(), synced...) {
		return fmt.Errorf("informer caches did not sync: %w", context.Cause(syncCtx))
	}
	return nil
}

// Changed delivers a (coalesced) signal after any watched object changed.
func (d *Cluster) Changed() <-chan struct{} { return d.changed }

func (d *Cluster) signal() {
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

// Inputs lists the current state for translation.
func (d *Cluster) Inputs() (workload.Inputs, error) {
	var in workload.Inputs
	var err error
	k := d.kube
	if in.Namespaces, err = k.Core().V1().Namespaces().Lister().List(labels.Everything()); err != nil {
		return in, err
	}
	if in.Pods, err = k.Core().V1().Pods().Lister().List(labels.Everything()); err != nil {
		return in, err
	}
	if in.Services, err = k.Core().V1().Services().Lister().List(labels.Everything()); err != nil {
		return in, err
	}
	if in.EndpointSlices, err = k.Discovery().V1().EndpointSlices().Lister().List(labels.Everything()); err != nil {
		return in, err
	}
	if d.hasIstio {
		if in.AuthorizationPolicies, err = d.istio.Security().V1().AuthorizationPolicies().Lister().List(labels.Everything()); err != nil {
			return in, err
		}
		if in.PeerAuthentications, err = d.istio.Security().V1().PeerAuthentications().Lister().List(labels.Everything()); err != nil {
			return in, err
		}
	}
	if d.hasGateway {
		if in.Gateways, err = d.gateway.Gateway().V1().Gateways().Lister().List(labels.Everything()); err != nil {
			return in, err
		}
	}
	if d.hasServiceEntry {
		if in.ServiceEntries, err = d.istio.Networking().V1().ServiceEntries().Lister().List(labels.Everything()); err != nil {
			return in, err
		}
	}
	return in, nil
}

// TrafficInputs are the traffic-management kinds the waypoint translation
// reads besides workload.Inputs; a kind that is not served is empty.
type TrafficInputs struct {
	VirtualServices  []*networkingv1.VirtualService
	DestinationRules []*networkingv1.DestinationRule
	HTTPRoutes       []*gatewayv1.HTTPRoute
	// IstioGateways are networking.istio.io Gateways (ingress).
	IstioGateways []*networkingv1.Gateway
}

// TrafficInputs lists the current traffic-management state.
func (d *Cluster) TrafficInputs() (TrafficInputs, error) {
	var in TrafficInputs
	var err error
	if d.hasNetworking {
		if in.VirtualServices, err = d.istio.Networking().V1().VirtualServices().Lister().List(labels.Everything()); err != nil {
			return in, err
		}
		if in.DestinationRules, err = d.istio.Networking().V1().DestinationRules().Lister().List(labels.Everything()); err != nil {
			return in, err
		}
	}
	if d.hasHTTPRoute {
		if in.HTTPRoutes, err = d.gateway.Gateway().V1().HTTPRoutes().Lister().List(labels.Everything()); err != nil {
			return in, err
		}
	}
	if d.hasIstioGateway {
		if in.IstioGateways, err = d.istio.Networking().V1().Gateways().Lister().List(labels.Everything()); err != nil {
			return in, err
		}
	}
	return in, nil
}

// Gateways exposes the Gateway informer (the waypoint deployment
// controller follows it); nil when the Gateway API CRDs are not installed.
func (d *Cluster) Gateways() cache.SharedIndexInformer {
	if !d.hasGateway {
		return nil
	}
	return d.gateway.Gateway().V1().Gateways().Informer()
}

// Pods exposes the pod informer (add indexers before Start).
func (d *Cluster) Pods() cache.SharedIndexInformer { return d.pods }

// Namespaces exposes the namespace informer (the trust bundle publisher
// follows it).
func (d *Cluster) Namespaces() cache.SharedIndexInformer {
	return d.kube.Core().V1().Namespaces().Informer()
}
