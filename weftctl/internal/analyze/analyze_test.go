package analyze

import (
	"strings"
	"testing"
)

// want is one expected finding: the message must contain every part of msg.
type want struct {
	sev       Severity
	kind, obj string // obj is namespace/name, or name for cluster-scoped objects
	code      string
	msg       []string
}

func (w want) matches(f Finding) bool {
	obj := f.Name
	if f.Namespace != "" {
		obj = f.Namespace + "/" + f.Name
	}
	if f.Severity != w.sev || f.Kind != w.kind || obj != w.obj || f.Code != w.code {
		return false
	}
	for _, m := range w.msg {
		if !strings.Contains(f.Message, m) {
			return false
		}
	}
	return true
}

// check asserts that the findings are exactly the wanted ones (in any order).
func check(t *testing.T, got Findings, wants []want) {
	t.Helper()
	used := make([]bool, len(got))
next:
	for _, w := range wants {
		for i, f := range got {
			if !used[i] && w.matches(f) {
				used[i] = true
				continue next
			}
		}
		t.Errorf("missing finding %+v", w)
	}
	for i, f := range got {
		if !used[i] {
			t.Errorf("unexpected finding %+v", f)
		}
	}
}

func analyzeFixtures(t *testing.T, o Options, fixtures ...string) Findings {
	t.Helper()
	return Analyze(bookinfo(t, fixtures...).snapshot(), o)
}

// The real Bookinfo samples (destination-rule-all, virtual-service-all-v1)
// with a waypoint, an ambient namespace and node agents everywhere are clean.
func TestBookinfoClean(t *testing.T) {
	got := analyzeFixtures(t, Options{})
	if len(got) != 0 {
		t.Fatalf("findings on clean Bookinfo: %+v", got)
	}
	if got.Errors() != 0 {
		t.Fatal("errors on clean Bookinfo")
	}
}

func TestFixtures(t *testing.T) {
	for _, tc := range []struct {
		fixture string
		want    []want
	}{
		{"vs-host-missing.yaml", []want{
			{Error, "VirtualService", "bookinfo/ratingz", CodeHostNotFound, []string{`"ratingz" is not a Service`, "no Service"}},
		}},
		{"subset-missing.yaml", []want{
			{Error, "VirtualService", "bookinfo/reviews", CodeSubsetNotFound, []string{`"v4"`, "defines subsets v1, v2, v3"}},
			{Error, "VirtualService", "bookinfo/ratings", CodeSubsetNotFound, []string{`"v1"`, "there is no DestinationRule for ratings.bookinfo.svc.cluster.local"}},
			{Warning, "DestinationRule", "bookinfo/ratings", CodeHostNotFound, []string{`"ratings-legacy"`}},
		}},
		{"weights.yaml", []want{
			{Error, "VirtualService", "bookinfo/reviews", CodeRouteWeights, []string{"add up to 80, not 100"}},
		}},
		{"regex.yaml", []want{
			{Error, "VirtualService", "bookinfo/ratings", CodeInvalidRegex, []string{"uri.regex", "missing closing )", "never applies"}},
		}},
		{"node-agent-missing.yaml", []want{
			{Error, "Namespace", "bookinfo", CodeNodeAgentMissing, []string{"node(s) node-3, node-4", "reviews-v2-extra on node-3", "not captured"}},
		}},
		{"waypoint-missing.yaml", []want{
			{Error, "Service", "bookinfo/details", CodeWaypointNotFound, []string{"bookinfo/details-waypoint does not exist"}},
		}},
		{"l7-no-waypoint.yaml", []want{
			{Error, "AuthorizationPolicy", "legacy/inventory-read", CodeL7PolicyNoWaypoint, []string{"(methods, paths)", "ALLOW rule can never match", "legacy/inventory-0"}},
			{Error, "AuthorizationPolicy", "legacy/inventory-jwt", CodeL7PolicyNoWaypoint, []string{"Service legacy/inventory has no waypoint", "not enforced at all"}},
			{Warning, "AuthorizationPolicy", "bookinfo/ratings-get", CodeL7PolicySelector, []string{"(methods)", "replace the selector with targetRefs"}},
			{Error, "AuthorizationPolicy", "bookinfo/via-missing-waypoint", CodePolicyTargetNotFound, []string{"reviews-waypoint is not a waypoint"}},
		}},
		{"l7-on-tcp.yaml", []want{
			{Warning, "AuthorizationPolicy", "bookinfo/mysql-writers", CodeL7PolicyOnTCP, []string{"operation.methods", "ALLOW rule is dropped", "TCP port mysql.bookinfo.svc.cluster.local:3306", "matches nothing"}},
		}},
		{"unsupported.yaml", []want{
			{Error, "WasmPlugin", "bookinfo/wasm", CodeUnsupported, []string{"WasmPlugin is not supported"}},
			{Warning, "RequestAuthentication", "bookinfo/jwt", CodeConfigProblem, []string{"no targetRefs", "not applied"}},
			{Error, "GRPCRoute", "bookinfo/grpc", CodeUnsupported, []string{"GRPCRoute is not supported"}},
			{Warning, "ServiceEntry", "bookinfo/by-dns", CodeConfigProblem, []string{"*.api.example.com", "wildcard hosts are not supported"}},
		}},
		{"contradiction.yaml", []want{
			{Error, "AuthorizationPolicy", "bookinfo/reviews-allow", CodePolicyContradiction, []string{"DENY bookinfo/reviews-deny (identical)", "allows nothing"}},
			{Error, "AuthorizationPolicy", "bookinfo/details-allow", CodePolicyContradiction, []string{"DENY bookinfo/details-lockdown (which matches every request)"}},
			{Warning, "AuthorizationPolicy", "bookinfo/ratings-from-frontend", CodePolicyContradiction, []string{"rule 0 is matched by rule 0 of DENY bookinfo/deny-foreign"}},
		}},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			got := analyzeFixtures(t, Options{}, tc.fixture)
			check(t, got, tc.want)
			wantErrors := 0
			for _, w := range tc.want {
				if w.sev == Error {
					wantErrors++
				}
			}
			if got.Errors() != wantErrors {
				t.Errorf("Errors() = %d, want %d", got.Errors(), wantErrors)
			}
		})
	}
}

