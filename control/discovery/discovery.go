// Package discovery watches the cluster with shared informers (Kubernetes,
// Istio security and networking, Gateway API) and exposes the current state as
// translation inputs, plus a signal whenever anything changed.
package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	istioinformers "istio.io/client-go/pkg/informers/externalversions"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/weft-mesh/weft/control/unsupported"
	"github.com/weft-mesh/weft/control/workload"
)

// Cluster is the informer-backed view of the cluster.
type Cluster struct {
	log     *slog.Logger
	kube    informers.SharedInformerFactory
	istio   istioinformers.SharedInformerFactory
	gateway gatewayinformers.SharedInformerFactory
	// dynamic watches the served kinds of unsupported.Kinds.
	dynamic dynamicinformer.DynamicSharedInformerFactory
	changed chan struct{}

	hasIstio, hasGateway bool
	// Traffic management (waypoints): each watched only when served.
	hasNetworking, hasHTTPRoute bool
	// GRPCRoutes, watched (to report them unsupported) when served.
	hasGRPCRoute bool
	// ReferenceGrants (cross-namespace backendRefs and certificateRefs),
	// watched when served.
	hasReferenceGrant bool
	// Istio Gateways (ingress gateway deployments), watched when served.
	hasIstioGateway bool
	// ServiceEntries (node agents and waypoints), watched when served.
	hasServiceEntry bool
	hasRequestAuthn bool
	hasEnvoyFilter  bool
	hasTelemetry    bool
	// unsupported are the served kinds Weft does not implement.
	unsupported []schema.GroupVersionResource
	pods        cache.SharedIndexInformer
	// nodes hold only names and labels (nodeLabelsOnly): pods' locality.
	nodes cache.SharedIndexInformer
}

// Clients are the API clients discovery needs.
type Clients struct {
	Kube    kubernetes.Interface
	Istio   istioclient.Interface
	Gateway gatewayclient.Interface
	Dynamic dynamic.Interface
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
		dynamic: dynamicinformer.NewDynamicSharedInformerFactory(c.Dynamic, 0),
		changed: make(chan struct{}, 1),
	}
	if err := d.discoverKinds(c.Kube); err != nil {
		return nil, err
	}
	for _, k := range unsupported.Kinds {
		ok, err := served(c.Kube, k.Resource)
		if err != nil {
			return nil, err
		}
		if ok {
			d.unsupported = append(d.unsupported, k.Resource)
		}
	}
	notify := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { d.signal() },
		UpdateFunc: func(any, any) { d.signal() },
		DeleteFunc: func(any) { d.signal() },
	}
	d.pods = d.kube.Core().V1().Pods().Informer()
	d.nodes = d.kube.Core().V1().Nodes().Informer()
	if err := d.nodes.SetTransform(nodeLabelsOnly); err != nil {
		return nil, err
	}
	for _, inf := range d.informers() {
		h := cache.ResourceEventHandler(notify)
		if inf == d.nodes {
			h = nodeLabelsChanged(notify)
		}
		if _, err := inf.AddEventHandler(h); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// nodeLabelsOnly keeps what the translation reads of a Node, its name and
// labels: a node's status (images, conditions) is large and changes at
// every heartbeat.
func nodeLabelsOnly(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil // a tombstone
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Labels: n.Labels,
	}}, nil
}

// nodeLabelsChanged signals on added and deleted nodes and on label
// changes only (which move its pods to another locality), not on the
// status updates every kubelet posts.
func nodeLabelsChanged(h cache.ResourceEventHandlerFuncs) cache.ResourceEventHandlerFuncs {
	h.UpdateFunc = func(oldObj, newObj any) {
		o, ok1 := oldObj.(*corev1.Node)
		n, ok2 := newObj.(*corev1.Node)
		if !ok1 || !ok2 || !maps.Equal(o.Labels, n.Labels) {
			h.AddFunc(newObj)
		}
	}
	return h
}

