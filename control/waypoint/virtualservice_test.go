package waypoint

import (
	"slices"
	"strings"
	"testing"

	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/waypoint/route"
)

// reviewsVS is a VirtualService for reviews with one http route, written
// in YAML as in a manifest.
func reviewsVS(t *testing.T, httpRoute string) *networkingv1.VirtualService {
	t.Helper()
	hr := &networkingapi.HTTPRoute{}
	if err := yaml.UnmarshalStrict([]byte(httpRoute), hr); err != nil {
		t.Fatalf("%s: %v", httpRoute, err)
	}
	vs := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "reviews"}}
	vs.Spec.Hosts = []string{"reviews"}
	vs.Spec.Http = []*networkingapi.HTTPRoute{hr}
	return vs
}

// TestVirtualServiceChecks: every value of an http route the translation
// does not apply as written is reported with its field path and what is
// done instead; a valid route yields no Problem.
func TestVirtualServiceChecks(t *testing.T) {
	const dest = "route: [{destination: {host: reviews}}], "
	const defaultOn = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
	for _, c := range []struct {
		route string
		want  []string // the Problems, each a prefix; none for a valid route
	}{
		{"{" + dest + "timeout: 10s, retries: {attempts: 3, perTryTimeout: 2s, retryOn: '5xx,gateway-error,reset,connect-failure," +
			"retriable-4xx,refused-stream,retriable-status-codes,503,cancelled,deadline-exceeded,internal,resource-exhausted,unavailable'}}", nil},
		{"{" + dest + "timeout: 0s, retries: {attempts: 0}}", nil},
		{"{" + dest + "fault: {delay: {fixedDelay: 1s, percentage: {value: 50}}, abort: {httpStatus: 503, percentage: {value: 0.1}}}}", nil},
		{"{" + dest + "fault: {delay: {fixedDelay: 1s, percent: 100}}}", nil},
		{"{" + dest + "mirror: {host: ratings}, mirrorPercentage: {value: 100}, mirrors: [{destination: {host: details}, percentage: {value: 0}}]}", nil},
		{"{route: [{destination: {host: reviews}, weight: 0}, {destination: {host: ratings}, weight: 100}]}", nil},

		{"{" + dest + "timeout: -1s}", []string{"spec.http[0].timeout: -1s is negative; ignored (no timeout)"}},
		{"{" + dest + "retries: {attempts: -1}}", []string{"spec.http[0].retries.attempts: -1 is negative; no retries"}},
		{"{" + dest + "retries: {attempts: 0, retryOn: 5xx}}", []string{"spec.http[0].retries: attempts is 0 (no retries); perTryTimeout and retryOn are ignored"}},
		{"{" + dest + "retries: {attempts: 2, perTryTimeout: -2s}}", []string{"spec.http[0].retries.perTryTimeout: -2s is negative; ignored (no per-try timeout)"}},
		{"{" + dest + "retries: {attempts: 2, retryOn: 'bogus,5xx'}}", []string{`spec.http[0].retries.retryOn: unknown retry condition "bogus"; ignored`}},
		{"{" + dest + "retries: {attempts: 2, retryOn: '700,5xx'}}", []string{`spec.http[0].retries.retryOn: "700" is not an HTTP status; ignored`}},
		{"{" + dest + "retries: {attempts: 2, retryOn: retriable-headers}}", []string{
			`spec.http[0].retries.retryOn: "retriable-headers" is not supported; ignored`,
			"spec.http[0].retries.retryOn: no supported condition; using the default (" + defaultOn + ")"}},
		{"{" + dest + "fault: {delay: {fixedDelay: 0s, percentage: {value: 50}}}}", []string{"spec.http[0].fault.delay.fixedDelay: 0s is not positive; no delay injected"}},
		{"{" + dest + "fault: {delay: {fixedDelay: 1s, percentage: {value: 150}}}}", []string{"spec.http[0].fault.delay.percentage: 150 is outside 0-100; using 100"}},
		{"{" + dest + "fault: {delay: {fixedDelay: 1s, percent: -5}}}", []string{"spec.http[0].fault.delay.percent: -5 is outside 0-100; using 0"}},
		{"{" + dest + "fault: {abort: {httpStatus: 503, percentage: {value: -1}}}}", []string{"spec.http[0].fault.abort.percentage: -1 is outside 0-100; using 0"}},
		{"{" + dest + "fault: {abort: {httpStatus: 600}}}", []string{"spec.http[0].fault.abort.httpStatus: 600 is not an HTTP status; no abort injected"}},
		{"{" + dest + "fault: {abort: {httpStatus: 199}}}", []string{"spec.http[0].fault.abort.httpStatus: 199 is not an HTTP status; no abort injected"}},
		{"{" + dest + "mirror: {host: ratings}, mirrorPercentage: {value: 101}}", []string{"spec.http[0].mirrorPercentage: 101 is outside 0-100; using 100"}},
		{"{" + dest + "mirror: {host: ratings}, mirrorPercent: 200}", []string{"spec.http[0].mirrorPercent: 200 is outside 0-100; using 100"}},
		{"{" + dest + "mirrors: [{destination: {host: ratings}, percentage: {value: -3}}]}", []string{"spec.http[0].mirrors[0].percentage: -3 is outside 0-100; using 0"}},
		{"{route: [{destination: {host: reviews}, weight: -1}]}", []string{"spec.http[0].route: weight -1 is out of range 0-100; the VirtualService is ignored"}},
		{"{route: [{destination: {host: reviews}, weight: -10}, {destination: {host: ratings}, weight: 110}]}", []string{"spec.http[0].route: negative weight -10; the VirtualService is ignored"}},
	} {
		t.Run(c.route, func(t *testing.T) {
			_, got := translateWith(t, kindVS, nil, []*networkingv1.VirtualService{reviewsVS(t, c.route)})
			var want []string
			for _, w := range c.want {
				want = append(want, "reviews: "+w)
			}
			if len(got) != len(want) {
				t.Fatalf("got Problems %q, want %q", got, want)
			}
			for _, w := range want {
				if !slices.ContainsFunc(got, func(p string) bool { return strings.HasPrefix(p, w) }) {
					t.Errorf("want a Problem starting %q, got %q", w, got)
				}
			}
		})
	}
}

// TestRetryOnMatchesRouter: of the conditions Istio accepts, the
// translation passes on exactly those the waypoint router acts on and
// reports every other one.
func TestRetryOnMatchesRouter(t *testing.T) {
	for v := range retryOnValues {
		tr := newTranslator(Config{})
		c := &vsContext{t: tr, vs: &networkingv1.VirtualService{}}
		on, _ := c.retryOn("retryOn", v)
		passed, reported := on == v, len(tr.problems) > 0
		if passed == reported || passed != route.RetryCondition(v) {
			t.Errorf("%q: passed on %v, reported %v; the router acts on it: %v", v, passed, reported, route.RetryCondition(v))
		}
	}
	for _, v := range []string{"retriable-headers", "reset-before-request", "envoy-ratelimited", "http3-post-connect-failure"} {
		if route.RetryCondition(v) {
			t.Errorf("%q: the router acts on it now; update docs/compatibility.md", v)
		}
	}
}
