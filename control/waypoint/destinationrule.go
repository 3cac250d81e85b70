package waypoint

import (
	"fmt"
	"math"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/pkg/mesh"
)

const kindDR = "DestinationRule"

// destinationRule is the DestinationRule that applies to one host.
type destinationRule struct {
	obj     *networkingv1.DestinationRule
	subsets map[string]*networkingapi.Subset
}

// clusterRef names an upstream cluster: a service port and optional subset.
type clusterRef struct {
	svc    *service
	port   uint32
	subset string
}

func (r clusterRef) name() string { return mesh.OutboundCluster(r.svc.fqdn, r.port, r.subset) }

// indexDestinationRules picks one DestinationRule per host: the oldest.
func (t *translator) indexDestinationRules(drs []*networkingv1.DestinationRule) {
	drs = slices.DeleteFunc(slices.Clone(drs), func(d *networkingv1.DestinationRule) bool { return d == nil })
	slices.SortFunc(drs, func(a, b *networkingv1.DestinationRule) int { return olderFirst(&a.ObjectMeta, &b.ObjectMeta) })
	for _, dr := range drs {
		spec := &dr.Spec
		if exportRestricted(spec.ExportTo) {
			t.problem(kindDR, dr.Namespace, dr.Name, "spec.exportTo: %v is not supported; the DestinationRule applies to clients of every namespace", spec.ExportTo)
		}
		if spec.WorkloadSelector != nil {
			t.problem(kindDR, dr.Namespace, dr.Name, "spec.workloadSelector: applies to sidecars only; ignored by waypoints")
			continue
		}
		if strings.Contains(spec.Host, "*") {
			t.problem(kindDR, dr.Namespace, dr.Name, "spec.host: wildcard host %q is not supported; ignored", spec.Host)
			continue
		}
		svc := t.resolveHost(spec.Host, dr.Namespace)
		if svc == nil {
			t.problem(kindDR, dr.Namespace, dr.Name, "spec.host: %q is not a Service of the mesh; ignored", spec.Host)
			continue
		}
		if prev := t.destinationRules[svc.fqdn]; prev != nil {
			t.problem(kindDR, dr.Namespace, dr.Name, "spec.host: %s already has the older DestinationRule %s/%s; ignored",
				svc.fqdn, prev.obj.Namespace, prev.obj.Name)
			continue
		}
		d := &destinationRule{obj: dr, subsets: map[string]*networkingapi.Subset{}}
		t.checkPolicy(dr, "spec.trafficPolicy", spec.TrafficPolicy)
		for i, ss := range spec.Subsets {
			path := fmt.Sprintf("spec.subsets[%d]", i)
			switch {
			case ss == nil:
				continue
			case ss.Name == "":
				t.problem(kindDR, dr.Namespace, dr.Name, "%s.name: empty; subset ignored", path)
				continue
			case d.subsets[ss.Name] != nil:
				t.problem(kindDR, dr.Namespace, dr.Name, "%s.name: duplicate subset %q; ignored", path, ss.Name)
				continue
			case strings.Contains(ss.Name, "|"):
				t.problem(kindDR, dr.Namespace, dr.Name, "%s.name: %q contains '|'; subset ignored", path, ss.Name)
				continue
			}
			t.checkPolicy(dr, path+".trafficPolicy", ss.TrafficPolicy)
			d.subsets[ss.Name] = ss
		}
		t.destinationRules[svc.fqdn] = d
	}
}

// checkPolicy reports the parts of a traffic policy that are not
// translated. They are ignored; the rest applies.
func (t *translator) checkPolicy(dr *networkingv1.DestinationRule, path string, tp *networkingapi.TrafficPolicy) {
	if tp == nil {
		return
	}
	p := func(format string, args ...any) { t.problem(kindDR, dr.Namespace, dr.Name, format, args...) }
	checkSettings(p, path, tp)
	for i, pl := range tp.PortLevelSettings {
		if pl.GetPort().GetNumber() == 0 {
			p("%s.portLevelSettings[%d].port: missing; ignored", path, i)
			continue
		}
		checkSettings(p, fmt.Sprintf("%s.portLevelSettings[%d]", path, i), pl)
	}
	if tp.Tunnel != nil || tp.ProxyProtocol != nil || tp.RetryBudget != nil {
		p("%s: tunnel, proxyProtocol and retryBudget are not supported; ignored", path)
	}
}