func (d *Cluster) informers() []cache.SharedIndexInformer {
	k := d.kube
	infs := []cache.SharedIndexInformer{
		k.Core().V1().Namespaces().Informer(), d.pods, k.Core().V1().Services().Informer(),
		k.Discovery().V1().EndpointSlices().Informer(), d.nodes,
	}
	if d.hasIstio {
		infs = append(infs, d.istio.Security().V1().AuthorizationPolicies().Informer(),
			d.istio.Security().V1().PeerAuthentications().Informer())
	}
	if d.hasGateway {
		infs = append(infs, d.gateway.Gateway().V1().Gateways().Informer(), d.gateway.Gateway().V1().GatewayClasses().Informer())
	}
	if d.hasGRPCRoute {
		infs = append(infs, d.gateway.Gateway().V1().GRPCRoutes().Informer())
	}
	if d.hasNetworking {
		infs = append(infs, d.istio.Networking().V1().VirtualServices().Informer(),
			d.istio.Networking().V1().DestinationRules().Informer())
	}
	if d.hasHTTPRoute {
		infs = append(infs, d.gateway.Gateway().V1().HTTPRoutes().Informer())
	}
	if d.hasReferenceGrant {
		infs = append(infs, d.gateway.Gateway().V1beta1().ReferenceGrants().Informer())
	}
	if d.hasIstioGateway {
		infs = append(infs, d.istio.Networking().V1().Gateways().Informer())
	}
	if d.hasServiceEntry {
		infs = append(infs, d.istio.Networking().V1().ServiceEntries().Informer())
	}
	if d.hasRequestAuthn {
		infs = append(infs, d.istio.Security().V1().RequestAuthentications().Informer())
	}
	if d.hasEnvoyFilter {
		infs = append(infs, d.istio.Networking().V1alpha3().EnvoyFilters().Informer())
	}
	if d.hasTelemetry {
		infs = append(infs, d.istio.Telemetry().V1().Telemetries().Informer())
	}
	for _, r := range d.unsupported {
		infs = append(infs, d.dynamic.ForResource(r).Informer())
	}
	return infs
}

// optionalKind is a kind watched only when the API server serves it (its
// CRD is installed); otherwise it counts as empty until the control plane
// restarts, and missing says so in a warning.
type optionalKind struct {
	has       *bool
	group     string
	resources []string // all of them served (version v1, or "<version>/<resource>")
	missing   string
}

func (d *Cluster) optionalKinds() []optionalKind {
	return []optionalKind{
		{&d.hasIstio, "security.istio.io", []string{"authorizationpolicies"},
			"security.istio.io CRDs not installed: AuthorizationPolicy and PeerAuthentication are ignored until the control plane restarts (install charts/base first)"},
		{&d.hasGateway, "gateway.networking.k8s.io", []string{"gateways", "gatewayclasses"},
			"Gateway API CRDs not installed: waypoints are ignored until the control plane restarts (install charts/base first)"},
		// Both kinds come with the same CRD bundle; be sure anyway.
		{&d.hasNetworking, "networking.istio.io", []string{"virtualservices", "destinationrules"},
			"networking.istio.io/v1 VirtualService and DestinationRule not served: they are ignored until the control plane restarts"},
		{&d.hasIstioGateway, "networking.istio.io", []string{"gateways"},
			"networking.istio.io/v1 Gateway not served: ingress gateways get no configuration until the control plane restarts"},
		{&d.hasRequestAuthn, "security.istio.io", []string{"requestauthentications"},
			"security.istio.io/v1 RequestAuthentication not served: RequestAuthentications are ignored until the control plane restarts"},
		{&d.hasServiceEntry, "networking.istio.io", []string{"serviceentries"},
			"networking.istio.io/v1 ServiceEntry not served: ServiceEntries are ignored until the control plane restarts"},
		{&d.hasHTTPRoute, "gateway.networking.k8s.io", []string{"httproutes"},
			"gateway.networking.k8s.io/v1 HTTPRoute not served: HTTPRoutes are ignored until the control plane restarts"},
		{&d.hasGRPCRoute, "gateway.networking.k8s.io", []string{"grpcroutes"},
			"gateway.networking.k8s.io/v1 GRPCRoute not served: GRPCRoutes get no status until the control plane restarts"},
		{&d.hasReferenceGrant, "gateway.networking.k8s.io", []string{"v1beta1/referencegrants"},
			"gateway.networking.k8s.io/v1beta1 ReferenceGrant not served: no cross-namespace backendRef or certificateRef is allowed until the control plane restarts"},
		{&d.hasEnvoyFilter, "networking.istio.io", []string{"v1alpha3/envoyfilters"},
			"networking.istio.io/v1alpha3 EnvoyFilter not served: EnvoyFilters are ignored until the control plane restarts"},
		{&d.hasTelemetry, "telemetry.istio.io", []string{"telemetries"},
			"telemetry.istio.io/v1 Telemetry not served: Telemetries are ignored until the control plane restarts"},
	}
}

