package config

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/control/xds"
	"github.com/weft-mesh/weft/control/xds/xdstest"
	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/node-agent/policy"
	"github.com/weft-mesh/weft/pkg/xdsclient"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

const reviews = "default/reviews.default.svc.cluster.local"

type wl struct {
	name, node string
	ips        []string
	sa         string
	unhealthy  bool
	plain      bool
	ports      map[uint32]uint32 // service port -> target port on this workload
}

func workload(w wl) *workloadv1.Address {
	p := &workloadv1.Workload{
		Uid: "Kubernetes//Pod/default/" + w.name, Name: w.name, Namespace: "default", Addresses: w.ips,
		Node: w.node, ServiceAccount: w.sa, TrustDomain: "cluster.local", TunnelProtocol: workloadv1.TunnelProtocol_HBONE,
	}
	if p.ServiceAccount == "" {
		p.ServiceAccount = "default"
	}
	if w.unhealthy {
		p.Status = workloadv1.WorkloadStatus_UNHEALTHY
	}
	if w.plain {
		p.TunnelProtocol = workloadv1.TunnelProtocol_NONE
	}
	if w.ports != nil {
		pl := &workloadv1.PortList{}
		for sp, tp := range w.ports {
			pl.Ports = append(pl.Ports, &workloadv1.Port{ServicePort: sp, TargetPort: tp})
		}
		p.Services = map[string]*workloadv1.PortList{reviews: pl}
	}
	return &workloadv1.Address{Type: &workloadv1.Address_Workload{Workload: p}}
}

func service(vip string, ports ...uint32) *workloadv1.Address {
	s := &workloadv1.Service{Name: "reviews", Namespace: "default", Hostname: "reviews.default.svc.cluster.local", Addresses: []string{vip}}
	for _, p := range ports {
		s.Ports = append(s.Ports, &workloadv1.Port{ServicePort: p})
	}
	return &workloadv1.Address{Type: &workloadv1.Address_Service{Service: s}}
}

func addresses(as ...*workloadv1.Address) map[string]proto.Message {
	out := map[string]proto.Message{}
	for _, a := range as {
		if w := a.GetWorkload(); w != nil {
			out[w.GetUid()] = a
		} else {
			out[a.GetService().GetNamespace()+"/"+a.GetService().GetHostname()] = a
		}
	}
	return out
}

func authz(ns, name string, scope workloadv1.Scope, cidrs ...string) (string, proto.Message) {
	return ns + "/" + name, &workloadv1.Authorization{Name: name, Namespace: ns, Scope: scope, Action: workloadv1.Action_ALLOW,
		Rules: []*workloadv1.Rule{{Clauses: []*workloadv1.Clause{{Matches: []*workloadv1.Match{{SourceIps: cidrs, DestinationPorts: []uint32{9080}}}}}}}}
}

// harness is a real control/xds server on loopback feeding a Store through
// pkg/xdsclient.
type harness struct {
	server  *xds.Server
	reg     *prometheus.Registry
	store   *Store
	mu      sync.Mutex
	handled []error
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h := &harness{reg: prometheus.NewRegistry(), store: NewStore(Options{Logger: quiet})}
	h.server = xds.New(ctx, quiet, h.reg)
	conn := xdstest.Dial(t, h.server)
	c := xdsclient.New(xdsclient.Config{Conn: conn, Node: &core.Node{Id: "node-a"}, Types: Types(), Log: quiet,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond},
		func(typ string, upd map[string]proto.Message, rem []string) error {
			err := h.store.Handle(typ, upd, rem)
			h.mu.Lock()
			h.handled = append(h.handled, err)
			h.mu.Unlock()
			return err
		})
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

func (h *harness) lastErr() (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.handled) == 0 {
		return 0, nil
	}
	return len(h.handled), h.handled[len(h.handled)-1]
}

func names(ws []*Workload) string {
	var out []string
	for _, w := range ws {
		out = append(out, w.Proto.GetName())
	}
	return strings.Join(out, ",")
}

