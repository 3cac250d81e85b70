package waypoint

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// reviewsFQDN is the Bookinfo service the DestinationRule tests configure.
const reviewsFQDN = "reviews.default.svc.cluster.local"

// translateWith translates the Bookinfo base plus the given objects and
// returns the Problems on objects of kind, as "<name>: <message>".
func translateWith(t *testing.T, kind string, drs []*networkingv1.DestinationRule, vss []*networkingv1.VirtualService) (Output, []string) {
	t.Helper()
	in := loadFiles(t, "testdata/bookinfo.yaml").in
	in.DestinationRules, in.VirtualServices = drs, vss
	out := Translate(Config{}, in)
	var problems []string
	for _, p := range out.Problems {
		if p.Kind == kind {
			problems = append(problems, p.Name+": "+p.Message)
		}
	}
	return out, problems
}

// trafficPolicy decodes a TrafficPolicy written in YAML, as in a manifest.
func trafficPolicy(t *testing.T, s string) *networkingapi.TrafficPolicy {
	t.Helper()
	tp := &networkingapi.TrafficPolicy{}
	if err := yaml.UnmarshalStrict([]byte(s), tp); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return tp
}

// placedPolicies puts tp where a DestinationRule can hold traffic policy
// settings: the top level, a subset, and the port-level settings of each;
// one checking function serves all, and the paths say which was used.
func placedPolicies(tp *networkingapi.TrafficPolicy) map[string]*networkingv1.DestinationRule {
	port := func() *networkingapi.TrafficPolicy {
		return &networkingapi.TrafficPolicy{PortLevelSettings: []*networkingapi.TrafficPolicy_PortTrafficPolicy{{
			Port: &networkingapi.PortSelector{Number: 9080}, LoadBalancer: tp.LoadBalancer,
			ConnectionPool: tp.ConnectionPool, OutlierDetection: tp.OutlierDetection, Tls: tp.Tls,
		}}}
	}
	dr := func(top, subset *networkingapi.TrafficPolicy) *networkingv1.DestinationRule {
		d := &networkingv1.DestinationRule{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "reviews"}}
		d.Spec.Host = "reviews"
		d.Spec.TrafficPolicy = top
		d.Spec.Subsets = []*networkingapi.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}, TrafficPolicy: subset}}
		return d
	}
	return map[string]*networkingv1.DestinationRule{
		"spec.trafficPolicy":                                 dr(tp, nil),
		"spec.trafficPolicy.portLevelSettings[0]":            dr(port(), nil),
		"spec.subsets[0].trafficPolicy":                      dr(nil, tp),
		"spec.subsets[0].trafficPolicy.portLevelSettings[0]": dr(nil, port()),
	}
}