// policy is the effective traffic policy of one cluster.
type policy struct {
	lb      *networkingapi.LoadBalancerSettings
	pool    *networkingapi.ConnectionPoolSettings
	outlier *networkingapi.OutlierDetection
	tls     *networkingapi.ClientTLSSettings
}

// apply overrides p's fields with those tp sets, as Istio merges a subset's
// policy over the top-level one, and port-level settings over both.
func (p *policy) apply(tp *networkingapi.TrafficPolicy, port uint32) {
	if tp == nil {
		return
	}
	p.override(tp)
	for _, pl := range tp.PortLevelSettings {
		if pl.GetPort().GetNumber() != port || port == 0 {
			continue
		}
		p.override(pl)
		break
	}
}

// policySettings are the fields a TrafficPolicy and its port-level
// settings both have.
type policySettings interface {
	GetLoadBalancer() *networkingapi.LoadBalancerSettings
	GetConnectionPool() *networkingapi.ConnectionPoolSettings
	GetOutlierDetection() *networkingapi.OutlierDetection
	GetTls() *networkingapi.ClientTLSSettings
}

// override replaces each of p's fields that s sets.
func (p *policy) override(s policySettings) {
	if lb := s.GetLoadBalancer(); lb != nil {
		p.lb = lb
	}
	if pool := s.GetConnectionPool(); pool != nil {
		p.pool = pool
	}
	if outlier := s.GetOutlierDetection(); outlier != nil {
		p.outlier = outlier
	}
	if tls := s.GetTls(); tls != nil {
		p.tls = tls
	}
}

func (t *translator) policyFor(ref clusterRef) policy {
	var p policy
	dr := t.destinationRules[ref.svc.fqdn]
	if dr == nil {
		return p
	}
	p.apply(dr.obj.Spec.TrafficPolicy, ref.port)
	if ss := dr.subsets[ref.subset]; ss != nil {
		p.apply(ss.TrafficPolicy, ref.port)
	}
	return p
}

// hashPolicy is the route hash policy a consistentHash load balancer needs,
// nil for none.
func (t *translator) hashPolicy(ref clusterRef) *routev3.RouteAction_HashPolicy {
	ch := t.policyFor(ref).lb.GetConsistentHash()
	if ch == nil || !validHashKey(ch) {
		return nil
	}
	switch k := ch.HashKey.(type) {
	case *networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: strings.ToLower(k.HttpHeaderName)}}}
	case *networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpCookie:
		c := &routev3.RouteAction_HashPolicy_Cookie{Name: k.HttpCookie.GetName(), Path: k.HttpCookie.GetPath()}
		if ttl := k.HttpCookie.GetTtl(); ttl != nil && ttl.AsDuration() >= 0 {
			c.Ttl = durationpb.New(ttl.AsDuration())
		}
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: c}}
	case *networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName:
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_QueryParameter_{
			QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: k.HttpQueryParameterName}}}
	case *networkingapi.LoadBalancerSettings_ConsistentHashLB_UseSourceIp:
		if !k.UseSourceIp {
			return nil
		}
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
			ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}}
	}
	return nil
}

