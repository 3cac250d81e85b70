package server

import (
	"context"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	gatewaylisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"

	"github.com/weft-mesh/weft/control/ca"
	"github.com/weft-mesh/weft/control/dashboard"
	"github.com/weft-mesh/weft/control/discovery"
	"github.com/weft-mesh/weft/control/waypoint/deploy"
)

// dashboardRoutes adds the live mesh page (/dashboard) to the monitoring
// server, scraping the proxies that the cluster-wide pod informer knows,
// or nothing when the dashboard is off.
func dashboardRoutes(ctx context.Context, o Options, kube kubernetes.Interface, cluster *discovery.Cluster,
	served func() map[string]map[string]bool) func(*http.ServeMux) {
	if !o.Dashboard {
		return func(*http.ServeMux) {}
	}
	agents, _ := ca.ParseServiceAccountRef(o.NodeAgentServiceAccount) // validated by Run
	owners := waypointOwners(ctx, kube, cluster)
	owners.Served = served
	s := &dashboard.Scraper{Log: o.Log.With("component", "dashboard"), Targets: func() []dashboard.Target {
		var pods []*corev1.Pod
		for _, obj := range cluster.Pods().GetIndexer().List() {
			if p, ok := obj.(*corev1.Pod); ok {
				pods = append(pods, p)
			}
		}
		return dashboard.Targets(pods, agents.Namespace, agents.Name, owners)
	}}
	go s.Run(ctx)
	return func(mux *http.ServeMux) { dashboard.Register(mux, s) }
}

// waypointOwners lists the objects between a waypoint pod and its Gateway:
// ReplicaSets and Deployments carrying the label every waypoint object has
// (app.kubernetes.io/name=weft-waypoint, so the caches stay small; the
// label only narrows the watch, dashboard.Targets checks the ownership by
// UID) and the cluster's Gateways. The informers run until ctx ends.
func waypointOwners(ctx context.Context, kube kubernetes.Interface, cluster *discovery.Cluster) dashboard.Owners {
	gateways := cluster.Gateways()
	if gateways == nil {
		return dashboard.Owners{} // no Gateway API: no waypoints
	}
	factory := informers.NewSharedInformerFactoryWithOptions(kube, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = deploy.LabelAppName + "=" + deploy.AppName }))
	owners := dashboard.Owners{
		ReplicaSets: factory.Apps().V1().ReplicaSets().Lister(),
		Deployments: factory.Apps().V1().Deployments().Lister(),
		Gateways:    gatewaylisters.NewGatewayLister(gateways.GetIndexer()),
	}
	factory.Start(ctx.Done())
	return owners
}