var (
	ip  = netip.MustParseAddr
	vip = netip.MustParseAddrPort
)

func TestIndexesFollowTheControlPlane(t *testing.T) {
	h := newHarness(t)
	notes, unsubscribe := h.store.Subscribe()
	defer unsubscribe()

	n1, p1 := authz("default", "allow-lan", workloadv1.Scope_NAMESPACE, "10.0.0.0/8")
	n2, p2 := authz("istio-system", "global", workloadv1.Scope_GLOBAL, "192.168.1.1")
	h.server.Update(xds.AuthorizationType, map[string]proto.Message{n1: p1, n2: p2})
	h.server.Update(xds.AddressType, addresses(
		workload(wl{name: "reviews-v1", node: "node-a", ips: []string{"10.1.0.1"}, sa: "reviews", ports: map[uint32]uint32{9080: 0}}),
		workload(wl{name: "reviews-v2", node: "node-b", ips: []string{"10.1.0.2", "fd00::2"}, sa: "reviews", ports: map[uint32]uint32{9080: 8080}}),
		workload(wl{name: "reviews-v3", node: "node-a", ips: []string{"10.1.0.3"}, sa: "reviews-v3", unhealthy: true, ports: map[uint32]uint32{9080: 0}}),
		workload(wl{name: "ratings", node: "node-a", ips: []string{"10.1.0.4"}, sa: "ratings"}),
		service("10.96.0.10", 9080),
	))
	await.True(t, "first sync", func() bool { s := h.store.Snapshot(); return s.Synced() && len(s.Workloads()) == 4 })
	select {
	case <-notes:
	default:
		t.Fatal("no change notification")
	}

	snap := h.store.Snapshot()
	if w := snap.WorkloadByIP(ip("10.1.0.2")); w == nil || w.Proto.GetName() != "reviews-v2" {
		t.Fatalf("WorkloadByIP(10.1.0.2) = %v", w)
	}
	if w := snap.WorkloadByIP(ip("fd00::2")); w == nil || w.Proto.GetName() != "reviews-v2" {
		t.Fatalf("WorkloadByIP(fd00::2) = %v", w)
	}
	if w := snap.WorkloadByIP(ip("::ffff:10.1.0.1")); w == nil || w.Proto.GetName() != "reviews-v1" {
		t.Fatalf("WorkloadByIP of a v4-mapped address = %v", w)
	}
	if snap.WorkloadByIP(ip("10.9.9.9")) != nil {
		t.Fatal("unknown IP found")
	}
	svc := snap.ServiceByVIP(vip("10.96.0.10:9080"))
	if svc == nil || svc.Name != reviews {
		t.Fatalf("ServiceByVIP = %v", svc)
	}
	if snap.ServiceByVIP(vip("10.96.0.10:80")) != nil {
		t.Fatal("undeclared service port found")
	}
	if got := names(snap.WorkloadsOfService(reviews)); got != "reviews-v1,reviews-v2,reviews-v3" {
		t.Fatalf("WorkloadsOfService = %s", got)
	}
	if got := names(h.store.WorkloadsOnNode("node-a")); got != "ratings,reviews-v1,reviews-v3" {
		t.Fatalf("WorkloadsOnNode(node-a) = %s", got)
	}
	ids := snap.IdentitiesOnNode("node-a")
	if len(ids) != 3 || ids[0] != spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/ratings") {
		t.Fatalf("IdentitiesOnNode = %v", ids)
	}
	if len(snap.Authorizations()) != 2 {
		t.Fatalf("Authorizations = %v", snap.Authorizations())
	}
	if got := snap.AuthorizationsFor(snap.WorkloadByIP(ip("10.1.0.1"))); len(got) != 2 || got[0].GetName() != "global" {
		t.Fatalf("AuthorizationsFor = %v", got)
	}

	// Round robin over the healthy endpoints only, with per-workload
	// target ports.
	seen := map[string]int{}
	for range 10 {
		w, port, err := h.store.PickEndpoint(svc, 9080, nil)
		if err != nil {
			t.Fatal(err)
		}
		seen[w.Proto.GetName()+":"+itoa(port)]++
	}
	if seen["reviews-v1:9080"] != 5 || seen["reviews-v2:8080"] != 5 || len(seen) != 2 {
		t.Fatalf("picks = %v", seen)
	}
	if _, _, err := h.store.PickEndpoint(svc, 80, nil); !errors.Is(err, ErrNoEndpoint) || !strings.Contains(err.Error(), "no port 80") {
		t.Fatalf("PickEndpoint on an undeclared port: %v", err)
	}

	// Change: reviews-v1 moves to a new IP, reviews-v2 turns unhealthy,
	// ratings is removed.
	version := snap.Version
	h.server.Update(xds.AddressType, addresses(
		workload(wl{name: "reviews-v1", node: "node-a", ips: []string{"10.1.0.11"}, sa: "reviews", ports: map[uint32]uint32{9080: 0}}),
		workload(wl{name: "reviews-v2", node: "node-b", ips: []string{"10.1.0.2", "fd00::2"}, sa: "reviews", unhealthy: true, ports: map[uint32]uint32{9080: 8080}}),
		workload(wl{name: "reviews-v3", node: "node-a", ips: []string{"10.1.0.3"}, sa: "reviews-v3", unhealthy: true, ports: map[uint32]uint32{9080: 0}}),
		service("10.96.0.10", 9080),
	))
	await.True(t, "change", func() bool {
		s := h.store.Snapshot()
		return len(s.Workloads()) == 3 && s.WorkloadByIP(ip("10.1.0.11")) != nil
	})
	snap2 := h.store.Snapshot()
	if snap2.Version <= version {
		t.Fatal("version did not advance")
	}
	if snap2.WorkloadByIP(ip("10.1.0.1")) != nil || snap2.WorkloadByIP(ip("10.1.0.4")) != nil {
		t.Fatal("stale IPs still indexed")
	}
	if got := names(snap2.WorkloadsOnNode("node-a")); got != "reviews-v1,reviews-v3" {
		t.Fatalf("WorkloadsOnNode(node-a) = %s", got)
	}
	// The old snapshot is untouched.
	if snap.WorkloadByIP(ip("10.1.0.1")) == nil || len(snap.Workloads()) != 4 {
		t.Fatal("an old snapshot changed")
	}
	svc2 := snap2.ServiceByVIP(vip("10.96.0.10:9080"))
	for range 3 {
		w, port, err := h.store.PickEndpoint(svc2, 9080, nil)
		if err != nil || w.Proto.GetName() != "reviews-v1" || port != 9080 {
			t.Fatalf("PickEndpoint = %v %d %v", w, port, err)
		}
	}

	// Removal of everything of one type.
	h.server.Update(xds.AuthorizationType, map[string]proto.Message{n2: p2})
	await.True(t, "policy removal", func() bool { return len(h.store.Snapshot().Authorizations()) == 1 })
	h.server.Update(xds.AddressType, addresses(
		workload(wl{name: "reviews-v3", node: "node-a", ips: []string{"10.1.0.3"}, sa: "reviews-v3", unhealthy: true, ports: map[uint32]uint32{9080: 0}}),
	))
	await.True(t, "service removal", func() bool { return h.store.Snapshot().ServiceByVIP(vip("10.96.0.10:9080")) == nil })
	if _, _, err := h.store.PickEndpoint(svc2, 9080, nil); err != nil {
		t.Fatalf("a Service from an older snapshot stays usable: %v", err)
	}
	if got := h.store.Snapshot().Service(reviews); got != nil {
		t.Fatal("removed service still present")
	}

	// The admin dump is JSON with every resource.
	b, err := json.Marshal(h.store.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	var dump struct {
		Workloads      map[string]json.RawMessage
		Authorizations map[string]json.RawMessage
	}
	if err := json.Unmarshal(b, &dump); err != nil || len(dump.Workloads) != 1 || len(dump.Authorizations) != 1 {
		t.Fatalf("dump = %s (%v)", b, err)
	}
}

