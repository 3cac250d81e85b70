package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbaccfgv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	wellknown "github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/pkg/hbone"
)

// principalRBAC is an envoy.filters.network.rbac config with one policy
// matching the authenticated peer principal.
func principalRBAC(action rbaccfgv3.RBAC_Action, principal string) *netrbacv3.RBAC {
	return &netrbacv3.RBAC{StatPrefix: "tcp.", Rules: &rbaccfgv3.RBAC{Action: action, Policies: map[string]*rbaccfgv3.Policy{
		"ns[default]-policy[p]-rule[0]": {
			Permissions: []*rbaccfgv3.Permission{{Rule: &rbaccfgv3.Permission_Any{Any: true}}},
			Principals: []*rbaccfgv3.Principal{{Identifier: &rbaccfgv3.Principal_Authenticated_{
				Authenticated: &rbaccfgv3.Principal_Authenticated{PrincipalName: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_Exact{Exact: principal}}}}}},
		}}}}
}

// withNetworkRBAC puts the RBAC filters before the chain's tcp_proxy, as
// control/waypoint does.
func withNetworkRBAC(t testing.TB, fc *listenerv3.FilterChain, rbacs ...*netrbacv3.RBAC) *listenerv3.FilterChain {
	var fs []*listenerv3.Filter
	for _, r := range rbacs {
		fs = append(fs, &listenerv3.Filter{Name: wellknown.RoleBasedAccessControl,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, r)}})
	}
	fc.Filters = append(fs, fc.Filters...)
	return fc
}

// TestTCPChainNetworkRBAC is the attack of issue #13 H3: a client whose
// principal a policy denies opens a raw TCP stream to a Service's TCP port
// through the waypoint. It must be refused (403 on the CONNECT, nothing
// reaches the backend); the named principal of an ALLOW policy gets through.
func TestTCPChainNetworkRBAC(t *testing.T) {
	e := newEnv(t)
	reached := make(chan struct{}, 8)
	ln := startUpperEcho(t, reached)
	const tcpVIP, tcpPort = "10.96.0.21", 6379
	name := "redis.default.svc.cluster.local:6379"
	cl := "outbound|6379||redis.default.svc.cluster.local"
	e.mustPush(resourcev3.ClusterType, edsCluster(cl))
	e.mustPush(resourcev3.EndpointType, cla(cl, epSpec{addr: mustAddrPort(ln.Addr().String()), tunnel: "HBONE",
		identity: backendID.String(), workload: "redis", health: corev3.HealthStatus_HEALTHY}))
	other := "spiffe://cluster.local/ns/default/sa/other"
	denied := 0
	for _, tc := range []struct {
		name    string
		rbacs   []*netrbacv3.RBAC
		allow   bool
		details string // connection_termination_details of a denial
		logged  int    // access-log lines with it so far
	}{
		{"DENY names the client", []*netrbacv3.RBAC{principalRBAC(rbaccfgv3.RBAC_DENY, clientID.String())}, false,
			"rbac_access_denied_matched_policy[ns[default]-policy[p]-rule[0]]", 1},
		{"ALLOW names another principal", []*netrbacv3.RBAC{principalRBAC(rbaccfgv3.RBAC_ALLOW, other)}, false,
			"rbac_access_denied_matched_policy[none]", 1},
		{"DENY another, ALLOW the client", []*netrbacv3.RBAC{principalRBAC(rbaccfgv3.RBAC_DENY, other),
			principalRBAC(rbaccfgv3.RBAC_ALLOW, clientID.String())}, true, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.mustPush(resourcev3.ListenerType, listener(withNetworkRBAC(t, tcpChain(t, name, tcpVIP, tcpPort, cl), tc.rbacs...)))
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			st, err := e.dial(ctx, net.JoinHostPort(tcpVIP, strconv.Itoa(tcpPort)))
			if !tc.allow {
				var re *hbone.RefusedError
				if !errors.As(err, &re) || re.Status != http.StatusForbidden {
					if err == nil {
						st.Write([]byte("flushall"))
						st.CloseWrite()
						got, _ := io.ReadAll(st)
						st.Close()
						t.Fatalf("CONNECT accepted and proxied (backend answered %q), want refused 403", got)
					}
					t.Fatalf("CONNECT: %v, want refused 403", err)
				}
				select {
				case <-reached:
					t.Fatal("a denied stream reached the backend")
				default:
				}
				denied++
				if got := metricValue(t, e, "weft_waypoint_tcp_rbac_denied_total", map[string]string{"filter_chain": name}); got != float64(denied) {
					t.Errorf("weft_waypoint_tcp_rbac_denied_total = %v, want %d", got, denied)
				}
				want := `"connection_termination_details":"` + tc.details + `"`
				await.True(t, "the expected access-log lines", func() bool { return strings.Count(e.accessLog(), want) == tc.logged })
				return
			}
			if err != nil {
				t.Fatalf("CONNECT as the allowed principal: %v", err)
			}
			defer st.Close()
			st.Write([]byte("ping"))
			st.CloseWrite()
			if got, err := io.ReadAll(st); err != nil || string(got) != "PING" {
				t.Fatalf("allowed stream: %q, %v", got, err)
			}
			<-reached
		})
	}
}