// TestDestinationRuleChecks: every value the translation does not apply is
// reported with its field path and what is used instead, wherever the
// settings are written; a valid policy yields no Problem.
func TestDestinationRuleChecks(t *testing.T) {
	for _, c := range []struct {
		policy string
		want   string // the message after the placement's path; "" for none
	}{
		{"{connectionPool: {tcp: {maxConnections: 100, connectTimeout: 2s}, http: {http1MaxPendingRequests: 10, http2MaxRequests: 10, maxRequestsPerConnection: 1}}}", ""},
		{"{outlierDetection: {consecutive5xxErrors: 0, interval: 1ms, baseEjectionTime: 1m, maxEjectionPercent: 100}}", ""},
		{"{loadBalancer: {simple: LEAST_CONN}}", ""},
		{"{loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 0s}, ringHash: {}}}}", ""},
		{"{connectionPool: {tcp: {maxConnections: -5}}}", ".connectionPool.tcp.maxConnections: -5 is negative; ignored (no limit)"},
		{"{connectionPool: {tcp: {connectTimeout: 0s}}}", ".connectionPool.tcp.connectTimeout: 0s is shorter than 1ms; ignored (default 10s)"},
		{"{connectionPool: {tcp: {connectTimeout: -1s}}}", ".connectionPool.tcp.connectTimeout: -1s is shorter than 1ms; ignored (default 10s)"},
		{"{connectionPool: {http: {http1MaxPendingRequests: -1}}}", ".connectionPool.http.http1MaxPendingRequests: -1 is negative; ignored (no limit)"},
		{"{connectionPool: {http: {http2MaxRequests: -1}}}", ".connectionPool.http.http2MaxRequests: -1 is negative; ignored (no limit)"},
		{"{connectionPool: {http: {maxRequestsPerConnection: -1}}}", ".connectionPool.http.maxRequestsPerConnection: -1 is negative; ignored (no limit)"},
		{"{connectionPool: {http: {http2KeepAlive: {interval: 1s}}}}", ".connectionPool.http: only http1MaxPendingRequests"},
		{"{outlierDetection: {interval: 0s}}", ".outlierDetection.interval: 0s is shorter than 1ms; ignored (default 10s)"},
		{"{outlierDetection: {interval: 0.0005s}}", ".outlierDetection.interval: 500µs is shorter than 1ms; ignored (default 10s)"},
		{"{outlierDetection: {baseEjectionTime: -30s}}", ".outlierDetection.baseEjectionTime: -30s is shorter than 1ms; ignored (default 30s)"},
		{"{outlierDetection: {maxEjectionPercent: 150}}", ".outlierDetection.maxEjectionPercent: 150 is outside 0-100; ignored (default 10)"},
		{"{outlierDetection: {maxEjectionPercent: -1}}", ".outlierDetection.maxEjectionPercent: -1 is outside 0-100; ignored (default 10)"},
		{"{outlierDetection: {consecutiveErrors: -1}}", ".outlierDetection: only consecutive5xxErrors"},
		{"{loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r2}]}}, outlierDetection: {}}", ""},
		{"{loadBalancer: {localityLbSetting: {distribute: [{from: 'r1/*', to: {'r1/*': 80, 'r2/*': 20}}]}}}", ""},
		{"{loadBalancer: {localityLbSetting: {distribute: [{from: 'r1/*', to: {'r1/*': 80}}]}}}", ".loadBalancer.localityLbSetting.distribute[0].to: weights add up to 80, not 100; used as relative weights"},
		{"{loadBalancer: {localityLbSetting: {distribute: [{from: 'r1/*', to: {'r1/*': 100}}], failover: [{from: r1, to: r2}]}}}", ".loadBalancer.localityLbSetting: distribute and failover are exclusive; failover ignored"},
		{"{loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r1}]}}, outlierDetection: {}}", `.loadBalancer.localityLbSetting.failover[0]: from and to are the same region "r1"; the rule has no effect`},
		{"{loadBalancer: {localityLbSetting: {failover: [{from: r1/z1, to: r2}]}}, outlierDetection: {}}", ".loadBalancer.localityLbSetting.failover[0]: from and to are regions (no '/' or '*'); the rule never matches"},
		{"{loadBalancer: {warmup: {duration: 10s}}}", ".loadBalancer: zone-aware and warmup settings are not supported; ignored"},
		{"{loadBalancer: {simple: PASSTHROUGH}}", ".loadBalancer.simple: PASSTHROUGH is not supported; using ROUND_ROBIN"},
		{"{loadBalancer: {simple: 42}}", ".loadBalancer.simple: unknown value 42; using ROUND_ROBIN"},
		{"{loadBalancer: {consistentHash: {httpHeaderName: ''}}}", `.loadBalancer.consistentHash.httpHeaderName: "" is not a header name; requests are not hashed`},
		{"{loadBalancer: {consistentHash: {httpHeaderName: 'x user'}}}", `.loadBalancer.consistentHash.httpHeaderName: "x user" is not a header name; requests are not hashed`},
		{"{loadBalancer: {consistentHash: {httpCookie: {name: ''}}}}", ".loadBalancer.consistentHash.httpCookie.name: empty; requests are not hashed"},
		{"{loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: -1s}}}}", ".loadBalancer.consistentHash.httpCookie.ttl: -1s is negative; ignored (no cookie is generated)"},
		{"{loadBalancer: {consistentHash: {useSourceIp: false}}}", ".loadBalancer.consistentHash.useSourceIp: false; requests are not hashed"},
		{"{loadBalancer: {consistentHash: {}}}", ".loadBalancer.consistentHash: no hash key (httpHeaderName, httpCookie, httpQueryParameterName, useSourceIp); requests are not hashed"},
		{"{loadBalancer: {consistentHash: {httpQueryParameterName: user}}}", ""},
		{"{loadBalancer: {consistentHash: {httpQueryParameterName: ''}}}", ".loadBalancer.consistentHash.httpQueryParameterName: empty; requests are not hashed"},
		{"{loadBalancer: {consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 10}}}}", ".loadBalancer.consistentHash: minimumRingSize is not supported; the ring has at least 1024 entries"},
		{"{loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 10}}}", ".loadBalancer.consistentHash: minimumRingSize is not supported; the ring has at least 1024 entries"},
	} {
		tp := trafficPolicy(t, c.policy)
		for path, dr := range placedPolicies(tp) {
			t.Run(c.policy+"@"+path, func(t *testing.T) {
				_, got := translateWith(t, kindDR, []*networkingv1.DestinationRule{dr}, nil)
				if c.want == "" {
					if len(got) > 0 {
						t.Fatalf("valid policy reported: %q", got)
					}
					return
				}
				want := "reviews: " + path + c.want
				if !slices.ContainsFunc(got, func(p string) bool { return strings.HasPrefix(p, want) }) {
					t.Fatalf("want a Problem starting %q, got %q", want, got)
				}
			})
		}
	}
}