// subsetClusters lists the clusters Istio creates for a host: one per port
// and subset of its DestinationRule (HTTP ports only when httpOnly).
func (t *translator) subsetClusters(svc *service, httpOnly bool) []clusterRef {
	dr := t.destinationRules[svc.fqdn]
	if dr == nil {
		return nil
	}
	var out []clusterRef
	for _, p := range svc.ports {
		if httpOnly && t.ports[endpointKey(svc.fqdn, p.number)].tcp {
			continue
		}
		for name := range dr.subsets {
			out = append(out, clusterRef{svc: svc, port: p.number, subset: name})
		}
	}
	return out
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

// cluster builds the EDS cluster of ref. forGRPC replaces load balancers
// gRPC clients lack (RANDOM) with ROUND_ROBIN.
func (t *translator) cluster(ref clusterRef, forGRPC bool) *clusterv3.Cluster {
	p := t.policyFor(ref)
	name := ref.name()
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: name},
		ConnectTimeout:       durationpb.New(10e9),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
	if p.lb != nil {
		switch {
		case p.lb.GetConsistentHash() != nil:
			c.LbPolicy = clusterv3.Cluster_RING_HASH
		// LEAST_CONN is Istio's deprecated name of LEAST_REQUEST.
		//lint:ignore SA1019 users still write the deprecated value; it is honoured
		case p.lb.GetSimple() == networkingapi.LoadBalancerSettings_LEAST_REQUEST || p.lb.GetSimple() == networkingapi.LoadBalancerSettings_LEAST_CONN:
			c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		case p.lb.GetSimple() == networkingapi.LoadBalancerSettings_RANDOM && !forGRPC:
			c.LbPolicy = clusterv3.Cluster_RANDOM
		}
	}
	// Istio lifts Envoy's default limits (1024) unless the
	// DestinationRule sets them.
	th := &clusterv3.CircuitBreakers_Thresholds{
		MaxConnections:     wrapperspb.UInt32(math.MaxUint32),
		MaxPendingRequests: wrapperspb.UInt32(math.MaxUint32),
		MaxRequests:        wrapperspb.UInt32(math.MaxUint32),
	}
	if tcp := p.pool.GetTcp(); tcp != nil {
		if tcp.MaxConnections > 0 {
			th.MaxConnections = wrapperspb.UInt32(uint32(tcp.MaxConnections))
		}
		if validDuration(tcp.ConnectTimeout) {
			c.ConnectTimeout = durationpb.New(tcp.ConnectTimeout.AsDuration())
		}
	}
	if h := p.pool.GetHttp(); h != nil {
		if h.Http1MaxPendingRequests > 0 {
			th.MaxPendingRequests = wrapperspb.UInt32(uint32(h.Http1MaxPendingRequests))
		}
		if h.Http2MaxRequests > 0 {
			th.MaxRequests = wrapperspb.UInt32(uint32(h.Http2MaxRequests))
		}
		if h.MaxRequestsPerConnection > 0 {
			opts := &upstreamhttpv3.HttpProtocolOptions{
				CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{
					MaxRequestsPerConnection: wrapperspb.UInt32(uint32(h.MaxRequestsPerConnection)),
				},
				UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
					UseDownstreamProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_UseDownstreamHttpConfig{},
				},
			}
			c.TypedExtensionProtocolOptions = map[string]*anyMsg{mesh.HTTPProtocolOptionsKey: mustAny(opts)}
		}
	}
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{th}}
	if originates(p.tls) && !forGRPC {
		c.TransportSocket = originateTLS(p.tls, ref.svc.fqdn)
	}
	if p.outlier != nil {
		c.OutlierDetection = outlierDetection(p.outlier)
	}
	// As istiod: locality weights count whenever locality load balancing
	// is on (they are the endpoint counts unless distribute sets them).
	// gRPC clients get no priorities or distribute weights, so nothing.
	if !forGRPC && t.localitySetting(ref) != nil {
		c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
			LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{}}}
	}
	// A DNS ServiceEntry host: the proxy resolves it (gRPC clients get the
	// EDS cluster with the endpoints that are IP addresses).
	if ref.svc.dns != nil && !forGRPC {
		ref.svc.dns.dnsCluster(c, ref.port, t.subsetSelector(ref))
	}
	return c
}

// subsetSelector is the labels of ref's subset (nil: every endpoint).
func (t *translator) subsetSelector(ref clusterRef) map[string]string {
	if ref.subset != "" {
		if dr := t.destinationRules[ref.svc.fqdn]; dr != nil && dr.subsets[ref.subset] != nil {
			return dr.subsets[ref.subset].Labels
		}
	}
	return nil
}

