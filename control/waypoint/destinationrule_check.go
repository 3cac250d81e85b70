package waypoint

import (
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/types/known/durationpb"
	networkingapi "istio.io/api/networking/v1alpha3"
)

// Checks of the settings a TrafficPolicy, a subset's TrafficPolicy and
// their portLevelSettings share: one function per concept. A value Istio's
// webhook would reject, or one the waypoint does not act on, is reported
// with its field path and what Weft does instead; cluster() and
// hashPolicy() apply only the values these checks accept.

// problemf records a Problem on the object being checked.
type problemf func(format string, args ...any)

// checkSettings reports on one TrafficPolicy or PortTrafficPolicy at path.
func checkSettings(p problemf, path string, s policySettings) {
	checkPool(p, path+".connectionPool", s.GetConnectionPool())
	checkLB(p, path+".loadBalancer", s.GetLoadBalancer())
	checkOutlier(p, path+".outlierDetection", s.GetOutlierDetection())
	checkTLS(p, path, s.GetTls())
}

// validDuration is Istio's rule for DestinationRule durations (at least
// 1ms); a shorter or negative one is ignored.
func validDuration(d *durationpb.Duration) bool {
	return d != nil && d.AsDuration() >= time.Millisecond
}

// checkDuration reports a set duration validDuration refuses; def is the
// value used instead.
func checkDuration(p problemf, path string, d *durationpb.Duration, def string) {
	if d != nil && !validDuration(d) {
		p("%s: %v is shorter than 1ms; ignored (default %s)", path, d.AsDuration(), def)
	}
}

// checkLimit reports a negative limit. Zero cannot be told from unset
// (proto3 scalars have no presence); both mean "no limit", as in Istio.
func checkLimit(p problemf, path string, v int32) {
	if v < 0 {
		p("%s: %d is negative; ignored (no limit)", path, v)
	}
}

func checkPool(p problemf, path string, pool *networkingapi.ConnectionPoolSettings) {
	if tcp := pool.GetTcp(); tcp != nil {
		if tcp.TcpKeepalive != nil || tcp.MaxConnectionDuration != nil || tcp.IdleTimeout != nil {
			p("%s.tcp: only maxConnections and connectTimeout are supported; tcpKeepalive, maxConnectionDuration and idleTimeout are ignored", path)
		}
		checkLimit(p, path+".tcp.maxConnections", tcp.MaxConnections)
		checkDuration(p, path+".tcp.connectTimeout", tcp.ConnectTimeout, "10s")
	}
	if h := pool.GetHttp(); h != nil {
		if h.IdleTimeout != nil || h.MaxRetries != 0 || h.H2UpgradePolicy != networkingapi.ConnectionPoolSettings_HTTPSettings_DEFAULT ||
			h.UseClientProtocol || h.MaxConcurrentStreams != 0 || h.Http2KeepAlive != nil {
			p("%s.http: only http1MaxPendingRequests, http2MaxRequests and maxRequestsPerConnection are supported; idleTimeout, maxRetries, h2UpgradePolicy, useClientProtocol, maxConcurrentStreams and http2KeepAlive are ignored", path)
		}
		checkLimit(p, path+".http.http1MaxPendingRequests", h.Http1MaxPendingRequests)
		checkLimit(p, path+".http.http2MaxRequests", h.Http2MaxRequests)
		checkLimit(p, path+".http.maxRequestsPerConnection", h.MaxRequestsPerConnection)
	}
}

func checkLB(p problemf, path string, lb *networkingapi.LoadBalancerSettings) {
	if lb == nil {
		return
	}
	if _, isSimple := lb.LbPolicy.(*networkingapi.LoadBalancerSettings_Simple); isSimple {
		switch s := lb.GetSimple(); {
		case s == networkingapi.LoadBalancerSettings_PASSTHROUGH:
			p("%s.simple: PASSTHROUGH is not supported; using ROUND_ROBIN", path)
		case networkingapi.LoadBalancerSettings_SimpleLB_name[int32(s)] == "":
			p("%s.simple: unknown value %d; using ROUND_ROBIN", path, s)
		}
	}
	checkHash(p, path+".consistentHash", lb.GetConsistentHash())
	checkLocality(p, path+".localityLbSetting", lb.LocalityLbSetting)
	//lint:ignore SA1019 users still write the deprecated field; it is honoured or reported
	if lb.ZoneAwareLbSetting != nil || lb.WarmupDurationSecs != nil || lb.Warmup != nil {
		p("%s: zone-aware and warmup settings are not supported; ignored", path)
	}
}

