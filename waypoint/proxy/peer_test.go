package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbaccfgv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/pkg/hbone"
)

// The tunnels of these tests come from 127.0.0.1 with clientID's
// certificate. Whether 127.0.0.1 is a node (the node agent speaking for
// its pod) or a pod (speaking for itself) is what the Address resources
// say, as in a cluster.
const (
	clientPodIP = "10.0.0.7" // productpage-v1, clientID: the pod the agent speaks for
	victimPodIP = "10.0.0.9" // stranger, strangerID
	tunnelSrc   = "127.0.0.1"
)

func workloadAddr(name, ns, sa, ip string) *workloadv1.Address {
	return &workloadv1.Address{Type: &workloadv1.Address_Workload{Workload: &workloadv1.Workload{
		Uid: "Kubernetes//Pod/" + ns + "/" + name, Name: name, Namespace: ns, Addresses: []string{ip},
		ServiceAccount: sa, TrustDomain: td.Name(), TunnelProtocol: workloadv1.TunnelProtocol_HBONE,
		WorkloadName: name, CanonicalName: "app-" + name, CanonicalRevision: "v9", Node: "node-a"}}}
}

// pushWorkloads hands the waypoint the mesh's workloads as WDS would.
func (e *env) pushWorkloads(ws ...*workloadv1.Address) {
	e.t.Helper()
	updated := map[string]proto.Message{}
	for _, w := range ws {
		updated[w.GetWorkload().GetUid()] = w
	}
	if err := e.wp.Store.Handle(AddressType, updated, nil); err != nil {
		e.t.Fatal(err)
	}
}

// clientWith sends HTTP/1.1 through the waypoint over tunnels opened with
// clientID's certificate and the given Forwarded and baggage headers.
func (e *env) clientWith(forwarded, baggage string) *http.Client {
	tr := &http.Transport{DisableCompression: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		h := http.Header{}
		if forwarded != "" {
			h.Set("Forwarded", forwarded)
		}
		if baggage != "" {
			h.Set("Baggage", baggage)
		}
		st, err := e.client.Dial(ctx, e.wpAddr, tlsconfig.AuthorizeID(waypointID), vipAuthority(), h)
		if err != nil {
			return nil, err
		}
		return &streamConn{Stream: st, local: st.LocalAddr(), remote: st.RemoteAddr()}, nil
	}}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testTimeout}
}

const ownBaggage = "k8s.namespace.name=default,k8s.deployment.name=productpage-v1,service.name=productpage,service.version=v1"

// TestForwardedFromTheTunnelPeer is the waypoint half of issue #13 H1: the
// client address (X-Forwarded-For, policy, access log) is the tunnel's TCP
// source unless the tunnel comes from a node and its peer proved the
// identity of the workload at the address it claims.
func TestForwardedFromTheTunnelPeer(t *testing.T) {
	for _, tc := range []struct {
		name      string
		workloads []*workloadv1.Address
		forwarded string
		baggage   string
		want      string // client address the upstream and the log see
		ignored   float64
	}{
		{"node agent speaks for its pod", []*workloadv1.Address{
			workloadAddr("productpage-v1", "default", "productpage", clientPodIP),
			workloadAddr("stranger", "other", "stranger", victimPodIP)},
			"for=" + clientPodIP, ownBaggage, clientPodIP, 0},
		{"node claims a pod of another identity", []*workloadv1.Address{
			workloadAddr("productpage-v1", "default", "productpage", clientPodIP),
			workloadAddr("stranger", "other", "stranger", victimPodIP)},
			"for=" + victimPodIP, ownBaggage, tunnelSrc, 1},
		{"node claims an address nobody has", []*workloadv1.Address{
			workloadAddr("productpage-v1", "default", "productpage", clientPodIP)},
			"for=192.0.2.1", ownBaggage, tunnelSrc, 1},
		// A plain pod with its own certificate connects to 15008 and claims
		// the address of another pod of its own service account.
		{"pod claims a sibling's address", []*workloadv1.Address{
			workloadAddr("productpage-v1", "default", "productpage", clientPodIP),
			workloadAddr("attacker", "default", "productpage", tunnelSrc)},
			"for=" + clientPodIP, ownBaggage, tunnelSrc, 1},
		{"pod claims another identity's address", []*workloadv1.Address{
			workloadAddr("stranger", "other", "stranger", victimPodIP),
			workloadAddr("attacker", "default", "productpage", tunnelSrc)},
			"for=" + victimPodIP, ownBaggage, tunnelSrc, 1},
		{"pod names itself", []*workloadv1.Address{workloadAddr("attacker", "default", "productpage", tunnelSrc)},
			"for=" + tunnelSrc, "", tunnelSrc, 0},
		// No workload data: a claim whose baggage names another namespace
		// than the peer's is not consistent with it.
		{"no workload data, inconsistent baggage", nil, "for=" + victimPodIP,
			"k8s.namespace.name=other,k8s.deployment.name=stranger", tunnelSrc, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			b := startBackend(t, "reviews-v1", nil)
			e.simple(nil, b)
			if tc.workloads != nil {
				e.pushWorkloads(tc.workloads...)
			}
			if code, _ := get(t, e.clientWith(tc.forwarded, tc.baggage), "/", nil); code != 200 {
				t.Fatalf("status %d", code)
			}
			if got := b.seenHeader("X-Forwarded-For"); got != tc.want {
				t.Errorf("upstream X-Forwarded-For %q, want %q", got, tc.want)
			}
			await.True(t, "the downstream address in the access log", func() bool {
				return containsJSON(e.accessLog(), "downstream_remote_address", tc.want)
			})
			if got := metricValue(t, e, "weft_waypoint_forwarded_ignored_total", nil); got != tc.ignored {
				t.Errorf("weft_waypoint_forwarded_ignored_total = %v, want %v", got, tc.ignored)
			}
		})
	}
}

