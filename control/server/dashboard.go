package server

import (
	"context"
	"net/http"

	corev1 "k8s.io/api/core/v1"

	"github.com/weft-mesh/weft/control/ca"
	"github.com/weft-mesh/weft/control/dashboard"
	"github.com/weft-mesh/weft/control/discovery"
)

// dashboardRoutes adds the live mesh page (/dashboard) to the monitoring
// server, scraping the proxies that the cluster-wide pod informer knows,
// or nothing when the dashboard is off.
func dashboardRoutes(ctx context.Context, o Options, cluster *discovery.Cluster) func(*http.ServeMux) {
	if !o.Dashboard {
		return func(*http.ServeMux) {}
	}
	agents, _ := ca.ParseServiceAccountRef(o.NodeAgentServiceAccount) // validated by Run
	s := &dashboard.Scraper{Log: o.Log.With("component", "dashboard"), Targets: func() []dashboard.Target {
		var pods []*corev1.Pod
		for _, obj := range cluster.Pods().GetIndexer().List() {
			if p, ok := obj.(*corev1.Pod); ok {
				pods = append(pods, p)
			}
		}
		return dashboard.Targets(pods, agents.Namespace, agents.Name)
	}}
	go s.Run(ctx)
	return func(mux *http.ServeMux) { dashboard.Register(mux, s) }
}
