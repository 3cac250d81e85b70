package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/benchkit"
	"github.com/weft-mesh/weft/pkg/cli"
	"github.com/weft-mesh/weft/pkg/gomaxprocs"
	"github.com/weft-mesh/weft/waypoint/proxy"
)

// waypointEnv selects "waypoint" mode in a re-executed test binary: its
// value is the path of a waypointConfig JSON file.
const waypointEnv = "WEFT_WAYPOINTBENCH_CONFIG"

// readyPrefix starts the line a waypoint process prints on stdout once it
// listens, followed by its HBONE address.
const readyPrefix = "READY "

var (
	td         = spiffeid.RequireTrustDomainFromString("cluster.local")
	waypointID = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/waypoint")
	backendID  = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/reviews")
	clientID   = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/productpage")
)

// The one service the waypoint serves.
const (
	vip      = "10.96.0.10"
	vipPort  = 9080
	svcHost  = "reviews.default.svc.cluster.local"
	chainKey = "reviews.default.svc.cluster.local:9080"
	cluster  = "outbound|9080||reviews.default.svc.cluster.local"
)

func TestMain(m *testing.M) { benchkit.Main(m, waypointEnv, "waypoint", runWaypoint) }

// waypointConfig is the waypoint process's whole input.
type waypointConfig struct {
	Cert, Key  string // PEM, the waypoint's SVID
	Bundle     string // PEM trust anchors of the test CA
	AccessLog  string // one JSON line per request (the real binary's default); "": off
	Agent      string // the stand-in node agent: every endpoint's tunnel port
	Backend    string // the service's one endpoint ("pod IP:port")
	Tunnel     string // the endpoint's tunnel: HBONE (via Agent) or NONE (plain TCP)
	CPUProfile string // when set, a CPU profile of the whole run
	MemProfile string // when set, a heap profile (after a GC) at exit
}

// runWaypoint is the waypoint process: waypoint/proxy wired as
// weft-waypoint wires it (metrics registry, JSON access log), with the xDS
// resources built here instead of received from the control plane. It
// serves until stdin closes (the test process ended) or SIGTERM.
func runWaypoint(path string) error {
	var cfg waypointConfig
	if err := benchkit.ReadConfig(path, &cfg); err != nil {
		return err
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if cfg.MemProfile != "" {
		defer writeHeapProfile(cfg.MemProfile)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	svid, err := x509svid.Load(cfg.Cert, cfg.Key)
	if err != nil {
		return fmt.Errorf("SVID: %w", err)
	}
	bundle, err := x509bundle.Load(td, cfg.Bundle)
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	var alog io.Writer
	if cfg.AccessLog != "" {
		f, err := os.OpenFile(cfg.AccessLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		// Buffered as weft-waypoint's is (cli.AccessLog): the default
		// install's cost, not one write per request.
		w, stop := cli.AccessLog(f)
		defer stop()
		alog = w
	}
	backend, err := netip.ParseAddrPort(cfg.Backend)
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}

	p, err := proxy.New(proxy.Options{
		SVID: svid, Bundle: bundle, Registerer: prometheus.NewRegistry(), AccessLog: alog, Log: log,
		// Every pod's tunnel port is the stand-in node agent.
		HBONEDial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, cfg.Agent)
		},
	})
	if err != nil {
		return err
	}
	defer p.Close()
	if err := configure(p.Store, backend, cfg.Tunnel); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ctx, stop := benchkit.ChildContext() // SIGTERM, or stdin closed: the test process is gone
	defer stop()
	gomaxprocs.Adapt(ctx, log) // as weft-waypoint
	go func() {
		if err := p.Serve(ln); err != nil && ctx.Err() == nil {
			log.Error("HBONE server stopped", "err", err)
			stop()
		}
	}()
	fmt.Println(readyPrefix + ln.Addr().String())
	<-ctx.Done()
	return nil
}

// writeHeapProfile writes what is live at exit: what the process holds
// beyond its working set shows here.
func writeHeapProfile(path string) {
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	runtime.GC()
	pprof.WriteHeapProfile(f)
}

// configure pushes the resources weft-control would serve for one HTTP
// service with one HBONE endpoint and no policy: Listener (one HCM chain
// with only the router filter), RouteConfiguration (one prefix "/" route),
// EDS Cluster and its ClusterLoadAssignment.
func configure(s *proxy.Store, backend netip.AddrPort, tunnel string) error {
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return err
	}
	stdout, err := anypb.New(&streamv3.StdoutAccessLog{})
	if err != nil {
		return err
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: chainKey,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: chainKey, ConfigSource: ads}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
		// As weft-control renders every chain by default (the binary's
		// --access-log flag decides whether lines are written).
		AccessLog: []*accesslogv3.AccessLog{{Name: "envoy.access_loggers.stdout",
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: stdout}}},
	})
	if err != nil {
		return err
	}
	lis := &listenerv3.Listener{Name: proxy.ListenerName,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 15008}}}},
		FilterChains: []*listenerv3.FilterChain{{
			Name: chainKey,
			FilterChainMatch: &listenerv3.FilterChainMatch{
				DestinationPort: wrapperspb.UInt32(vipPort),
				PrefixRanges:    []*corev3.CidrRange{{AddressPrefix: vip, PrefixLen: wrapperspb.UInt32(32)}},
			},
			Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}},
		}},
	}
	rc := &routev3.RouteConfiguration{Name: chainKey, VirtualHosts: []*routev3.VirtualHost{{
		Name: svcHost, Domains: []string{svcHost, svcHost + ":" + strconv.Itoa(vipPort), "*"},
		Routes: []*routev3.Route{{Name: "default",
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}}}},
	}}}
	cl := &clusterv3.Cluster{Name: cluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads},
		ConnectTimeout:       durationpb.New(10 * time.Second),
	}
	md, err := structpb.NewStruct(map[string]any{"tunnel": tunnel, "identity": backendID.String(),
		"workload": "reviews-v1", "namespace": "default", "version": "v1"})
	if err != nil {
		return err
	}
	ep := &endpointv3.ClusterLoadAssignment{ClusterName: cluster, Endpoints: []*endpointv3.LocalityLbEndpoints{{
		LbEndpoints: []*endpointv3.LbEndpoint{{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
				Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: backend.Addr().String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(backend.Port())}}}}}},
			HealthStatus: corev3.HealthStatus_HEALTHY,
			Metadata:     &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"weft": md}},
		}},
	}}}
	for _, r := range []struct {
		typeURL string
		name    string
		msg     proto.Message
	}{
		{resourcev3.ClusterType, cluster, cl},
		{resourcev3.EndpointType, cluster, ep},
		{resourcev3.ListenerType, proxy.ListenerName, lis},
		{resourcev3.RouteType, chainKey, rc},
	} {
		if err := s.Handle(r.typeURL, map[string]proto.Message{r.name: r.msg}, nil); err != nil {
			return fmt.Errorf("push %s: %w", r.typeURL, err)
		}
	}
	return nil
}