// discoverKinds sets which optional kinds are served, warning about each
// that is not.
func (d *Cluster) discoverKinds(kube kubernetes.Interface) error {
	for _, k := range d.optionalKinds() {
		ok := true
		for _, r := range k.resources {
			version := "v1"
			if v, res, found := strings.Cut(r, "/"); found {
				version, r = v, res
			}
			var err error
			if ok, err = served(kube, schema.GroupVersionResource{Group: k.group, Version: version, Resource: r}); err != nil {
				return err
			}
			if !ok {
				break
			}
		}
		*k.has = ok
		if !ok {
			d.log.Warn(k.missing)
		}
	}
	return nil
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
	d.dynamic.Start(ctx.Done())
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
	in.Namespaces = listAll(&err, k.Core().V1().Namespaces().Lister())
	in.Pods = listAll(&err, k.Core().V1().Pods().Lister())
	in.Services = listAll(&err, k.Core().V1().Services().Lister())
	in.EndpointSlices = listAll(&err, k.Discovery().V1().EndpointSlices().Lister())
	in.Nodes = listAll(&err, k.Core().V1().Nodes().Lister())
	// A kind that is not served has no lister: asking for one would start
	// an informer on a resource that does not exist.
	if d.hasIstio {
		in.AuthorizationPolicies = listAll(&err, d.istio.Security().V1().AuthorizationPolicies().Lister())
		in.PeerAuthentications = listAll(&err, d.istio.Security().V1().PeerAuthentications().Lister())
	}
	if d.hasGateway {
		in.Gateways = listAll(&err, d.gateway.Gateway().V1().Gateways().Lister())
	}
	if d.hasServiceEntry {
		in.ServiceEntries = listAll(&err, d.istio.Networking().V1().ServiceEntries().Lister())
	}
	return in, err
}

// lister is an informer cache's lister of one kind.
type lister[T any] interface {
	List(selector labels.Selector) ([]T, error)
}

// listAll lists every object of l, or nothing once a list failed (*err,
// which keeps the first error).
func listAll[T any](err *error, l lister[T]) []T {
	if *err != nil {
		return nil
	}
	out, e := l.List(labels.Everything())
	*err = e
	return out
}

// TrafficInputs are the traffic-management kinds the waypoint translation
// reads besides workload.Inputs; a kind that is not served is empty.
type TrafficInputs struct {
	VirtualServices  []*networkingv1.VirtualService
	DestinationRules []*networkingv1.DestinationRule
	HTTPRoutes       []*gatewayv1.HTTPRoute
	// IstioGateways are networking.istio.io Gateways (ingress).
	IstioGateways []*networkingv1.Gateway
	// RequestAuthentications configure the waypoints' JWT validation.
	RequestAuthentications []*securityv1.RequestAuthentication
	// EnvoyFilters patch waypoints and ingress gateways (rate limiting).
	EnvoyFilters []*networkingv1alpha3.EnvoyFilter
	// Telemetries configure waypoints' and gateways' access logs and tracing.
	Telemetries []*telemetryv1.Telemetry
	// ReferenceGrants allow cross-namespace backendRefs and certificateRefs.
	ReferenceGrants []*gatewayv1beta1.ReferenceGrant
}

