package policy

import (
	"fmt"
	"testing"
	"time"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/internal/benchkit"
)

// benchAuths makes total policies of which applicable apply to the returned
// destination (applicable >= 5). For mtls, every applicable DENY is
// evaluated and does not match, then every ALLOW is evaluated and only the
// last one matches: the worst case for an allowed connection.
func benchAuths(total, applicable int) (map[string]*workloadv1.Authorization, Destination) {
	out := make(map[string]*workloadv1.Authorization, total)
	add := func(a *workloadv1.Authorization) { out[a.Namespace+"/"+a.Name] = a }
	dst := Destination{Namespace: "bench"}
	// 2 GLOBAL and 2 NAMESPACE DENY policies, none matching mtls.
	add(auth(global, deny, "weft-system", "deny-sandbox", ruleOf(
		clauseOf(&workloadv1.Match{Namespaces: sm(exact("sandbox"))}),
		clauseOf(&workloadv1.Match{DestinationIps: []string{"10.1.0.0/16"}}))))
	add(auth(global, deny, "weft-system", "deny-ssh", one(&workloadv1.Match{DestinationPorts: []uint32{22, 2222}})))
	add(auth(nsScope, deny, "bench", "deny-untrusted",
		ruleOf(clauseOf(&workloadv1.Match{NotPrincipals: sm(presence()), NotSourceIps: []string{"10.0.0.0/24"}}),
			clauseOf(&workloadv1.Match{NotDestinationPorts: []uint32{15020, 15021}})),
		one(&workloadv1.Match{Namespaces: sm(suffix("-sandbox"))})))
	add(auth(nsScope, deny, "bench", "deny-legacy", one(&workloadv1.Match{SourceIps: []string{"192.168.0.0/16", "172.16.0.0/12"}})))
	// Selector policies: alternate DENY (not matching) and ALLOW (not
	// matching), the last is an ALLOW that matches.
	for i := range applicable - 4 {
		name := fmt.Sprintf("sel-%04d", i)
		dst.Policies = append(dst.Policies, "bench/"+name)
		switch {
		case i == applicable-5:
			add(auth(selector, allow, "bench", name, ruleOf(
				clauseOf(&workloadv1.Match{Principals: sm(exact("cluster.local/ns/gw/sa/gateway"), prefix("cluster.local/ns/app/"))},
					&workloadv1.Match{Namespaces: sm(exact("other")), SourceIps: []string{"10.244.0.0/16"}}),
				clauseOf(&workloadv1.Match{DestinationPorts: []uint32{8080}}))))
		case i%2 == 0:
			add(auth(selector, deny, "bench", name, one(&workloadv1.Match{
				Principals: sm(exact(fmt.Sprintf("cluster.local/ns/bad-%d/sa/x", i))), DestinationPorts: []uint32{8080}})))
		default:
			add(auth(selector, allow, "bench", name, ruleOf(
				clauseOf(&workloadv1.Match{Principals: sm(
					exact(fmt.Sprintf("cluster.local/ns/app/sa/client-%d", i)),
					exact(fmt.Sprintf("cluster.local/ns/app/sa/other-%d", i)))}),
				clauseOf(&workloadv1.Match{DestinationPorts: []uint32{8080, 9090}}))))
		}
	}
	// Policies that do not apply: other namespaces, unlisted selectors.
	for i := range total - applicable {
		ns := fmt.Sprintf("ns-%03d", i%100)
		scope := nsScope
		if i%2 == 1 {
			scope = selector
		}
		add(auth(scope, allow, ns, fmt.Sprintf("p-%04d", i), ruleOf(
			clauseOf(&workloadv1.Match{Principals: sm(exact("cluster.local/ns/" + ns + "/sa/web"))},
				&workloadv1.Match{SourceIps: []string{"10.0.0.0/8"}}),
			clauseOf(&workloadv1.Match{DestinationPorts: []uint32{80, 443}}))))
	}
	return out, dst
}

func benchStore(total, applicable int) (*Store, Destination) {
	auths, dst := benchAuths(total, applicable)
	return NewStore(auths), dst
}

