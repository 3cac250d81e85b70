package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/weft-mesh/weft/pkg/dnsresolve"
)

// Envoy's default dns_refresh_rate.
const defaultDNSRefresh = 5 * time.Second

// dnsSettings are the DNS part of a STRICT_DNS or LOGICAL_DNS cluster: the
// proxy resolves the hosts of its load_assignment itself.
type dnsSettings struct {
	// logical: LOGICAL_DNS, only the first address of the one host is
	// used; STRICT_DNS balances over every address of every host.
	logical bool
	family  dnsresolve.Family
	opts    dnsresolve.Options
	targets []dnsTarget
}

// dnsTarget is one lb_endpoint of a DNS cluster: a name (or literal IP)
// and the port to connect to.
type dnsTarget struct {
	host string
	port uint16
}

// key identifies the lookups of s: clusters that differ only in other
// settings keep their watchers (and their answers).
func (s *dnsSettings) key() string {
	return fmt.Sprint(s.logical, s.family, s.opts, s.targets)
}

// compileDNS reads the DNS settings of a STRICT_DNS or LOGICAL_DNS cluster.
func compileDNS(c *clusterv3.Cluster, logical bool) (*dnsSettings, error) {
	// The cluster-level DNS fields (deprecated by Envoy for the
	// envoy.clusters.dns extension, still what Istio renders) are read;
	// the extension itself (cluster_type) is not supported yet.
	//lint:ignore SA1019 the fields Istio renders are honoured or rejected
	if c.GetDnsResolutionConfig() != nil || c.GetTypedDnsResolverConfig() != nil || len(c.GetDnsResolvers()) > 0 || c.GetUseTcpForDnsLookups() {
		return nil, errors.New("DNS resolver configuration is not supported: names are resolved with the proxy's resolv.conf")
	}
	//lint:ignore SA1019 the fields Istio renders are honoured or rejected
	if c.GetDnsFailureRefreshRate() != nil {
		return nil, errors.New("dns_failure_refresh_rate is not supported: failed lookups are retried from 1 s, doubling up to dns_refresh_rate")
	}
	//lint:ignore SA1019 the fields Istio renders are honoured or rejected
	respectTTL, refresh := c.GetRespectDnsTtl(), c.GetDnsRefreshRate()
	s := &dnsSettings{logical: logical, opts: dnsresolve.Options{RespectTTL: respectTTL, Refresh: durOr(refresh, defaultDNSRefresh)}}
	switch c.GetDnsLookupFamily() {
	case clusterv3.Cluster_V4_ONLY:
		s.family = dnsresolve.V4Only
	case clusterv3.Cluster_V6_ONLY:
		s.family = dnsresolve.V6Only
	case clusterv3.Cluster_V4_PREFERRED:
		s.family = dnsresolve.V4Preferred
	case clusterv3.Cluster_AUTO:
		s.family = dnsresolve.Auto
	case clusterv3.Cluster_ALL:
		s.family = dnsresolve.All
	default:
		return nil, fmt.Errorf("dns_lookup_family %s is not supported", c.GetDnsLookupFamily())
	}
	for _, loc := range c.GetLoadAssignment().GetEndpoints() {
		for i, le := range loc.GetLbEndpoints() {
			sa := le.GetEndpoint().GetAddress().GetSocketAddress()
			if sa.GetAddress() == "" || sa.GetPortValue() == 0 || sa.GetPortValue() > 65535 {
				return nil, fmt.Errorf("load_assignment lb_endpoint %d: address %q port %d: want a hostname or IP and a port", i, sa.GetAddress(), sa.GetPortValue())
			}
			switch le.GetHealthStatus() {
			case corev3.HealthStatus_HEALTHY, corev3.HealthStatus_UNKNOWN:
			default:
				continue // as an unhealthy EDS endpoint: never picked
			}
			s.targets = append(s.targets, dnsTarget{host: sa.GetAddress(), port: uint16(sa.GetPortValue())})
		}
	}
	if len(s.targets) == 0 {
		return nil, errors.New("load_assignment: a DNS cluster needs at least one endpoint to resolve")
	}
	if logical && len(s.targets) != 1 {
		return nil, fmt.Errorf("LOGICAL_DNS clusters take exactly one endpoint, got %d", len(s.targets))
	}
	return s, nil
}

