package dashboard

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	appslisters "k8s.io/client-go/listers/apps/v1"
	"k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewaylisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"

	"github.com/weft-mesh/weft/control/waypoint/deploy"
)

// owned is metadata controlled by the object of kind named name/uid.
func owned(ns, name, uid string, labels map[string]string, apiVersion, kind, owner, ownerUID string) metav1.ObjectMeta {
	m := metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid), Labels: labels}
	if kind != "" {
		m.OwnerReferences = []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: owner, UID: types.UID(ownerUID), Controller: new(true)}}
	}
	return m
}

// waypointLabels are what control/waypoint/deploy puts on a waypoint's
// objects, and what a tenant copies.
var waypointLabels = map[string]string{deploy.LabelAppName: deploy.AppName, deploy.LabelManagedBy: deploy.ManagedBy, deploy.LabelGatewayName: "waypoint"}

// meshOwners: waypoint Gateway default/waypoint with the Deployment and
// ReplicaSet weft-control made, an ingress Gateway whose Deployment
// someone else made, and a tenant's own Deployment and ReplicaSet wearing
// the waypoint labels.
func meshOwners() Owners {
	idx := func() cache.Indexer {
		return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	gws, deps, rss := idx(), idx(), idx()
	for _, gw := range []*gatewayv1.Gateway{
		{ObjectMeta: owned("default", "waypoint", "gw-uid", nil, "", "", "", ""), Spec: gatewayv1.GatewaySpec{GatewayClassName: deploy.ClassName}},
		{ObjectMeta: owned("default", "ingress", "ingress-uid", nil, "", "", "", ""), Spec: gatewayv1.GatewaySpec{GatewayClassName: "weft"}},
	} {
		gws.Add(gw)
	}
	gwRef := gatewayv1.GroupVersion.String()
	for _, d := range []*appsv1.Deployment{
		{ObjectMeta: owned("default", "waypoint", "dep-uid", waypointLabels, gwRef, "Gateway", "waypoint", "gw-uid")},
		{ObjectMeta: owned("default", "ingress", "ingress-dep-uid", waypointLabels, gwRef, "Gateway", "ingress", "ingress-uid")},
		{ObjectMeta: owned("default", "renamed", "renamed-dep-uid", waypointLabels, gwRef, "Gateway", "waypoint", "gw-uid")},
		{ObjectMeta: owned("default", "tenant", "tenant-dep-uid", waypointLabels, "", "", "", "")},
	} {
		deps.Add(d)
	}
	for _, rs := range []*appsv1.ReplicaSet{
		{ObjectMeta: owned("default", "waypoint-5d8f", "rs-uid", waypointLabels, "apps/v1", "Deployment", "waypoint", "dep-uid")},
		{ObjectMeta: owned("default", "ingress-77aa", "ingress-rs-uid", waypointLabels, "apps/v1", "Deployment", "ingress", "ingress-dep-uid")},
		{ObjectMeta: owned("default", "renamed-1", "renamed-rs-uid", waypointLabels, "apps/v1", "Deployment", "renamed", "renamed-dep-uid")},
		{ObjectMeta: owned("default", "tenant-1", "tenant-rs-uid", waypointLabels, "apps/v1", "Deployment", "tenant", "tenant-dep-uid")},
		{ObjectMeta: owned("default", "stale-dep-ref", "stale-rs-uid", waypointLabels, "apps/v1", "Deployment", "waypoint", "old-dep-uid")},
	} {
		rss.Add(rs)
	}
	return Owners{ReplicaSets: appslisters.NewReplicaSetLister(rss), Deployments: appslisters.NewDeploymentLister(deps),
		Gateways: gatewaylisters.NewGatewayLister(gws),
		Served: func() map[string]map[string]bool {
			return map[string]map[string]bool{"default/waypoint": {"shop": true}, "default/ingress": {"bank": true}}
		}}
}

// TestTargetsByOwnership is the attack of issue #13 M3 on the scrape list:
// pods that carry the waypoint labels (or the node agents' service account
// name) but are not owned by what weft-control made are never scraped.
func TestTargetsByOwnership(t *testing.T) {
	pod := func(m metav1.ObjectMeta, sa, ip string, phase corev1.PodPhase) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: m, Spec: corev1.PodSpec{ServiceAccountName: sa, NodeName: "node-0"},
			Status: corev1.PodStatus{Phase: phase, PodIP: ip}}
	}
	ds := func(ns, name string) metav1.ObjectMeta {
		return owned(ns, name, name+"-uid", nil, "apps/v1", "DaemonSet", "weft-node-agent", "ds-uid")
	}
	rs := func(name, rs, uid string) metav1.ObjectMeta {
		return owned("default", name, name+"-uid", waypointLabels, "apps/v1", "ReplicaSet", rs, uid)
	}
	pods := []*corev1.Pod{
		pod(ds("weft-system", "agent-1"), "weft-node-agent", "10.0.0.1", corev1.PodRunning),
		pod(ds("weft-system", "agent-pending"), "weft-node-agent", "", corev1.PodPending),
		pod(owned("weft-system", "agent-bare", "u", nil, "", "", "", ""), "weft-node-agent", "10.0.0.2", corev1.PodRunning),
		pod(ds("default", "agent-impostor"), "weft-node-agent", "10.1.0.9", corev1.PodRunning),
		pod(rs("waypoint-1", "waypoint-5d8f", "rs-uid"), "waypoint", "fd00::5", corev1.PodRunning),
		pod(owned("default", "labels-only", "u", waypointLabels, "", "", "", ""), "waypoint", "10.1.0.8", corev1.PodRunning),
		pod(rs("wrong-rs-uid", "waypoint-5d8f", "made-up-uid"), "waypoint", "10.1.0.10", corev1.PodRunning),
		pod(rs("no-such-rs", "waypoint-0000", "rs-uid"), "waypoint", "10.1.0.11", corev1.PodRunning),
		pod(rs("tenant-deployment", "tenant-1", "tenant-rs-uid"), "waypoint", "10.1.0.12", corev1.PodRunning),
		pod(rs("ingress-class", "ingress-77aa", "ingress-rs-uid"), "ingress", "10.1.0.13", corev1.PodRunning),
		pod(rs("deployment-not-named-like-gateway", "renamed-1", "renamed-rs-uid"), "waypoint", "10.1.0.14", corev1.PodRunning),
		pod(rs("stale-deployment-uid", "stale-dep-ref", "stale-rs-uid"), "waypoint", "10.1.0.15", corev1.PodRunning),
		pod(owned("default", "productpage", "u", nil, "", "", "", ""), "bookinfo-productpage", "10.1.0.7", corev1.PodRunning),
	}
	want := []Target{
		{Kind: KindNodeAgent, Namespace: "weft-system", Pod: "agent-1", Node: "node-0", URL: "http://10.0.0.1:15020/metrics"},
		{Kind: KindWaypoint, Namespace: "default", Pod: "waypoint-1", Node: "node-0", Workload: "waypoint", URL: "http://[fd00::5]:15020/metrics",
			Speaks: map[string]bool{"default": true, "shop": true}},
	}
	check := func(name string, got, want []Target) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: targets %+v, want %+v", name, got, want)
		}
		for i := range want {
			if !reflect.DeepEqual(got[i], want[i]) {
				t.Errorf("%s: target %d = %+v, want %+v", name, i, got[i], want[i])
			}
		}
	}
	check("mesh", Targets(pods, "weft-system", "weft-node-agent", meshOwners()), want)
	check("no Gateway API", Targets(pods, "weft-system", "weft-node-agent", Owners{}), want[:1])
}