func TestBenchStore(t *testing.T) {
	for _, tc := range [][2]int{{10, 10}, {1000, 10}, {1000, 1000}} {
		s, dst := benchStore(tc[0], tc[1])
		if s.Len() != tc[0] || len(s.Problems()) > 0 {
			t.Fatalf("%v: Len %d, problems %q", tc, s.Len(), s.Problems())
		}
		want := fmt.Sprintf("bench/sel-%04d", tc[1]-5)
		if d := s.Plan(dst).Check(mtls); !d.Allowed || d.Policy != want {
			t.Errorf("%v: mtls %+v, want allowed by %s", tc, d, want)
		}
		if d := s.Plan(dst).Check(with(plain, func(c *Conn) { c.SourceIP = mtls.DestIP })); d.Allowed || d.Policy != "bench/deny-untrusted" {
			t.Errorf("%v: plaintext %+v", tc, d)
		}
	}
}

// BenchmarkCheck times Plan.Check: the node agent keeps each local
// workload's plan (config.Snapshot.Authorize), so building it is not per
// connection (BenchmarkPlan).
func BenchmarkCheck(b *testing.B) {
	for _, tc := range []struct{ total, applicable int }{{10, 10}, {1000, 10}, {1000, 1000}} {
		s, dst := benchStore(tc.total, tc.applicable)
		plan := s.Plan(dst)
		b.Run(fmt.Sprintf("total=%d/applicable=%d/allowed", tc.total, tc.applicable), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !plan.Check(mtls).Allowed {
					b.Fatal("denied")
				}
			}
		})
		b.Run(fmt.Sprintf("total=%d/applicable=%d/plaintext-denied", tc.total, tc.applicable), func(b *testing.B) {
			b.ReportAllocs()
			c := with(plain, func(c *Conn) { c.SourceIP = mtls.DestIP })
			for b.Loop() {
				if plan.Check(c).Allowed {
					b.Fatal("allowed")
				}
			}
		})
	}
}

func BenchmarkNewStore(b *testing.B) {
	auths, _ := benchAuths(1000, 10)
	b.ReportAllocs()
	for b.Loop() {
		NewStore(auths)
	}
}

// BenchmarkPlan times building a destination's plan (uncached), what the
// first connection to a workload after a policy change pays.
func BenchmarkPlan(b *testing.B) {
	for _, tc := range []struct{ total, applicable int }{{1000, 10}, {1000, 1000}} {
		s, dst := benchStore(tc.total, tc.applicable)
		b.Run(fmt.Sprintf("total=%d/applicable=%d", tc.total, tc.applicable), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.buildPlan(dst)
			}
		})
	}
}

// BenchmarkCheckLatency times every allowed Plan.Check on its own and
// reports percentiles: the performance target is a p99, which a mean
// (BenchmarkCheck) cannot show. Each sample includes one clock read, reported as clock_p50_ns
// (so the figures err on the slow side).
func BenchmarkCheckLatency(b *testing.B) {
	for _, tc := range []struct{ total, applicable int }{{1000, 10}, {1000, 1000}} {
		s, dst := benchStore(tc.total, tc.applicable)
		plan := s.Plan(dst)
		b.Run(fmt.Sprintf("total=%d/applicable=%d", tc.total, tc.applicable), func(b *testing.B) {
			// The last 64k checks (b.Loop's N is not known up front).
			samples, clock := make([]time.Duration, 1<<16), make([]time.Duration, 1<<16)
			n := 0
			for ; b.Loop(); n++ {
				t0 := time.Now()
				allowed := plan.Check(mtls).Allowed
				samples[n%len(samples)] = time.Since(t0)
				if !allowed {
					b.Fatal("denied")
				}
				t1 := time.Now()
				clock[n%len(clock)] = time.Since(t1)
			}
			samples, clock = samples[:min(n, len(samples))], clock[:min(n, len(clock))]
			b.ReportMetric(float64(benchkit.Percentile(samples, 0.50)), "p50_ns")
			b.ReportMetric(float64(benchkit.Percentile(samples, 0.99)), "p99_ns")
			b.ReportMetric(float64(benchkit.Percentile(clock, 0.50)), "clock_p50_ns")
		})
	}
}