// TrafficInputs lists the current traffic-management state.
func (d *Cluster) TrafficInputs() (TrafficInputs, error) {
	var in TrafficInputs
	var err error
	if d.hasNetworking {
		in.VirtualServices = listAll(&err, d.istio.Networking().V1().VirtualServices().Lister())
		in.DestinationRules = listAll(&err, d.istio.Networking().V1().DestinationRules().Lister())
	}
	if d.hasHTTPRoute {
		in.HTTPRoutes = listAll(&err, d.gateway.Gateway().V1().HTTPRoutes().Lister())
	}
	if d.hasIstioGateway {
		in.IstioGateways = listAll(&err, d.istio.Networking().V1().Gateways().Lister())
	}
	if d.hasRequestAuthn {
		in.RequestAuthentications = listAll(&err, d.istio.Security().V1().RequestAuthentications().Lister())
	}
	if d.hasEnvoyFilter {
		in.EnvoyFilters = listAll(&err, d.istio.Networking().V1alpha3().EnvoyFilters().Lister())
	}
	if d.hasTelemetry {
		in.Telemetries = listAll(&err, d.istio.Telemetry().V1().Telemetries().Lister())
	}
	if d.hasReferenceGrant {
		in.ReferenceGrants = listAll(&err, d.gateway.Gateway().V1beta1().ReferenceGrants().Lister())
	}
	return in, err
}

// StatusOnly are the objects Weft reads only to report on them: Weft's
// GatewayClasses and kinds it does not implement.
type StatusOnly struct {
	GatewayClasses []*gatewayv1.GatewayClass
	GRPCRoutes     []*gatewayv1.GRPCRoute
	// Unsupported are the objects of the served kinds of unsupported.Kinds,
	// by resource.
	Unsupported map[schema.GroupVersionResource][]*unstructured.Unstructured
}

// StatusOnly lists the current objects Weft only reports on.
func (d *Cluster) StatusOnly() (StatusOnly, error) {
	var out StatusOnly
	var err error
	if d.hasGateway {
		out.GatewayClasses = listAll(&err, d.gateway.Gateway().V1().GatewayClasses().Lister())
	}
	if d.hasGRPCRoute {
		out.GRPCRoutes = listAll(&err, d.gateway.Gateway().V1().GRPCRoutes().Lister())
	}
	out.Unsupported = make(map[schema.GroupVersionResource][]*unstructured.Unstructured, len(d.unsupported))
	for _, r := range d.unsupported {
		objs := listAll(&err, d.dynamic.ForResource(r).Lister())
		for _, o := range objs {
			out.Unsupported[r] = append(out.Unsupported[r], o.(*unstructured.Unstructured))
		}
	}
	return out, err
}

// Gateways exposes the Gateway informer (the waypoint deployment
// controller follows it); nil when the Gateway API CRDs are not installed.
func (d *Cluster) Gateways() cache.SharedIndexInformer {
	if !d.hasGateway {
		return nil
	}
	return d.gateway.Gateway().V1().Gateways().Informer()
}

// ReferenceGrants exposes the ReferenceGrant informer (the ingress
// listeners' certificateRefs); nil when ReferenceGrant is not served.
func (d *Cluster) ReferenceGrants() cache.SharedIndexInformer {
	if !d.hasReferenceGrant {
		return nil
	}
	return d.gateway.Gateway().V1beta1().ReferenceGrants().Informer()
}

// Pods exposes the pod informer (add indexers before Start).
func (d *Cluster) Pods() cache.SharedIndexInformer { return d.pods }

// Namespaces exposes the namespace informer (the trust bundle publisher
// follows it).
func (d *Cluster) Namespaces() cache.SharedIndexInformer {
	return d.kube.Core().V1().Namespaces().Informer()
}
