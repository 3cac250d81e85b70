package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	wellknown "github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	statsapi "istio.io/api/envoy/extensions/stats"
)

// chain is one compiled filter chain of Listener "waypoint".
type chain struct {
	name     string
	port     uint32         // 0: any port
	prefixes []netip.Prefix // empty: any address

	// A gateway's TLS chains (gateway_tls_chain.go): the SNI names matched (empty:
	// any) and the SDS name of the certificate to terminate TLS with (""
	// = the TLS bytes are not terminated).
	serverNames []string
	tlsCert     string
	// clientAuth is the client certificate check of a terminating chain
	// (tls.mode MUTUAL or OPTIONAL_MUTUAL); nil: none.
	clientAuth *clientAuth

	// accessLog: the chain writes the access log (its HCM's or tcp_proxy's
	// access_log lists a logger, see accessLogged).
	accessLog bool
	// stats is the configuration of Istio's stats filter, the HCM's HTTP
	// filter or the network filter before tcp_proxy (nil: none).
	stats *statsapi.PluginConfig

	// HCM chains.
	hcm     *hcmv3.HttpConnectionManager
	trace   *traceConfig // nil: the process's tracer
	rcName  string
	handler http.Handler // nil until the RouteConfiguration arrives

	// TcpProxy chains: the network RBAC filters before tcp_proxy, in
	// order (each must allow the connection), and the clusters.
	rbac []*networkRBAC
	tcp  []weightedCluster
}

type weightedCluster struct {
	name   string
	weight uint32
}

func (c *chain) isTCP() bool { return c.hcm == nil }

// parseChains validates the Listener's filter chains.
func parseChains(l *listenerv3.Listener) ([]*chain, error) {
	var out []*chain
	var errs []error
	seen := map[string]bool{}
	for i, fc := range l.GetFilterChains() {
		c, err := parseChain(fc)
		if err != nil {
			errs = append(errs, fmt.Errorf("filter chain %d (%q): %w", i, fc.GetName(), err))
			continue
		}
		if seen[c.name] {
			errs = append(errs, fmt.Errorf("filter chain name %q is used twice", c.name))
			continue
		}
		seen[c.name] = true
		out = append(out, c)
	}
	return out, errors.Join(errs...)
}

func parseChain(fc *listenerv3.FilterChain) (*chain, error) {
	c := &chain{name: fc.GetName()}
	if c.name == "" {
		return nil, errors.New("filter chain needs a name")
	}
	m := fc.GetFilterChainMatch()
	c.port = m.GetDestinationPort().GetValue()
	if c.port > 65535 {
		return nil, fmt.Errorf("destination_port %d out of range", c.port)
	}
	for _, r := range m.GetPrefixRanges() {
		a, err := netip.ParseAddr(r.GetAddressPrefix())
		if err != nil {
			return nil, fmt.Errorf("prefix_ranges address %q: %w", r.GetAddressPrefix(), err)
		}
		bits := a.BitLen()
		if r.GetPrefixLen() != nil {
			bits = int(r.GetPrefixLen().GetValue())
		}
		p, err := a.Unmap().Prefix(bits)
		if err != nil {
			return nil, fmt.Errorf("prefix_ranges %s/%d: %w", a, bits, err)
		}
		c.prefixes = append(c.prefixes, p)
	}
	if err := parseTLSMatch(c, fc); err != nil {
		return nil, err
	}
	if err := parseFilters(c, fc.GetFilters()); err != nil {
		return nil, err
	}
	return c, nil
}

// parseFilters reads a chain's network filters: http_connection_manager
// alone, or network RBAC filters then tcp_proxy (Envoy runs them in order and
// the first that denies closes the connection).
func parseFilters(c *chain, fs []*listenerv3.Filter) error {
	if len(fs) == 0 {
		return errors.New("want a network filter (http_connection_manager or tcp_proxy)")
	}
	for i, f := range fs {
		msg, err := filterConfig(f)
		if err != nil {
			return err
		}
		last := i == len(fs)-1
		switch cfg := msg.(type) {
		case *statsapi.PluginConfig:
			if last {
				return fmt.Errorf("%s must be followed by tcp_proxy", f.GetName())
			}
			c.stats = cfg
		case *netrbacv3.RBAC:
			if last {
				return fmt.Errorf("%s must be followed by tcp_proxy", wellknown.RoleBasedAccessControl)
			}
			r, err := compileNetworkRBAC(cfg)
			if err != nil {
				return fmt.Errorf("filter %q: %w", f.GetName(), err)
			}
			c.rbac = append(c.rbac, r)
		case *hcmv3.HttpConnectionManager:
			if len(fs) != 1 {
				return fmt.Errorf("%s must be the chain's only network filter", wellknown.HTTPConnectionManager)
			}
			c.hcm = cfg
			c.rcName = cfg.GetRds().GetRouteConfigName()
			if c.rcName == "" {
				return fmt.Errorf("%s: only rds route_config_name is supported", wellknown.HTTPConnectionManager)
			}
			if c.accessLog, err = accessLogged(cfg.GetAccessLog()); err != nil {
				return fmt.Errorf("%s: %w", wellknown.HTTPConnectionManager, err)
			}
			if c.trace, err = parseTracing(cfg.GetTracing()); err != nil {
				return fmt.Errorf("%s: %w", wellknown.HTTPConnectionManager, err)
			}
			c.stats = httpStatsConfig(cfg)
		case *tcpv3.TcpProxy:
			if !last {
				return fmt.Errorf("%s must be the chain's last network filter", wellknown.TCPProxy)
			}
			if c.tcp, err = tcpClusters(cfg); err != nil {
				return err
			}
			if c.accessLog, err = accessLogged(cfg.GetAccessLog()); err != nil {
				return fmt.Errorf("%s: %w", wellknown.TCPProxy, err)
			}
		default:
			return fmt.Errorf("unsupported network filter %q (%T): want http_connection_manager, or %s and istio.stats filters then tcp_proxy",
				f.GetName(), msg, wellknown.RoleBasedAccessControl)
		}
	}
	return nil
}