func itoa(p uint16) string {
	return netip.AddrPortFrom(netip.IPv4Unspecified(), p).String()[len("0.0.0.0:"):]
}

func TestMalformedResourceIsNACKedAndPreviousSnapshotKept(t *testing.T) {
	h := newHarness(t)
	good := workload(wl{name: "reviews-v1", node: "node-a", ips: []string{"10.1.0.1"}})
	h.server.Update(xds.AddressType, addresses(good))
	n1, p1 := authz("default", "a", workloadv1.Scope_NAMESPACE, "10.0.0.0/8")
	h.server.Update(xds.AuthorizationType, map[string]proto.Message{n1: p1})
	// Every type's first response and both updates must have landed before
	// "before" is taken: Synced alone can be true while the authorization
	// or the (ungated) EnrolledNamespace response is still on its way.
	await.True(t, "sync", func() bool {
		s := h.store.Snapshot()
		return s.Synced() && s.EnrolledNamespacesSynced && len(s.Workloads()) == 1 && s.Authorizations()[n1] != nil
	})
	before := h.store.Snapshot()

	bad := workload(wl{name: "broken", node: "node-a", ips: []string{"10.1.0.999"}})
	n, _ := h.lastErr()
	h.server.Update(xds.AddressType, addresses(good, bad))
	await.True(t, "NACK", func() bool {
		return testutil.ToFloat64(mustCounter(t, h.reg, "weft_xds_nacks_total", xds.AddressType)) == 1
	})
	m, err := h.lastErr()
	if m <= n || err == nil || !strings.Contains(err.Error(), `"Kubernetes//Pod/default/broken"`) || !strings.Contains(err.Error(), `unparsable IP "10.1.0.999"`) {
		t.Fatalf("handler error = %v", err)
	}
	if h.store.Snapshot() != before {
		t.Fatal("a rejected update changed the snapshot")
	}

	nb, pb := authz("default", "b", workloadv1.Scope_NAMESPACE, "10.0.0.0/33")
	h.server.Update(xds.AuthorizationType, map[string]proto.Message{n1: p1, nb: pb})
	await.True(t, "authorization NACK", func() bool {
		return testutil.ToFloat64(mustCounter(t, h.reg, "weft_xds_nacks_total", xds.AuthorizationType)) == 1
	})
	if _, err := h.lastErr(); err == nil || !strings.Contains(err.Error(), `authorization "default/b"`) || !strings.Contains(err.Error(), "10.0.0.0/33") {
		t.Fatalf("handler error = %v", err)
	}
	if h.store.Snapshot() != before {
		t.Fatal("a rejected update changed the snapshot")
	}

	// The control plane fixes the resource: accepted.
	fixed := workload(wl{name: "broken", node: "node-a", ips: []string{"10.1.0.99"}})
	h.server.Update(xds.AddressType, addresses(good, fixed))
	await.True(t, "fixed resource", func() bool { return h.store.WorkloadByIP(ip("10.1.0.99")) != nil })
}