// TestTranslatedTCPChainRBAC runs the listener control/waypoint renders for
// the golden case authz-tcp (testdata there; regenerated with its -update)
// through this proxy's chain parser and network RBAC: the translation and
// the runtime agree on the contract, and the case's policies decide as
// written (DENY sleep, ALLOW productpage on port 9000 only).
func TestTranslatedTCPChainRBAC(t *testing.T) {
	chains := translatedChains(t, "authz-tcp")
	cs := newChainSet(chains)
	p := &Proxy{}
	for _, tc := range []struct {
		peer, dst string
		allow     bool
	}{
		{"spiffe://cluster.local/ns/default/sa/productpage", "10.96.0.30:9000", true},
		{"spiffe://cluster.local/ns/default/sa/productpage", "10.96.0.30:9001", false}, // ALLOW names port 9000
		{"spiffe://cluster.local/ns/default/sa/sleep", "10.96.0.30:9000", false},       // DENY by principal
		{"spiffe://cluster.local/ns/untrusted/sa/x", "10.96.0.30:9000", false},         // DENY rule without its methods
		{"spiffe://cluster.local/ns/default/sa/reviews", "10.96.0.30:9000", false},     // ALLOW paths rule dropped on TCP
	} {
		dst := netip.MustParseAddrPort(tc.dst)
		c := cs.match(dst)
		if c == nil || !c.isTCP() {
			t.Fatalf("%s: want a TCP chain, got %+v", tc.dst, c)
		}
		if len(c.rbac) != 2 {
			t.Errorf("%s: %d network RBAC filters, want DENY and ALLOW", tc.dst, len(c.rbac))
		}
		rs := &requestState{peer: spiffeid.RequireFromString(tc.peer), origDst: dst}
		if details, ok := p.authorizeTCP(c, rs); ok != tc.allow {
			t.Errorf("%s to %s: allowed=%v (%s), want %v", tc.peer, tc.dst, ok, details, tc.allow)
		}
	}
}

// translatedChains parses the waypoint listener of control/waypoint's
// golden case name (testdata there) with this proxy's chain parser.
func translatedChains(t *testing.T, name string) []*chain {
	t.Helper()
	raw, err := os.ReadFile("../../control/waypoint/testdata/" + name + "/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Waypoints map[string]struct {
			Listeners []json.RawMessage `json:"listeners"`
		} `json:"waypoints"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	ls := doc.Waypoints["default/waypoint"].Listeners
	if len(ls) != 1 {
		t.Fatalf("want the waypoint's one listener, got %d", len(ls))
	}
	var l listenerv3.Listener
	if err := protojson.Unmarshal(ls[0], &l); err != nil {
		t.Fatal(err)
	}
	chains, err := parseChains(&l)
	if err != nil {
		t.Fatalf("the translation's listener is rejected: %v", err)
	}
	return chains
}
