package proxy

import (
	"context"
	"net/http"
	"net/netip"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/waypoint/route"
)

// This file is the only one that names package waypoint/route (the L7
// pipeline of one HTTP filter chain): everything else goes through these
// aliases.

type routeInfo = route.Info

// routePeer is what RBAC knows of a downstream.
type routePeer = route.Peer

// networkRBAC is envoy.filters.network.rbac, evaluated by the same engine as
// the HTTP RBAC filter.
type networkRBAC = route.NetworkRBAC

func compileNetworkRBAC(c *netrbacv3.RBAC) (*networkRBAC, error) { return route.CompileNetworkRBAC(c) }

var (
	errConnectFailure = route.ErrConnectFailure
	errOverflow       = route.ErrOverflow
	errNoHealthy      = route.ErrNoHealthyUpstream
	errNoCluster      = route.ErrClusterNotFound
)

var _ route.Upstream = (*Upstream)(nil)

func compilePipeline(hcm *hcmv3.HttpConnectionManager, rc *routev3.RouteConfiguration, up *Upstream) (http.Handler, error) {
	p, err := route.Compile(hcm, rc, up)
	if err != nil {
		return nil, err
	}
	return p, nil
}

func withPeer(ctx context.Context, id spiffeid.ID, addr netip.Addr, dest netip.AddrPort) context.Context {
	return route.WithPeer(ctx, routePeer{ID: id, Addr: addr, Dest: dest})
}

func withInfo(ctx context.Context) (context.Context, *routeInfo) { return route.WithInfo(ctx) }