func mustCounter(t *testing.T, reg *prometheus.Registry, name, typ string) prometheus.Collector {
	t.Helper()
	return counterValue{reg: reg, name: name, typ: typ}
}

// counterValue adapts one labelled series of a gathered counter to
// testutil.ToFloat64.
type counterValue struct {
	reg       *prometheus.Registry
	name, typ string
}

func (c counterValue) Describe(ch chan<- *prometheus.Desc) {}
func (c counterValue) Collect(ch chan<- prometheus.Metric) {
	v := 0.0
	mfs, _ := c.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != c.name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "type" && l.GetValue() == c.typ {
					v = m.GetCounter().GetValue()
				}
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("x", "x", nil, nil), prometheus.CounterValue, v)
}

func TestValidation(t *testing.T) {
	w := func(mut func(w *workloadv1.Workload)) proto.Message {
		a := workload(wl{name: "w", node: "n", ips: []string{"10.0.0.1"}})
		mut(a.GetWorkload())
		return a
	}
	name := "Kubernetes//Pod/default/w"
	for _, tc := range []struct {
		desc    string
		typ     string
		name    string
		res     proto.Message
		wantErr string
	}{
		{"unparsable IP", AddressType, name, w(func(w *workloadv1.Workload) { w.Addresses = []string{"nope"} }), `unparsable IP "nope"`},
		{"duplicate IP", AddressType, name, w(func(w *workloadv1.Workload) { w.Addresses = []string{"10.0.0.1", "10.0.0.1"} }), "listed twice"},
		{"name mismatch", AddressType, "other", w(func(*workloadv1.Workload) {}), "differs from the resource name"},
		{"HBONE without identity", AddressType, name, w(func(w *workloadv1.Workload) { w.ServiceAccount = "" }), "no SPIFFE identity"},
		{"bad trust domain", AddressType, name, w(func(w *workloadv1.Workload) { w.TrustDomain = "Bad Domain" }), "trust_domain"},
		{"unknown status", AddressType, name, w(func(w *workloadv1.Workload) { w.Status = 7 }), "status: unknown value 7"},
		{"bad service key", AddressType, name, w(func(w *workloadv1.Workload) {
			w.Services = map[string]*workloadv1.PortList{"reviews": {}}
		}), "not <namespace>/<name>"},
		{"port out of range", AddressType, name, w(func(w *workloadv1.Workload) {
			w.Services = map[string]*workloadv1.PortList{reviews: {Ports: []*workloadv1.Port{{ServicePort: 70000}}}}
		}), "outside 1-65535"},
		{"bad waypoint", AddressType, name, w(func(w *workloadv1.Workload) {
			w.Waypoint = &workloadv1.GatewayAddress{Destination: &workloadv1.GatewayAddress_Address{Address: "x"}}
		}), "waypoint"},
		{"hostname with addresses", AddressType, name, w(func(w *workloadv1.Workload) {
			w.Hostname, w.TunnelProtocol = "api.example.com", workloadv1.TunnelProtocol_NONE
		}), "by address or by name, not both"},
		{"hostname not a name", AddressType, name, w(func(w *workloadv1.Workload) {
			w.Hostname, w.Addresses, w.TunnelProtocol = "not a name", nil, workloadv1.TunnelProtocol_NONE
		}), "not a DNS name"},
		{"hostname with HBONE", AddressType, name, w(func(w *workloadv1.Workload) { w.Hostname, w.Addresses = "api.example.com", nil }), "outside the mesh"},
		{"empty address", AddressType, name, &workloadv1.Address{}, "neither workload nor service"},
		{"wrong type", AddressType, name, &workloadv1.Authorization{}, "not a weft.workload.v1.Address"},
		{"service bad VIP", AddressType, reviews, service("10.96.0.300", 80), `unparsable IP "10.96.0.300"`},
		{"service duplicate port", AddressType, reviews, service("10.96.0.1", 80, 80), "listed twice"},
		{"service name mismatch", AddressType, "default/ratings", service("10.96.0.1", 80), "differs"},
		{"authz bad CIDR", AuthorizationType, "default/a", must(authz("default", "a", workloadv1.Scope_GLOBAL, "10.0.0.0/99")), "invalid CIDR"},
		{"authz bad IP", AuthorizationType, "default/a", must(authz("default", "a", workloadv1.Scope_GLOBAL, "::1%eth0")), "invalid IP or CIDR"},
		{"authz name mismatch", AuthorizationType, "default/b", must(authz("default", "a", workloadv1.Scope_GLOBAL)), "differs"},
		{"authz empty string match", AuthorizationType, "default/a", &workloadv1.Authorization{Name: "a", Namespace: "default",
			Rules: []*workloadv1.Rule{{Clauses: []*workloadv1.Clause{{Matches: []*workloadv1.Match{{Principals: []*workloadv1.StringMatch{{}}}}}}}}}, "no match type"},
		{"unknown type", "type.googleapis.com/envoy.config.cluster.v3.Cluster", "x", &workloadv1.Address{}, "unsupported resource type"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s := NewStore(Options{Logger: quiet})
			before := s.Snapshot()
			err := s.Handle(tc.typ, map[string]proto.Message{tc.name: tc.res}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if tc.typ != "type.googleapis.com/envoy.config.cluster.v3.Cluster" && !strings.Contains(err.Error(), tc.name) {
				t.Fatalf("error does not name the resource %q: %v", tc.name, err)
			}
			if s.Snapshot() != before {
				t.Fatal("snapshot changed")
			}
		})
	}
}