// checkLocality reports what Istio's validation rejects in a locality
// setting, and how the translation reads it anyway.
func checkLocality(p func(string, ...any), path string, s *networkingapi.LocalityLoadBalancerSetting) {
	if s == nil {
		return
	}
	if len(s.Distribute) > 0 && len(s.Failover) > 0 {
		p("%s: distribute and failover are exclusive; failover ignored", path)
	}
	for i, d := range s.GetDistribute() {
		sum := uint32(0)
		for _, w := range d.GetTo() {
			sum += w
		}
		if sum != 100 {
			p("%s.distribute[%d].to: weights add up to %d, not 100; used as relative weights", path, i, sum)
		}
	}
	for i, f := range s.GetFailover() {
		switch {
		case strings.ContainsAny(f.GetFrom()+f.GetTo(), "/*"):
			p("%s.failover[%d]: from and to are regions (no '/' or '*'); the rule never matches", path, i)
		case f.GetFrom() == f.GetTo():
			p("%s.failover[%d]: from and to are the same region %q; the rule has no effect", path, i, f.GetFrom())
		}
	}
}

// checkHash reports the hash keys hashPolicy does not turn into a route
// hash policy, and the ring settings cluster() does not read.
func checkHash(p problemf, path string, ch *networkingapi.LoadBalancerSettings_ConsistentHashLB) {
	if ch == nil {
		return
	}
	switch k := ch.HashKey.(type) {
	case *networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
		if !validHashKey(ch) {
			p("%s.httpHeaderName: %q is not a header name; requests are not hashed", path, k.HttpHeaderName)
		}
	case *networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpCookie:
		if !validHashKey(ch) {
			p("%s.httpCookie.name: empty; requests are not hashed", path)
		} else if ttl := k.HttpCookie.GetTtl(); ttl != nil && ttl.AsDuration() < 0 {
			p("%s.httpCookie.ttl: %v is negative; ignored (no cookie is generated)", path, ttl.AsDuration())
		}
	case *networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName:
		if !validHashKey(ch) {
			p("%s.httpQueryParameterName: empty; requests are not hashed", path)
		}
	case *networkingapi.LoadBalancerSettings_ConsistentHashLB_UseSourceIp:
		if !k.UseSourceIp {
			p("%s.useSourceIp: false; requests are not hashed", path)
		}
	case nil:
		p("%s: no hash key (httpHeaderName, httpCookie, httpQueryParameterName, useSourceIp); requests are not hashed", path)
	}
	if ch.GetMaglev() != nil {
		p("%s.maglev: not supported; using a ring hash", path)
	}
	//lint:ignore SA1019 users still write the deprecated field; it is reported
	if ch.GetRingHash().GetMinimumRingSize() != 0 || ch.MinimumRingSize != 0 {
		p("%s: minimumRingSize is not supported; the ring has at least 1024 entries", path)
	}
}

// validHashKey reports whether a header, cookie or query parameter hash key is one
// Envoy accepts (a non-empty header token, cookie or parameter name); a route
// with an invalid one would make the proxies refuse the whole route
// configuration, other tenants' routes included.
func validHashKey(ch *networkingapi.LoadBalancerSettings_ConsistentHashLB) bool {
	switch k := ch.HashKey.(type) {
	case *networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
		return httpguts.ValidHeaderFieldName(k.HttpHeaderName)
	case *networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpCookie:
		return k.HttpCookie.GetName() != ""
	case *networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName:
		return k.HttpQueryParameterName != ""
	}
	return true
}

func checkOutlier(p problemf, path string, od *networkingapi.OutlierDetection) {
	if od == nil {
		return
	}
	//lint:ignore SA1019 users still write the deprecated field; it is honoured or reported
	if od.ConsecutiveErrors != 0 || od.ConsecutiveGatewayErrors != nil || od.ConsecutiveLocalOriginFailures != nil ||
		od.MinHealthPercent != 0 || od.SplitExternalLocalOriginErrors || len(od.OutlierDetectionHttpErrorCodes) > 0 {
		p("%s: only consecutive5xxErrors, interval, baseEjectionTime and maxEjectionPercent are supported; the rest is ignored", path)
	}
	checkDuration(p, path+".interval", od.Interval, "10s")
	checkDuration(p, path+".baseEjectionTime", od.BaseEjectionTime, "30s")
	if !validPercent(od.MaxEjectionPercent) {
		p("%s.maxEjectionPercent: %d is outside 0-100; ignored (default 10)", path, od.MaxEjectionPercent)
	}
}

// validPercent: a percentage of hosts, 0 to 100.
func validPercent(v int32) bool { return v >= 0 && v <= 100 }
