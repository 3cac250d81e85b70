package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/weft-mesh/weft/control/ca"
	"github.com/weft-mesh/weft/control/dashboard"
	"github.com/weft-mesh/weft/control/server/access"
	"github.com/weft-mesh/weft/control/xds"
)

// Tokens the fake API server knows, for the CA's audience.
const (
	tenantToken = "tenant-a-token-0123456789"
	systemToken = "weft-system-token-0123456789"
)

// tokenReviews is a fake clientset whose TokenReviews accept the tokens
// above (service accounts tenant-a/default and weft-system/weft-control).
func tokenReviews() (*fake.Clientset, *atomic.Int32) {
	users := map[string]string{
		tenantToken: "system:serviceaccount:tenant-a:default",
		systemToken: "system:serviceaccount:weft-system:weft-control",
	}
	var reviews atomic.Int32
	client := fake.NewClientset()
	client.PrependReactor("create", "tokenreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		reviews.Add(1)
		tr := action.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview).DeepCopy()
		user, ok := users[tr.Spec.Token]
		tr.Status = authenticationv1.TokenReviewStatus{Authenticated: ok, Audiences: tr.Spec.Audiences,
			User: authenticationv1.UserInfo{Username: user}}
		if !ok {
			tr.Status.Error = "invalid bearer token"
		}
		return true, tr, nil
	})
	return client, &reviews
}

// fakeClients is the xDS server's client list.
type fakeClients []xds.ClientStatus

func (f fakeClients) Clients() []xds.ClientStatus { return f }

// proxies serves each proxy's metrics on loopback and counts the scrapes.
type proxies struct {
	scrapes atomic.Int32
	urls    map[string]string // pod -> metrics URL
}

func newProxies(t *testing.T, metrics map[string]string) *proxies {
	p := &proxies{urls: map[string]string{}}
	for pod, body := range metrics {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			p.scrapes.Add(1)
			io.WriteString(w, body)
		}))
		t.Cleanup(srv.Close)
		p.urls[pod] = srv.URL + dashboard.MetricsPath
	}
	return p
}

// targets: the node agent and tenant-b's waypoint.
func (p *proxies) targets() []dashboard.Target {
	return []dashboard.Target{
		{Kind: dashboard.KindNodeAgent, Namespace: "weft-system", Pod: "agent-0", URL: p.urls["agent-0"]},
		{Kind: dashboard.KindWaypoint, Namespace: "tenant-b", Pod: "waypoint-0", Workload: "waypoint", URL: p.urls["waypoint-0"]},
	}
}

// tcpEdges is exposition text of a destination reporter's connections
// src -> dst ("ns/workload").
func tcpEdges(edges ...[2]string) string {
	var b strings.Builder
	b.WriteString("# TYPE istio_tcp_connections_opened_total counter\n")
	for _, e := range edges {
		src, dst := strings.Split(e[0], "/"), strings.Split(e[1], "/")
		fmt.Fprintf(&b, "istio_tcp_connections_opened_total{reporter=\"destination\",connection_security_policy=\"mutual_tls\","+
			"source_workload_namespace=%q,source_workload=%q,destination_workload_namespace=%q,destination_workload=%q} 5\n",
			src[0], src[1], dst[0], dst[1])
	}
	return b.String()
}

// monitoring is weft-control's monitoring handler over a fake mesh: three
// xDS clients (the node agent and a waypoint of each tenant) and a node
// agent reporting edges inside and across tenant-a and tenant-b.
func monitoring(t *testing.T, p *proxies) http.Handler {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := &dashboard.Scraper{Targets: p.targets, Interval: 10 * time.Millisecond}
	go s.Run(ctx)
	kube, _ := tokenReviews()
	guard := access.NewGuard(ca.NewTokenReviewAuthenticator(kube, ca.TokenReviewOptions{}), "weft-system", openPaths, nil)
	sz := &syncz{pod: "weft-control-0"}
	sz.setClients(fakeClients{
		{Node: "node-agent~node-0", Namespace: "weft-system"},
		{Node: "waypoint~tenant-a/waypoint~waypoint-0", Namespace: "tenant-a"},
		{Node: "waypoint~tenant-b/waypoint~waypoint-0", Namespace: "tenant-b"},
	})
	ready := &readiness{}
	ready.set()
	return monitoringServer(":0", prometheus.NewRegistry(), ready, sz, guard, func(mux *http.ServeMux) { dashboard.Register(mux, s) }).Handler
}

var meshEdges = tcpEdges(
	[2]string{"tenant-a/web", "tenant-a/db"},
	[2]string{"tenant-b/app", "tenant-b/db"},
	[2]string{"tenant-b/app", "tenant-a/db"},
)