func must(_ string, m proto.Message) proto.Message { return m }

type firstPicker struct{ calls int }

func (p *firstPicker) Pick(_ *Service, _ uint16, eps []Endpoint) int { p.calls++; return len(eps) - 1 }

func TestLeastRequestHookAndIPConflicts(t *testing.T) {
	p := &firstPicker{}
	s := NewStore(Options{Logger: quiet, LeastRequest: p})
	svc := service("10.96.0.10", 9080)
	svc.GetService().LoadBalancing = &workloadv1.LoadBalancing{Mode: workloadv1.LoadBalancing_LEAST_REQUEST}
	err := s.Handle(AddressType, addresses(
		workload(wl{name: "a", node: "n", ips: []string{"10.0.0.1"}, ports: map[uint32]uint32{9080: 0}}),
		workload(wl{name: "b", node: "n", ips: []string{"10.0.0.2"}, ports: map[uint32]uint32{9080: 0}}),
		// Host-network pods share the node IP: the HBONE one wins.
		workload(wl{name: "host-a", node: "n", ips: []string{"192.168.0.1"}, plain: true}),
		workload(wl{name: "host-b", node: "n", ips: []string{"192.168.0.1"}}),
		svc,
	), nil)
	if err != nil {
		t.Fatal(err)
	}
	w, _, err := s.PickEndpoint(s.ServiceByVIP(vip("10.96.0.10:9080")), 9080, nil)
	if err != nil || w.Proto.GetName() != "b" || p.calls != 1 {
		t.Fatalf("least-request pick = %v, %v (calls %d)", w, err, p.calls)
	}
	if w := s.WorkloadByIP(ip("192.168.0.1")); w.Proto.GetName() != "host-b" {
		t.Fatalf("IP conflict resolved to %s", w.Proto.GetName())
	}
}