// A node without an agent where no pod of the namespace runs is a warning.
func TestNodeAgentMissingNoPods(t *testing.T) {
	o := bookinfo(t, "node-agent-missing.yaml")
	o.delete("Pod", "bookinfo", "reviews-v2-extra")
	check(t, Analyze(o.snapshot(), Options{}), []want{
		{Warning, "Namespace", "bookinfo", CodeNodeAgentMissing, []string{"node(s) node-3, node-4", "no pod of this namespace runs there now"}},
	})
}

// -n keeps the findings of one namespace (and about the Namespace itself).
func TestNamespaceFilter(t *testing.T) {
	got := analyzeFixtures(t, Options{Namespace: "legacy"}, "l7-no-waypoint.yaml")
	for _, f := range got {
		if f.Namespace != "legacy" {
			t.Errorf("finding outside legacy: %+v", f)
		}
	}
	if len(got) != 2 {
		t.Errorf("got %d findings, want 2: %+v", len(got), got)
	}
	got = analyzeFixtures(t, Options{Namespace: "bookinfo"}, "node-agent-missing.yaml")
	if len(got) != 1 || got[0].Kind != "Namespace" {
		t.Errorf("Namespace finding filtered out: %+v", got)
	}
}

// Identical rules cover each other; a rule with more conditions is covered by
// one with fewer, not the other way round.
func TestRuleCovers(t *testing.T) {
	o := bookinfo(t, "contradiction.yaml")
	s := o.snapshot()
	var a, d = s.AuthorizationPolicies[0], s.AuthorizationPolicies[1]
	if a.Name != "reviews-allow" || d.Name != "reviews-deny" {
		t.Fatalf("order: %s %s", a.Name, d.Name)
	}
	ar, dr := a.Spec.Rules[0], d.Spec.Rules[0]
	if !ruleCovers(dr, ar) || !ruleEqual(dr, ar) {
		t.Fatal("identical rules")
	}
	narrower := ar.DeepCopy()
	narrower.To[0].Operation.Paths = []string{"/api"}
	if !ruleCovers(dr, narrower) || ruleCovers(narrower, dr) {
		t.Fatal("narrower ALLOW rule")
	}
	other := ar.DeepCopy()
	other.From[0].Source.Principals = []string{"cluster.local/ns/bookinfo/sa/other"}
	if ruleCovers(dr, other) {
		t.Fatal("different principal covered")
	}
}

func TestTable(t *testing.T) {
	fs := Findings{{Severity: Error, Kind: "Namespace", Name: "bookinfo", Code: CodeNodeAgentMissing, Message: "m"},
		{Severity: Warning, Kind: "Service", Namespace: "a", Name: "b", Code: CodeConflict, Message: "n"}}
	rows := fs.Rows()
	if rows[0][2] != "bookinfo" || rows[1][2] != "a/b" || len(fs.Header()) != len(rows[0]) || fs.Errors() != 1 {
		t.Fatalf("%v", rows)
	}
}