// dnsCluster keeps the names of one DNS cluster resolved and its runtime
// cluster's endpoints set to their addresses.
type dnsCluster struct {
	key string
	c   *cluster
	s   *dnsSettings
	log *slog.Logger

	mu       sync.Mutex
	watchers []*dnsresolve.Watcher // one per target, in target order
	failing  map[string]bool       // hosts whose latest lookup failed, for logs
}

// startDNS starts resolving the targets of s for c. fresh: c had no DNS
// targets before, so its endpoints (from EDS) are dropped at once; else
// the previous answers serve until the new ones arrive.
func startDNS(c *cluster, s *dnsSettings, lookup dnsresolve.LookupFunc, log *slog.Logger, fresh bool) *dnsCluster {
	d := &dnsCluster{key: s.key(), c: c, s: s, log: log, failing: map[string]bool{}}
	if fresh {
		c.setEndpoints(nil)
		err := error(errors.New("DNS: not resolved yet"))
		c.dnsErr.Store(&err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, t := range s.targets {
		w := dnsresolve.Watch(t.host, s.family, lookup, s.opts, func(st dnsresolve.State) { d.changed(t, st) })
		d.watchers = append(d.watchers, w)
	}
	return d
}

// stop ends the lookups; the cluster keeps its endpoints until its next
// settings replace them.
func (d *dnsCluster) stop() {
	d.mu.Lock()
	ws := d.watchers
	d.mu.Unlock()
	for _, w := range ws {
		w.Stop()
	}
}

// changed logs a name's new state and recomputes the endpoints.
func (d *dnsCluster) changed(t dnsTarget, st dnsresolve.State) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case st.Err != nil && st.Stale:
		d.log.Warn("DNS lookup failed; keeping the last answer", "cluster", d.c.name, "host", t.host,
			"addresses", st.Addrs, "resolved", st.Resolved, "err", st.Err)
	case st.Err != nil:
		d.log.Error("DNS lookup failed; the host has no address and connections to it fail", "cluster", d.c.name, "host", t.host, "err", st.Err)
	case d.failing[t.host]:
		d.log.Info("DNS lookups succeed again", "cluster", d.c.name, "host", t.host, "addresses", st.Addrs)
	default:
		// Debug: resolvers that rotate their records (CoreDNS loadbalance)
		// change the order of every answer.
		d.log.Debug("DNS answer", "cluster", d.c.name, "host", t.host, "addresses", st.Addrs)
	}
	d.failing[t.host] = st.Err != nil
	var eps []*endpoint
	var errs []error
	seen := map[netip.AddrPort]bool{}
	for i, w := range d.watchers {
		st := w.State()
		if len(st.Addrs) == 0 {
			if st.Err == nil {
				st.Err = errors.New("not resolved yet")
			}
			errs = append(errs, fmt.Errorf("DNS %s: %w", d.s.targets[i].host, st.Err))
			continue
		}
		addrs := st.Addrs
		if d.s.logical {
			addrs = addrs[:1] // LOGICAL_DNS: the first address of the latest answer
		} else {
			addrs = slices.SortedFunc(slices.Values(addrs), netip.Addr.Compare)
		}
		for _, a := range addrs {
			ap := netip.AddrPortFrom(a, d.s.targets[i].port)
			if !seen[ap] {
				seen[ap] = true
				eps = append(eps, &endpoint{addr: ap, healthy: true})
			}
		}
	}
	d.c.setEndpoints(eps)
	if err := errors.Join(errs...); err != nil {
		d.c.dnsErr.Store(&err)
	} else {
		d.c.dnsErr.Store(nil)
	}
}

// dump is the state of each name.
func (d *dnsCluster) dump() []DNSDump {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]DNSDump, 0, len(d.watchers))
	for _, w := range d.watchers {
		st := w.State()
		dd := DNSDump{Host: w.Name(), Addresses: st.Addrs, Stale: st.Stale, Resolved: st.Resolved}
		if st.Err != nil {
			dd.Error = st.Err.Error()
		}
		out = append(out, dd)
	}
	return out
}

// DNSDump is the state of one name of a DNS cluster.
type DNSDump struct {
	Host      string       `json:"host"`
	Addresses []netip.Addr `json:"addresses"`
	Resolved  time.Time    `json:"resolved,omitzero"`
	Stale     bool         `json:"stale,omitempty"`
	Error     string       `json:"error,omitempty"`
}