func serve(h http.Handler, remote, path, token string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	r.RemoteAddr = remote
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

// TestMonitoringPortRefusesUnauthenticatedPods is the attack of issue #13
// M3: a pod of the cluster asks for the debug and dashboard endpoints
// without a token, or with a made-up one. It gets 401 and not even a
// scrape happens; /metrics and the probes stay open.
func TestMonitoringPortRefusesUnauthenticatedPods(t *testing.T) {
	p := newProxies(t, map[string]string{"agent-0": meshEdges, "waypoint-0": ""})
	h := monitoring(t, p)
	const pod = "10.1.0.7:41000"
	for _, path := range []string{"/debug/syncz", "/dashboard", "/dashboard/api/graph", "/debug/anything-added-later"} {
		for _, token := range []string{"", "made-up-token-0123456789"} {
			rec := serve(h, pod, path, token)
			if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Body.String(), "authentication") {
				t.Errorf("GET %s from a pod, token %q: %d %q, want 401", path, token, rec.Code, rec.Body)
			}
		}
	}
	if n := p.scrapes.Load(); n != 0 {
		t.Errorf("unauthenticated requests made the dashboard scrape %d times", n)
	}
	for _, path := range openPaths {
		if rec := serve(h, pod, path, ""); rec.Code != http.StatusOK {
			t.Errorf("GET %s from a pod: %d, want 200 (open, as istiod's)", path, rec.Code)
		}
	}
}

// TestTenantTokenSeesOnlyItsNamespace: a tenant's service-account token
// (reviewed by the fake API server) sees only its namespace's xDS clients,
// graph edges and proxies; the control plane's service accounts and
// port-forwarded readers see everything.
func TestTenantTokenSeesOnlyItsNamespace(t *testing.T) {
	h := monitoring(t, newProxies(t, map[string]string{"agent-0": meshEdges, "waypoint-0": ""}))
	allEdges := []string{"tenant-a/web->tenant-a/db", "tenant-b/app->tenant-a/db", "tenant-b/app->tenant-b/db"}
	for _, tc := range []struct {
		name, remote, token string
		clients, edges      []string
		targets             []string
	}{
		{"tenant-a token", "10.1.0.7:41000", tenantToken, []string{"waypoint~tenant-a/waypoint~waypoint-0"},
			[]string{"tenant-a/web->tenant-a/db", "tenant-b/app->tenant-a/db"}, nil},
		{"weft-system token", "10.1.0.7:41000", systemToken,
			[]string{"node-agent~node-0", "waypoint~tenant-a/waypoint~waypoint-0", "waypoint~tenant-b/waypoint~waypoint-0"},
			allEdges, []string{"agent-0", "waypoint-0"}},
		{"port-forward", "127.0.0.1:41000", "",
			[]string{"node-agent~node-0", "waypoint~tenant-a/waypoint~waypoint-0", "waypoint~tenant-b/waypoint~waypoint-0"},
			allEdges, []string{"agent-0", "waypoint-0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sz Syncz
			decode(t, serve(h, tc.remote, "/debug/syncz", tc.token), &sz)
			var clients []string
			for _, c := range sz.Clients {
				clients = append(clients, c.Node)
			}
			if !slices.Equal(clients, tc.clients) {
				t.Errorf("syncz clients %v, want %v", clients, tc.clients)
			}
			g := graph(t, h, tc.remote, tc.token)
			var edges, targets []string
			for _, e := range g.Edges {
				edges = append(edges, e.ID)
			}
			for _, tg := range g.Targets {
				targets = append(targets, tg.Pod)
			}
			if !slices.Equal(edges, tc.edges) || !slices.Equal(targets, tc.targets) {
				t.Errorf("graph edges %v targets %v, want %v %v", edges, targets, tc.edges, tc.targets)
			}
			for _, n := range g.Nodes {
				if !slices.ContainsFunc(edges, func(e string) bool { return strings.Contains(e, n.ID) }) {
					t.Errorf("node %s without a visible edge", n.ID)
				}
			}
		})
	}
}

// graph reads the dashboard's graph (the first request waits for the
// first scrape).
func graph(t *testing.T, h http.Handler, remote, token string) dashboard.Graph {
	t.Helper()
	var g dashboard.Graph
	decode(t, serve(h, remote, "/dashboard/api/graph", token), &g)
	return g
}

func decode(t *testing.T, rec *httptest.ResponseRecorder, v any) {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		t.Fatalf("%v: %s", err, rec.Body)
	}
}