// TestConcurrentReaders runs lock-free readers against a stream of updates
// from the real server; run with -race.
func TestConcurrentReaders(t *testing.T) {
	h := newHarness(t)
	push := func(i int) {
		h.server.Update(xds.AddressType, addresses(
			workload(wl{name: "a", node: "node-a", ips: []string{"10.0.0.1"}, ports: map[uint32]uint32{9080: uint32(8000 + i%2)}}),
			workload(wl{name: "b", node: "node-a", ips: []string{"10.0.0.2"}, unhealthy: i%3 == 0, ports: map[uint32]uint32{9080: 0}}),
			service("10.96.0.10", 9080),
		))
	}
	push(1)
	await.True(t, "sync", func() bool { return h.store.ServiceByVIP(vip("10.96.0.10:9080")) != nil })

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var reads sync.Map
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			notes, unsub := h.store.Subscribe()
			defer unsub()
			for ctx.Err() == nil {
				snap := h.store.Snapshot()
				if svc := snap.ServiceByVIP(vip("10.96.0.10:9080")); svc != nil {
					if _, _, err := h.store.PickEndpoint(svc, 9080, nil); err != nil {
						t.Error(err)
						return
					}
				}
				_ = snap.WorkloadByIP(ip("10.0.0.2"))
				_ = snap.WorkloadsOnNode("node-a")
				_ = snap.Authorizations()
				select {
				case <-notes:
				default:
				}
				n++
			}
			reads.Store(r, n)
		}()
	}
	for i := range 30 {
		push(i + 2)
		// Pacing, not waiting: spread the pushes so the readers run
		// between them and read many intermediate snapshots.
		time.Sleep(time.Millisecond)
	}
	await.True(t, "last update", func() bool {
		w := h.store.Snapshot().Service(reviews)
		return w != nil && len(w.Workloads) == 2 && h.store.Snapshot().Workload("Kubernetes//Pod/default/a").Proto.GetServices()[reviews].GetPorts()[0].GetTargetPort() == uint32(8000+31%2)
	})
	cancel()
	wg.Wait()
	reads.Range(func(_, v any) bool {
		if v.(int) == 0 {
			t.Error("a reader made no progress")
		}
		return true
	})
}