// memoryProxies answers scrapes from memory by host ("<pod IP>:15020"),
// recording which hosts were asked: nothing is dialled.
type memoryProxies struct {
	mu      sync.Mutex
	metrics map[string]string
	asked   map[string]bool
}

func (m *memoryProxies) RoundTrip(r *http.Request) (*http.Response, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.asked[r.URL.Host] = true
	body, ok := m.metrics[r.URL.Host]
	if !ok {
		return nil, fmt.Errorf("no proxy at %s", r.URL.Host)
	}
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Header: http.Header{},
		Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
}

// TestForgedWaypointEdgesNeverAppear: a tenant's pod labelled like a
// waypoint serves metrics that invent an edge; the dashboard never scrapes
// it, so the edge never reaches the graph, while the real waypoint's does.
func TestForgedWaypointEdgesNeverAppear(t *testing.T) {
	const forgedEdge = "default/attacker->bank/vault"
	edge := func(src, dst string) string {
		return fmt.Sprintf("# TYPE istio_requests_total counter\nistio_requests_total{reporter=\"waypoint\",response_code=\"200\","+
			"connection_security_policy=\"mutual_tls\",source_workload_namespace=\"default\",source_workload=%q,"+
			"destination_workload_namespace=%q,destination_workload=%q} 7\n", src, strings.Split(dst, "/")[0], strings.Split(dst, "/")[1])
	}
	proxies := &memoryProxies{asked: map[string]bool{}, metrics: map[string]string{
		"10.1.0.5:15020": edge("productpage-v1", "default/reviews-v1"),
		"10.1.0.8:15020": edge("attacker", "bank/vault"),
	}}
	running := func(m metav1.ObjectMeta, ip string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: m, Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip}}
	}
	pods := []*corev1.Pod{
		running(owned("default", "waypoint-1", "p1", waypointLabels, "apps/v1", "ReplicaSet", "waypoint-5d8f", "rs-uid"), "10.1.0.5"),
		running(owned("default", "forged", "p2", waypointLabels, "", "", "", ""), "10.1.0.8"),
	}
	owners := meshOwners()
	s := &Scraper{Targets: func() []Target { return Targets(pods, "weft-system", "weft-node-agent", owners) },
		Client: &http.Client{Transport: proxies}, Interval: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	g := s.Graph(ctx, 10*time.Second, 0)
	var ids []string
	for _, e := range g.Edges {
		ids = append(ids, e.ID)
	}
	if slices.Contains(ids, forgedEdge) {
		t.Errorf("the forged pod's edge %s is in the graph: %v", forgedEdge, ids)
	}
	if !slices.Contains(ids, "default/productpage-v1->default/reviews-v1") {
		t.Errorf("the real waypoint's edge is missing: %v", ids)
	}
	proxies.mu.Lock()
	defer proxies.mu.Unlock()
	if proxies.asked["10.1.0.8:15020"] {
		t.Error("the forged pod was scraped")
	}
}
