package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// Envoy's defaults where the Cluster leaves a field unset.
const (
	defaultThreshold        = 1024
	defaultConsecutive5xx   = 5
	defaultOutlierInterval  = 10 * time.Second
	defaultBaseEjectionTime = 30 * time.Second
	defaultMaxEjectionTime  = 300 * time.Second
	defaultMaxEjectionPct   = 10
	defaultMinRingSize      = 1024
	maxRingSize             = 1 << 23
)

type lbPolicy int

const (
	lbRoundRobin lbPolicy = iota
	lbLeastRequest
	lbRandom
	lbRingHash
)

func (p lbPolicy) String() string {
	return [...]string{"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH"}[p]
}

// clusterSettings is the compiled, immutable form of a Cluster.
type clusterSettings struct {
	name                                    string
	originalDst                             bool
	lb                                      lbPolicy
	choiceCount                             int
	minRingSize                             int
	connectTimeout                          time.Duration
	maxConnections, maxPending, maxRequests int64
	maxRequestsPerConn                      int
	upstreamH2                              *bool // nil: the downstream protocol
	// localityWeighted: common_lb_config.locality_weighted_lb_config; a
	// priority's traffic is split among its localities by their weights.
	localityWeighted bool
	outlier          *outlierSettings
	tls              *tls.Config // originate TLS (HTTP chains); nil: none
	// tlsID identifies the TLS settings (a hash of the transport socket):
	// a connection made with others is never reused after an update.
	tlsID uint64
	dns   *dnsSettings // STRICT_DNS, LOGICAL_DNS; nil: EDS, ORIGINAL_DST
}

type outlierSettings struct {
	consecutive5xx int64
	interval       time.Duration
	baseEjection   time.Duration
	maxEjection    time.Duration
	maxEjectionPct int
}

func durOr(d interface {
	AsDuration() time.Duration
	IsValid() bool
}, def time.Duration) time.Duration {
	if d == nil || !d.IsValid() {
		return def
	}
	if v := d.AsDuration(); v > 0 {
		return v
	}
	return def
}

func compileCluster(c *clusterv3.Cluster, certs Certificates) (*clusterSettings, error) {
	s := &clusterSettings{name: c.GetName(), maxConnections: defaultThreshold, maxPending: defaultThreshold,
		maxRequests: defaultThreshold, connectTimeout: 10 * time.Second, choiceCount: 2, minRingSize: defaultMinRingSize}
	if s.name == "" {
		return nil, errors.New("cluster has no name")
	}
	switch c.GetType() {
	case clusterv3.Cluster_EDS:
	case clusterv3.Cluster_ORIGINAL_DST:
		s.originalDst = true
	case clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
		var err error
		if s.dns, err = compileDNS(c, c.GetType() == clusterv3.Cluster_LOGICAL_DNS); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("cluster type %s is not supported (want EDS, STRICT_DNS, LOGICAL_DNS or ORIGINAL_DST)", c.GetType())
	}
	if c.GetConnectTimeout() != nil {
		s.connectTimeout = durOr(c.GetConnectTimeout(), s.connectTimeout)
	}
	if err := s.compileLB(c); err != nil {
		return nil, err
	}
	s.localityWeighted = c.GetCommonLbConfig().GetLocalityWeightedLbConfig() != nil
	s.compileCircuitBreakers(c.GetCircuitBreakers())
	if err := s.compileHTTPOptions(c); err != nil {
		return nil, err
	}
	var err error
	if s.tls, err = compileUpstreamTLS(c.GetTransportSocket(), certs); err != nil {
		return nil, err
	}
	if s.tls != nil {
		s.tlsID = protoHash(c.GetTransportSocket()) | 1 // 0: no TLS
	}
	if s.outlier, err = compileOutlier(c.GetOutlierDetection()); err != nil {
		return nil, err
	}
	return s, nil
}

