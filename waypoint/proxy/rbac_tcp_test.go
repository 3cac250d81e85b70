package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
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
	ln, err := net.Listen("tcp", net.JoinHostPort(podIP().String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	reached := make(chan struct{}, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			reached <- struct{}{}
			go func() { b, _ := io.ReadAll(c); c.Write([]byte(strings.ToUpper(string(b)))); c.Close() }()
		}
	}()
	const tcpVIP, tcpPort = "10.96.0.21", 6379
	name := "redis.default.svc.cluster.local:6379"
	cl := "outbound|6379||redis.default.svc.cluster.local"
	e.mustPush(resourcev3.ClusterType, edsCluster(cl))
	e.mustPush(resourcev3.EndpointType, cla(cl, epSpec{addr: mustAddrPort(ln.Addr().String()), tunnel: "HBONE",
		identity: backendID.String(), workload: "redis", health: corev3.HealthStatus_HEALTHY}))
	other := "spiffe://cluster.local/ns/default/sa/other"
	for _, tc := range []struct {
		name  string
		rbacs []*netrbacv3.RBAC
		allow bool
	}{
		{"DENY names the client", []*netrbacv3.RBAC{principalRBAC(rbaccfgv3.RBAC_DENY, clientID.String())}, false},
		{"ALLOW names another principal", []*netrbacv3.RBAC{principalRBAC(rbaccfgv3.RBAC_ALLOW, other)}, false},
		{"DENY another, ALLOW the client", []*netrbacv3.RBAC{principalRBAC(rbaccfgv3.RBAC_DENY, other),
			principalRBAC(rbaccfgv3.RBAC_ALLOW, clientID.String())}, true},
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
				waitFor(t, func() bool { return strings.Contains(e.accessLog(), `rbac_access_denied_matched_policy[`) })
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