// TestForwardedCannotPassIPBlocks: a pod denied by an ipBlocks rule
// (Envoy direct_remote_ip) on a TCP port claims the address of an allowed
// pod of its own identity. The CONNECT is refused.
func TestForwardedCannotPassIPBlocks(t *testing.T) {
	e := newEnv(t)
	ln := startUpperEcho(t, nil)
	const tcpVIP, tcpPort = "10.96.0.22", 5432
	name := "pg.default.svc.cluster.local:5432"
	cl := "outbound|5432||pg.default.svc.cluster.local"
	e.mustPush(resourcev3.ClusterType, edsCluster(cl))
	e.mustPush(resourcev3.EndpointType, cla(cl, epSpec{addr: mustAddrPort(ln.Addr().String()), tunnel: "HBONE",
		identity: backendID.String(), workload: "pg", health: corev3.HealthStatus_HEALTHY}))
	deny := &netrbacv3.RBAC{StatPrefix: "tcp.", Rules: &rbaccfgv3.RBAC{Action: rbaccfgv3.RBAC_DENY, Policies: map[string]*rbaccfgv3.Policy{
		"ns[default]-policy[deny-attacker]-rule[0]": {
			Permissions: []*rbaccfgv3.Permission{{Rule: &rbaccfgv3.Permission_Any{Any: true}}},
			Principals: []*rbaccfgv3.Principal{{Identifier: &rbaccfgv3.Principal_DirectRemoteIp{
				DirectRemoteIp: &corev3.CidrRange{AddressPrefix: tunnelSrc, PrefixLen: wrapperspb.UInt32(32)}}}},
		}}}}
	e.mustPush(resourcev3.ListenerType, listener(withNetworkRBAC(t, tcpChain(t, name, tcpVIP, tcpPort, cl), deny)))
	e.pushWorkloads(workloadAddr("productpage-v1", "default", "productpage", clientPodIP),
		workloadAddr("attacker", "default", "productpage", tunnelSrc))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	h := http.Header{}
	h.Set("Forwarded", "for="+clientPodIP)
	h.Set("Baggage", ownBaggage)
	st, err := e.client.Dial(ctx, e.wpAddr, tlsconfig.AuthorizeID(waypointID), net.JoinHostPort(tcpVIP, strconv.Itoa(tcpPort)), h)
	var re *hbone.RefusedError
	if !errors.As(err, &re) || re.Status != http.StatusForbidden {
		if err == nil {
			st.Close()
		}
		t.Fatalf("CONNECT with a forged Forwarded: %v, want refused 403", err)
	}
}