// compileLB sets the load-balancing policy and its tuning.
func (s *clusterSettings) compileLB(c *clusterv3.Cluster) error {
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		s.lb = lbRoundRobin
	case clusterv3.Cluster_LEAST_REQUEST:
		s.lb = lbLeastRequest
		if n := c.GetLeastRequestLbConfig().GetChoiceCount(); n != nil && n.GetValue() >= 2 {
			s.choiceCount = int(n.GetValue())
		}
	case clusterv3.Cluster_RANDOM:
		s.lb = lbRandom
	case clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV:
		s.lb = lbRingHash
		if n := c.GetRingHashLbConfig().GetMinimumRingSize(); n != nil && n.GetValue() > 0 {
			s.minRingSize = int(min(n.GetValue(), maxRingSize))
		}
	case clusterv3.Cluster_CLUSTER_PROVIDED:
		if !s.originalDst {
			return errors.New("lb_policy CLUSTER_PROVIDED is only valid for ORIGINAL_DST clusters")
		}
	default:
		return fmt.Errorf("lb_policy %s is not supported (want ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV)", c.GetLbPolicy())
	}
	return nil
}

// compileCircuitBreakers sets the limits of the default-priority
// thresholds; the other priorities do not apply to the waypoint.
func (s *clusterSettings) compileCircuitBreakers(cb *clusterv3.CircuitBreakers) {
	for _, t := range cb.GetThresholds() {
		if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
			continue
		}
		if v := t.GetMaxConnections(); v != nil {
			s.maxConnections = int64(v.GetValue())
		}
		if v := t.GetMaxPendingRequests(); v != nil {
			s.maxPending = int64(v.GetValue())
		}
		if v := t.GetMaxRequests(); v != nil {
			s.maxRequests = int64(v.GetValue())
		}
	}
}

// compileHTTPOptions reads the upstream HttpProtocolOptions: requests per
// connection and an explicit HTTP version.
func (s *clusterSettings) compileHTTPOptions(c *clusterv3.Cluster) error {
	a := c.GetTypedExtensionProtocolOptions()[mesh.HTTPProtocolOptionsKey]
	if a == nil {
		return nil
	}
	var o httpv3.HttpProtocolOptions
	if err := a.UnmarshalTo(&o); err != nil {
		return fmt.Errorf("typed_extension_protocol_options[%s]: %w", mesh.HTTPProtocolOptionsKey, err)
	}
	if v := o.GetCommonHttpProtocolOptions().GetMaxRequestsPerConnection(); v != nil {
		s.maxRequestsPerConn = int(v.GetValue())
	}
	if e := o.GetExplicitHttpConfig(); e != nil {
		h2 := e.GetHttp2ProtocolOptions() != nil
		s.upstreamH2 = &h2
	}
	return nil
}

// compileOutlier compiles outlier detection with Envoy's defaults; nil
// (no detection) when absent or consecutive_5xx is 0.
func compileOutlier(od *clusterv3.OutlierDetection) (*outlierSettings, error) {
	if od == nil {
		return nil, nil
	}
	o := &outlierSettings{consecutive5xx: defaultConsecutive5xx, maxEjectionPct: defaultMaxEjectionPct}
	if v := od.GetConsecutive_5Xx(); v != nil {
		o.consecutive5xx = int64(v.GetValue())
	}
	o.interval = durOr(od.GetInterval(), defaultOutlierInterval)
	o.baseEjection = durOr(od.GetBaseEjectionTime(), defaultBaseEjectionTime)
	o.maxEjection = max(durOr(od.GetMaxEjectionTime(), defaultMaxEjectionTime), o.baseEjection)
	if v := od.GetMaxEjectionPercent(); v != nil {
		if v.GetValue() > 100 {
			return nil, fmt.Errorf("outlier_detection.max_ejection_percent %d > 100", v.GetValue())
		}
		o.maxEjectionPct = int(v.GetValue())
	}
	if o.consecutive5xx <= 0 {
		return nil, nil
	}
	return o, nil
}

// endpointMeta is filter_metadata["weft"] of one lb_endpoint.
type endpointMeta struct {
	HBONE    bool        `json:"hbone"`
	Identity spiffeid.ID `json:"identity"`
	// TunnelTarget is the HBONE CONNECT's target when it is not the
	// endpoint (mesh.MetadataTunnelTarget); zero: the endpoint.
	TunnelTarget netip.AddrPort `json:"tunnelTarget,omitzero"`
	Workload     string         `json:"workload,omitempty"`
	Namespace    string         `json:"namespace,omitempty"`
	Version      string         `json:"version,omitempty"`
}

// endpoint is one address of a cluster. Its state (load, outlier) is
// shared by every version of the endpoint with the same address.
type endpoint struct {
	addr    netip.AddrPort
	meta    endpointMeta
	healthy bool
	st      *endpointState
	// The endpoint's LocalityLbEndpoints: its priority, its locality
	// (index into the CLA's list) and that locality's weight.
	priority       uint32
	locality       int
	localityWeight uint32
	// key caches the endpoint's pool key for the cluster's TLS settings
	// of the last request (poolKeyOf): no formatting per request.
	key atomic.Pointer[cachedKey]
}