// outlierDetection translates od; values checkOutlier reports are left to
// Envoy's defaults.
func outlierDetection(od *networkingapi.OutlierDetection) *clusterv3.OutlierDetection {
	o := &clusterv3.OutlierDetection{}
	if v := od.Consecutive_5XxErrors; v != nil {
		o.Consecutive_5Xx = wrapperspb.UInt32(v.Value)
		if v.Value == 0 {
			o.EnforcingConsecutive_5Xx = wrapperspb.UInt32(0)
		}
	}
	if validDuration(od.Interval) {
		o.Interval = durationpb.New(od.Interval.AsDuration())
	}
	if validDuration(od.BaseEjectionTime) {
		o.BaseEjectionTime = durationpb.New(od.BaseEjectionTime.AsDuration())
	}
	if od.MaxEjectionPercent > 0 && validPercent(od.MaxEjectionPercent) {
		o.MaxEjectionPercent = wrapperspb.UInt32(uint32(od.MaxEjectionPercent))
	}
	return o
}

// passthrough is the ORIGINAL_DST cluster of workload chains.
func passthrough() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 passthroughCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		ConnectTimeout:       durationpb.New(10e9),
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
	}
}

// loadAssignment lists the endpoints of ref: the workloads serving the port,
// restricted to the subset's labels, one LocalityLbEndpoints per locality
// with the priorities and weights of the locality load balancing proxy
// gets. plain drops the tunnel metadata (gRPC clients cannot do HBONE).
func (t *translator) loadAssignment(ref clusterRef, plain bool, proxy *proxyLocality) *endpointv3.ClusterLoadAssignment {
	selector := t.subsetSelector(ref)
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: ref.name()}
	var lbs []*endpointv3.LbEndpoint
	var locs []*corev3.Locality
	var labels []map[string]string
	for _, ep := range t.endpoints[endpointKey(ref.svc.fqdn, ref.port)] {
		if !matchLabels(selector, t.podLabels[ep.workload.Uid]) {
			continue
		}
		lb := &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: socketAddress(ep.ip, ep.port),
			}},
			HealthStatus: corev3.HealthStatus_HEALTHY,
		}
		if ep.workload.Status == workloadv1.WorkloadStatus_UNHEALTHY {
			lb.HealthStatus = corev3.HealthStatus_UNHEALTHY
		}
		if !plain {
			lb.Metadata = t.endpointMetadata(ep.workload)
		}
		lbs = append(lbs, lb)
		locs = append(locs, localityOf(ep.workload))
		labels = append(labels, t.localityLabels(ep.workload))
	}
	// Each locality has a weight (its endpoints): grpc-go rejects a
	// locality without one and ignores weight 0; Envoy accepts both forms.
	for _, g := range t.applyLocality(ref, groupByLocality(lbs, locs, labels), proxy) {
		cla.Endpoints = append(cla.Endpoints, g.lle)
	}
	return cla
}

func (t *translator) endpointMetadata(w *workloadv1.Workload) *corev3.Metadata {
	tunnel := "NONE"
	if w.TunnelProtocol == workloadv1.TunnelProtocol_HBONE {
		tunnel = mesh.HBONEProtocol
	}
	td := w.TrustDomain
	if td == "" {
		td = t.cfg.TrustDomain
	}
	name := w.WorkloadName
	if name == "" {
		name = w.Name
	}
	fields := map[string]*structpb.Value{
		"tunnel":    structpb.NewStringValue(tunnel),
		"identity":  structpb.NewStringValue(spiffeID(td, w.Namespace, w.ServiceAccount)),
		"workload":  structpb.NewStringValue(name),
		"namespace": structpb.NewStringValue(w.Namespace),
	}
	if w.CanonicalRevision != "" {
		fields["version"] = structpb.NewStringValue(w.CanonicalRevision)
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{mesh.MetadataNamespace: {Fields: fields}}}
}

func spiffeID(td, ns, sa string) string {
	if sa == "" {
		sa = "default"
	}
	return "spiffe://" + td + "/ns/" + ns + "/sa/" + sa
}

// matchLabels: every selector label is in labels; an empty selector matches.
func matchLabels(selector, labels map[string]string) bool {
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       ip,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// exportRestricted is whether exportTo limits visibility ("*", or nothing,
// is every namespace). Weft does not scope configuration by namespace yet,
// so a restriction is reported rather than silently widened.
func exportRestricted(exportTo []string) bool {
	return len(exportTo) > 0 && !slices.Contains(exportTo, "*")
}