// TestBaggageMustAgreeWithThePeer is issue #13 M1 at the waypoint: source
// labels come from the workload the peer proved, else from the peer's
// SPIFFE namespace; baggage naming another namespace changes nothing and is
// counted.
func TestBaggageMustAgreeWithThePeer(t *testing.T) {
	forged := "k8s.namespace.name=victims,k8s.deployment.name=payments,service.name=payments,service.version=v1"
	for _, tc := range []struct {
		name      string
		workloads []*workloadv1.Address
		forwarded string
		baggage   string
		want      map[string]string
		ignored   float64
	}{
		{"forged namespace, proven workload", []*workloadv1.Address{
			workloadAddr("productpage-v1", "default", "productpage", clientPodIP)},
			"for=" + clientPodIP, forged,
			map[string]string{"source_workload": "productpage-v1", "source_workload_namespace": "default",
				"source_app": "app-productpage-v1", "source_version": "v9"}, 1},
		{"honest baggage, proven workload wins", []*workloadv1.Address{
			workloadAddr("productpage-v1", "default", "productpage", clientPodIP)},
			"for=" + clientPodIP, "k8s.namespace.name=default,k8s.deployment.name=made-up",
			map[string]string{"source_workload": "productpage-v1", "source_workload_namespace": "default"}, 0},
		{"unproven claim takes no label from baggage", []*workloadv1.Address{
			workloadAddr("stranger", "other", "stranger", victimPodIP)},
			"for=" + victimPodIP, "k8s.namespace.name=default,k8s.deployment.name=made-up,service.name=made-up",
			map[string]string{"source_workload": "unknown", "source_workload_namespace": "default", "source_app": "unknown"}, 0},
		{"forged namespace, no workload data", nil, "", forged,
			map[string]string{"source_workload": "unknown", "source_workload_namespace": "default",
				"source_app": "unknown", "source_version": "unknown"}, 1},
		{"own namespace, no workload data", nil, "", ownBaggage,
			map[string]string{"source_workload": "productpage-v1", "source_workload_namespace": "default",
				"source_app": "productpage", "source_version": "v1"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			b := startBackend(t, "reviews-v1", nil)
			e.simple(nil, b)
			if tc.workloads != nil {
				e.pushWorkloads(tc.workloads...)
			}
			if code, _ := get(t, e.clientWith(tc.forwarded, tc.baggage), "/", nil); code != 200 {
				t.Fatalf("status %d", code)
			}
			want := map[string]string{"source_principal": clientID.String()}
			for k, v := range tc.want {
				want[k] = v
			}
			await.True(t, "the request counted", func() bool { return counterValue(t, e, want) == 1 })
			if got := counterValue(t, e, map[string]string{"source_workload_namespace": "victims"}); got != 0 {
				t.Errorf("%v requests reported from the forged namespace", got)
			}
			if got := metricValue(t, e, "weft_waypoint_baggage_ignored_total", nil); got != tc.ignored {
				t.Errorf("weft_waypoint_baggage_ignored_total = %v, want %v", got, tc.ignored)
			}
		})
	}
}

// TestXForwardedForAppends: what the client sent is kept and the address
// the waypoint vouches for is appended last, as Envoy does with
// use_remote_address; no header the client sends puts another address
// last or removes the waypoint's.
func TestXForwardedForAppends(t *testing.T) {
	e := newEnv(t)
	b := startBackend(t, "reviews-v1", nil)
	e.simple(nil, b)
	e.pushWorkloads(workloadAddr("productpage-v1", "default", "productpage", clientPodIP))
	c := e.clientWith("for="+clientPodIP, ownBaggage)
	for _, tc := range []struct {
		name string
		hdr  http.Header
		want string
	}{
		{"none", nil, clientPodIP},
		{"client's kept", http.Header{"X-Forwarded-For": {"203.0.113.5"}}, "203.0.113.5, " + clientPodIP},
		{"client forges the last hop", http.Header{"X-Forwarded-For": {"203.0.113.5, 10.0.0.9"}}, "203.0.113.5, 10.0.0.9, " + clientPodIP},
		{"several lines", http.Header{"X-Forwarded-For": {"203.0.113.5", "10.0.0.9"}}, "203.0.113.5, 10.0.0.9, " + clientPodIP},
		{"nominated hop-by-hop", http.Header{"X-Forwarded-For": {"10.0.0.9"}, "Connection": {"X-Forwarded-For"}}, clientPodIP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+vipAuthority()+"/", nil)
			for k, vs := range tc.hdr {
				req.Header[k] = vs
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := b.seenHeader("X-Forwarded-For"); got != tc.want {
				t.Errorf("upstream X-Forwarded-For %q, want %q", got, tc.want)
			}
		})
	}
}

func TestAppendXFFUnit(t *testing.T) {
	h := http.Header{"X-Forwarded-For": {"1.1.1.1"}, "Connection": {"keep-alive, x-forwarded-for"}}
	appendXFF(h, mustAddrPort("10.0.0.7:1").Addr())
	if got := h["X-Forwarded-For"]; len(got) != 1 || got[0] != "10.0.0.7" {
		t.Errorf("X-Forwarded-For %q", got)
	}
	if got := h.Get("Connection"); got != "keep-alive" {
		t.Errorf("Connection %q", got)
	}
}

func containsJSON(log, key, value string) bool {
	return strings.Contains(log, `"`+key+`":"`+value+`"`)
}