type cachedKey struct {
	tlsID uint64
	key   string
}

type endpointState struct {
	active atomic.Int64 // outstanding requests (LEAST_REQUEST)

	mu           sync.Mutex
	consecutive  int64
	ejectedUntil time.Time
	ejections    int
}

func (e *endpoint) ejected(now time.Time) bool {
	e.st.mu.Lock()
	defer e.st.mu.Unlock()
	return now.Before(e.st.ejectedUntil)
}

func compileEndpoints(cla *endpointv3.ClusterLoadAssignment) ([]*endpoint, error) {
	var out []*endpoint
	var errs []error
	seen := map[netip.AddrPort]bool{}
	for li, loc := range cla.GetEndpoints() {
		for i, le := range loc.GetLbEndpoints() {
			sa := le.GetEndpoint().GetAddress().GetSocketAddress()
			a, err := netip.ParseAddr(sa.GetAddress())
			if err != nil || sa.GetPortValue() == 0 || sa.GetPortValue() > 65535 {
				errs = append(errs, fmt.Errorf("lb_endpoint %d: address %q port %d: want an IP and a port", i, sa.GetAddress(), sa.GetPortValue()))
				continue
			}
			e := &endpoint{addr: netip.AddrPortFrom(a.Unmap(), uint16(sa.GetPortValue())),
				priority: loc.GetPriority(), locality: li, localityWeight: loc.GetLoadBalancingWeight().GetValue()}
			if seen[e.addr] {
				continue
			}
			seen[e.addr] = true
			switch le.GetHealthStatus() {
			case corev3.HealthStatus_HEALTHY, corev3.HealthStatus_UNKNOWN:
				e.healthy = true
			}
			if md := le.GetMetadata().GetFilterMetadata()[mesh.MetadataNamespace]; md != nil {
				f := md.GetFields()
				switch t := f["tunnel"].GetStringValue(); t {
				case mesh.HBONEProtocol:
					e.meta.HBONE = true
				case "NONE", "":
				default:
					errs = append(errs, fmt.Errorf("endpoint %s: tunnel %q (want HBONE or NONE)", e.addr, t))
					continue
				}
				if id := f["identity"].GetStringValue(); id != "" {
					if e.meta.Identity, err = spiffeid.FromString(id); err != nil {
						errs = append(errs, fmt.Errorf("endpoint %s: identity %q: %w", e.addr, id, err))
						continue
					}
				}
				if tt := f[mesh.MetadataTunnelTarget].GetStringValue(); tt != "" {
					if e.meta.TunnelTarget, err = netip.ParseAddrPort(tt); err != nil || !e.meta.HBONE {
						errs = append(errs, fmt.Errorf("endpoint %s: %s %q: want <ip>:<port> of an HBONE endpoint", e.addr, mesh.MetadataTunnelTarget, tt))
						continue
					}
				}
				e.meta.Workload = f["workload"].GetStringValue()
				e.meta.Namespace = f["namespace"].GetStringValue()
				e.meta.Version = f["version"].GetStringValue()
			}
			if e.meta.HBONE && e.meta.Identity.IsZero() {
				errs = append(errs, fmt.Errorf("endpoint %s: HBONE tunnel needs an identity to verify", e.addr))
				continue
			}
			out = append(out, e)
		}
	}
	return out, errors.Join(errs...)
}

// cluster is the runtime of one Cluster: it outlives snapshots so load,
// ejections and circuit-breaker counts carry over config updates.
type cluster struct {
	name     string
	settings atomic.Pointer[clusterSettings]
	eps      atomic.Pointer[[]*endpoint]
	// levels are eps by priority (ascending), then locality.
	levels atomic.Pointer[[]priorityLevel]

	mu     sync.Mutex
	states map[netip.AddrPort]*endpointState
	ring   atomic.Pointer[ring]

	// dnsErr is why a DNS cluster lacks addresses (nil: every name has
	// some), for the error of a request that finds no endpoint.
	dnsErr atomic.Pointer[error]

	rr                       atomic.Uint64
	requests, conns, pending atomic.Int64
	connFree                 chan struct{} // signalled when a connection slot frees
	stats                    clusterStats
}