// TestPolicyFollowsTheSnapshot: the compiled L4 policy is part of the
// snapshot, so a reader holding one snapshot sees the policy of the same
// version; an Address update keeps the compiled policy, a rejected
// Authorization update keeps the previous one, and swaps under concurrent
// readers are safe.
func TestPolicyFollowsTheSnapshot(t *testing.T) {
	s := NewStore(Options{Logger: quiet})
	if err := s.Handle(AddressType, addresses(workload(wl{name: "a", node: "n", ips: []string{"10.0.0.1"}})), nil); err != nil {
		t.Fatal(err)
	}
	snap0 := s.Snapshot()
	a := snap0.Workload("Kubernetes//Pod/default/a")
	conn := policy.Conn{SourceIP: ip("10.1.0.1"), DestIP: ip("10.0.0.1"), DestPort: 9080}
	if d := snap0.Authorize(a, conn); !d.Allowed || snap0.Policy().Len() != 0 {
		t.Fatalf("no policy yet: %+v, %d policies", d, snap0.Policy().Len())
	}
	name, allowOther := authz("default", "only-other", workloadv1.Scope_NAMESPACE, "10.2.0.0/16")
	if err := s.Handle(AuthorizationType, map[string]proto.Message{name: allowOther}, nil); err != nil {
		t.Fatal(err)
	}
	snap1 := s.Snapshot()
	if d := snap1.Authorize(a, conn); d.Allowed || d.Reason != policy.ReasonNoAllowMatched {
		t.Fatalf("after the ALLOW policy: %+v", d)
	}
	if d := snap0.Authorize(a, conn); !d.Allowed {
		t.Fatalf("the older snapshot changed: %+v", d)
	}
	if err := s.Handle(AddressType, addresses(workload(wl{name: "b", node: "n", ips: []string{"10.0.0.2"}})), nil); err != nil {
		t.Fatal(err)
	}
	if s.Snapshot().Policy() != snap1.Policy() {
		t.Fatal("an Address update recompiled (or dropped) the policy")
	}
	bad := &workloadv1.Authorization{Name: "bad", Namespace: "default", Scope: workloadv1.Scope_NAMESPACE, Action: workloadv1.Action_DENY,
		Rules: []*workloadv1.Rule{{Clauses: []*workloadv1.Clause{{Matches: []*workloadv1.Match{{SourceIps: []string{"not-an-ip"}}}}}}}}
	if err := s.Handle(AuthorizationType, map[string]proto.Message{"default/bad": bad}, []string{name}); err == nil {
		t.Fatal("malformed Authorization accepted")
	}
	if s.Snapshot().Policy() != snap1.Policy() {
		t.Fatal("a rejected update replaced the policy")
	}

	// Concurrent swaps: every reader's decision is one of the two policies'.
	_, denyAll := authz("default", "only-other", workloadv1.Scope_NAMESPACE)
	denyAll.(*workloadv1.Authorization).Action = workloadv1.Action_DENY
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if d := s.Snapshot().Authorize(a, conn); d.Allowed || d.Policy != "" && d.Policy != name {
					t.Errorf("unexpected decision %+v", d)
					return
				}
			}
		})
	}
	for i := range 200 {
		m := allowOther
		if i%2 == 0 {
			m = denyAll
		}
		if err := s.Handle(AuthorizationType, map[string]proto.Message{name: m}, nil); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
}