// httpStatsConfig is the configuration of the HCM's stats filter (nil:
// none); the route pipeline checks the HTTP filters.
func httpStatsConfig(hcm *hcmv3.HttpConnectionManager) *statsapi.PluginConfig {
	for _, f := range hcm.GetHttpFilters() {
		cfg := &statsapi.PluginConfig{}
		if !f.GetDisabled() && f.GetTypedConfig().MessageIs(cfg) && f.GetTypedConfig().UnmarshalTo(cfg) == nil {
			return cfg
		}
	}
	return nil
}

func filterConfig(f *listenerv3.Filter) (proto.Message, error) {
	tc := f.GetTypedConfig()
	if tc == nil {
		return nil, fmt.Errorf("filter %q has no typed_config", f.GetName())
	}
	msg, err := tc.UnmarshalNew()
	if err != nil {
		return nil, fmt.Errorf("filter %q: %w", f.GetName(), err)
	}
	return msg, nil
}

func tcpClusters(cfg *tcpv3.TcpProxy) ([]weightedCluster, error) {
	switch {
	case cfg.GetCluster() != "":
		return []weightedCluster{{name: cfg.GetCluster(), weight: 1}}, nil
	case cfg.GetWeightedClusters() != nil:
		var out []weightedCluster
		for _, w := range cfg.GetWeightedClusters().GetClusters() {
			if w.GetName() == "" {
				return nil, errors.New("tcp_proxy weighted cluster without a name")
			}
			if w.GetWeight() > 0 {
				out = append(out, weightedCluster{name: w.GetName(), weight: w.GetWeight()})
			}
		}
		if len(out) == 0 {
			return nil, errors.New("tcp_proxy weighted_clusters has no cluster with a weight")
		}
		return out, nil
	}
	return nil, errors.New("tcp_proxy needs cluster or weighted_clusters")
}

// chainSet selects a chain by destination. Most specific wins: a chain
// naming the port beats one that does not, then the longest matching
// prefix; unlike Envoy, a destination not matched by any chain naming its
// port falls back to chains without one (so a workload chain `workload|<pod
// IP>` still matches a port some service chain also uses).
type chainSet struct {
	exact      map[netip.AddrPort]*chain // port + single-address prefix
	rest       []*chain                  // sorted most specific first
	restPrefix []netip.Prefix
	all        []*chain
}

func specificity(c *chain, p netip.Prefix) int {
	s := p.Bits() + 1 // 0 for "any address" (Bits -1 marks none)
	if c.port != 0 {
		s += 1000
	}
	return s
}

type chainEntry struct {
	c     *chain
	p     netip.Prefix // invalid = any address
	score int
}

func newChainSet(chains []*chain) *chainSet {
	cs := &chainSet{exact: map[netip.AddrPort]*chain{}, all: chains}
	var entries []chainEntry
	for _, c := range chains {
		if len(c.serverNames) > 0 {
			continue // reached by its SNI only (matchSNI)
		}
		if len(c.prefixes) == 0 {
			entries = append(entries, chainEntry{c: c, score: specificity(c, netip.Prefix{})})
			continue
		}
		for _, p := range c.prefixes {
			if c.port != 0 && p.IsSingleIP() {
				k := netip.AddrPortFrom(p.Addr(), uint16(c.port))
				if _, dup := cs.exact[k]; !dup {
					cs.exact[k] = c
				}
				continue
			}
			entries = append(entries, chainEntry{c: c, p: p, score: specificity(c, p)})
		}
	}
	slices.SortStableFunc(entries, func(a, b chainEntry) int { return b.score - a.score })
	for _, e := range entries {
		cs.rest = append(cs.rest, e.c)
		cs.restPrefix = append(cs.restPrefix, e.p)
	}
	return cs
}

// match returns the chain for dst, or nil.
func (cs *chainSet) match(dst netip.AddrPort) *chain {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if c := cs.exact[dst]; c != nil {
		return c
	}
	for i, c := range cs.rest {
		if c.port != 0 && c.port != uint32(dst.Port()) {
			continue
		}
		if p := cs.restPrefix[i]; p.IsValid() && !p.Contains(dst.Addr()) {
			continue
		}
		return c
	}
	return nil
}