type clusterStats struct {
	Overflow, NoHealthy, Ejections atomic.Uint64
}

func newCluster(name string) *cluster {
	c := &cluster{name: name, states: map[netip.AddrPort]*endpointState{}, connFree: make(chan struct{})}
	c.eps.Store(&[]*endpoint{})
	c.levels.Store(&[]priorityLevel{})
	return c
}

func (c *cluster) setSettings(s *clusterSettings) { c.settings.Store(s) }

// setEndpoints installs a new endpoint list, carrying over the state of
// addresses already known.
func (c *cluster) setEndpoints(eps []*endpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := map[netip.AddrPort]*endpointState{}
	for _, e := range eps {
		st := c.states[e.addr]
		if st == nil {
			st = &endpointState{}
		}
		e.st = st
		next[e.addr] = st
	}
	c.states = next
	levels := groupLevels(eps)
	c.levels.Store(&levels)
	c.eps.Store(&eps)
}

// available returns the endpoints that may take traffic now.
func (c *cluster) available(now time.Time) []*endpoint { return availableOf(*c.eps.Load(), now) }

// report feeds outlier detection with one result of e: a 5xx status or a
// connect failure (failed=true) or a success.
func (c *cluster) report(e *endpoint, failed bool) {
	o := c.settings.Load().outlier
	if o == nil || e == nil {
		return
	}
	e.st.mu.Lock()
	if !failed {
		e.st.consecutive = 0
		e.st.mu.Unlock()
		return
	}
	e.st.consecutive++
	trip := e.st.consecutive >= o.consecutive5xx
	e.st.mu.Unlock()
	if trip {
		c.eject(e, o)
	}
}

func (c *cluster) eject(e *endpoint, o *outlierSettings) {
	now := time.Now()
	c.mu.Lock() // serialises ejections so max_ejection_percent holds
	defer c.mu.Unlock()
	eps := *c.eps.Load()
	ejected := 0
	for _, x := range eps {
		if x.st != e.st && x.ejected(now) {
			ejected++
		}
	}
	e.st.mu.Lock()
	defer e.st.mu.Unlock()
	if now.Before(e.st.ejectedUntil) {
		return
	}
	e.st.consecutive = 0
	if len(eps) == 0 || (ejected+1)*100 > o.maxEjectionPct*len(eps) {
		return
	}
	// The multiplier decays by one per interval spent un-ejected.
	if e.st.ejections > 0 && !e.st.ejectedUntil.IsZero() {
		decay := int(now.Sub(e.st.ejectedUntil) / o.interval)
		e.st.ejections = max(e.st.ejections-decay, 0)
	}
	e.st.ejections++
	d := min(o.baseEjection*time.Duration(e.st.ejections), o.maxEjection)
	e.st.ejectedUntil = now.Add(d)
	c.stats.Ejections.Add(1)
}

// acquireRequest takes a max_requests slot.
func (c *cluster) acquireRequest() bool {
	if c.requests.Add(1) > c.settings.Load().maxRequests {
		c.requests.Add(-1)
		c.stats.Overflow.Add(1)
		return false
	}
	return true
}

func (c *cluster) releaseRequest() { c.requests.Add(-1) }

// acquireConn takes a max_connections slot, waiting as a pending request
// (bounded by max_pending_requests) when none is free.
func (c *cluster) acquireConn(ctx context.Context) error {
	s := c.settings.Load()
	for {
		n := c.conns.Load()
		if n < s.maxConnections {
			if c.conns.CompareAndSwap(n, n+1) {
				return nil
			}
			continue
		}
		break
	}
	if c.pending.Add(1) > s.maxPending {
		c.pending.Add(-1)
		c.stats.Overflow.Add(1)
		return fmt.Errorf("%w: cluster %s: %d connections busy and %d requests pending", errOverflow, c.name, s.maxConnections, s.maxPending)
	}
	defer c.pending.Add(-1)
	for {
		c.mu.Lock()
		free := c.connFree
		c.mu.Unlock()
		n := c.conns.Load()
		if n < c.settings.Load().maxConnections {
			if c.conns.CompareAndSwap(n, n+1) {
				return nil
			}
			continue
		}
		select {
		case <-free:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *cluster) releaseConn() {
	c.conns.Add(-1)
	c.mu.Lock()
	close(c.connFree)
	c.connFree = make(chan struct{})
	c.mu.Unlock()
}