// TestClusterAppliesCheckedValues: the cluster takes the values the checks
// accept, and the defaults in place of those they report.
func TestClusterAppliesCheckedValues(t *testing.T) {
	cluster := func(policy string) *clusterv3.Cluster {
		t.Helper()
		dr := placedPolicies(trafficPolicy(t, policy))["spec.trafficPolicy"]
		out, _ := translateWith(t, kindDR, []*networkingv1.DestinationRule{dr}, nil)
		name := mesh.OutboundCluster(reviewsFQDN, 9080, "")
		for _, r := range out.Waypoints {
			for _, c := range r.Clusters {
				if c.Name == name {
					return c
				}
			}
		}
		t.Fatalf("no cluster %s", name)
		return nil
	}
	type values struct {
		lb                     clusterv3.Cluster_LbPolicy
		connectTimeout         time.Duration
		maxConnections         uint32
		interval, baseEjection time.Duration // 0: unset
		maxEjectionPercent     uint32        // 0: unset
	}
	read := func(c *clusterv3.Cluster) values {
		od := c.GetOutlierDetection()
		return values{c.LbPolicy, c.GetConnectTimeout().AsDuration(), c.GetCircuitBreakers().GetThresholds()[0].GetMaxConnections().GetValue(),
			od.GetInterval().AsDuration(), od.GetBaseEjectionTime().AsDuration(), od.GetMaxEjectionPercent().GetValue()}
	}
	for _, c := range []struct {
		policy string
		want   values
	}{
		{"{connectionPool: {tcp: {maxConnections: 100, connectTimeout: 2s}}, loadBalancer: {simple: LEAST_CONN}," +
			" outlierDetection: {interval: 5s, baseEjectionTime: 1m, maxEjectionPercent: 50}}",
			values{clusterv3.Cluster_LEAST_REQUEST, 2 * time.Second, 100, 5 * time.Second, time.Minute, 50}},
		{"{connectionPool: {tcp: {maxConnections: -5, connectTimeout: 0s}}, loadBalancer: {simple: 42}," +
			" outlierDetection: {interval: 0s, baseEjectionTime: -1s, maxEjectionPercent: 150}}",
			values{clusterv3.Cluster_ROUND_ROBIN, 10 * time.Second, math.MaxUint32, 0, 0, 0}},
	} {
		if got := read(cluster(c.policy)); got != c.want {
			t.Errorf("%s:\n got %+v\nwant %+v", c.policy, got, c.want)
		}
	}
}