// TestAuthorizeKeepsThePlan: a workload's compiled policies are built by
// its first check with a snapshot's policies; later checks allocate
// nothing, and a new policy set is compiled anew for the same workload.
func TestAuthorizeKeepsThePlan(t *testing.T) {
	s := NewStore(Options{Logger: quiet})
	if err := s.Handle(AddressType, addresses(workload(wl{name: "a", node: "n", ips: []string{"10.0.0.1"}})), nil); err != nil {
		t.Fatal(err)
	}
	name, allowOther := authz("default", "only-other", workloadv1.Scope_NAMESPACE, "10.2.0.0/16")
	if err := s.Handle(AuthorizationType, map[string]proto.Message{name: allowOther}, nil); err != nil {
		t.Fatal(err)
	}
	snap := s.Snapshot()
	a := snap.Workload("Kubernetes//Pod/default/a")
	conn := policy.Conn{SourceIP: ip("10.1.0.1"), DestIP: ip("10.0.0.1"), DestPort: 9080}
	if allocs := testing.AllocsPerRun(100, func() { snap.Authorize(a, conn) }); allocs != 0 {
		t.Errorf("Authorize allocates %v times per check", allocs)
	}
	if d := snap.Authorize(a, conn); d.Allowed {
		t.Fatalf("denied by %s expected: %+v", name, d)
	}
	if err := s.Handle(AuthorizationType, nil, []string{name}); err != nil {
		t.Fatal(err)
	}
	if s.Snapshot().Workload("Kubernetes//Pod/default/a") != a {
		t.Fatal("an Authorization update replaced the workloads")
	}
	if d := s.Snapshot().Authorize(a, conn); !d.Allowed {
		t.Errorf("the removed policy still applies: %+v", d)
	}
}

func TestServiceServing(t *testing.T) {
	w := &workloadv1.Workload{Uid: "w", Name: "w", Namespace: "ns", Addresses: []string{"10.0.0.1"},
		Services: map[string]*workloadv1.PortList{
			"ns/b.ns.svc.cluster.local":    {Ports: []*workloadv1.Port{{ServicePort: 80, TargetPort: 8080}}},
			"ns/a.ns.svc.cluster.local":    {Ports: []*workloadv1.Port{{ServicePort: 80, TargetPort: 8080}, {ServicePort: 9090}}},
			"ns/gone.ns.svc.cluster.local": {Ports: []*workloadv1.Port{{ServicePort: 7070}}},
		}}
	svc := func(host string, ports ...uint32) *workloadv1.Address {
		s := &workloadv1.Service{Name: host[:1], Namespace: "ns", Hostname: host}
		for _, p := range ports {
			s.Ports = append(s.Ports, &workloadv1.Port{ServicePort: p})
		}
		return &workloadv1.Address{Type: &workloadv1.Address_Service{Service: s}}
	}
	s := NewStore(Options{})
	if err := s.Handle(AddressType, map[string]proto.Message{
		"w":                         &workloadv1.Address{Type: &workloadv1.Address_Workload{Workload: w}},
		"ns/a.ns.svc.cluster.local": svc("a.ns.svc.cluster.local", 80, 9090),
		"ns/b.ns.svc.cluster.local": svc("b.ns.svc.cluster.local", 80),
	}, nil); err != nil {
		t.Fatal(err)
	}
	snap := s.Snapshot()
	wl := snap.Workload("w")
	for port, want := range map[uint16]string{
		8080: "a.ns.svc.cluster.local", // both target it: the smallest name
		9090: "a.ns.svc.cluster.local", // target port 0: the service port
		80:   "",                       // a service port, not a target port
		7070: "",                       // its service is not in the snapshot
	} {
		got := ""
		if svc := snap.ServiceServing(wl, port); svc != nil {
			got = svc.Proto.GetHostname()
		}
		if got != want {
			t.Errorf("ServiceServing(w, %d) = %q, want %q", port, got, want)
		}
	}
}
