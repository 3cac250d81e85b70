package policy

import (
	"google.golang.org/protobuf/proto"
	"net/netip"
	"strings"
	"testing"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
)

// TestMatchFields checks each Match field and not-field: the match is the
// only rule of the destination's only ALLOW policy, so the connection is
// allowed iff the match matches.
func TestMatchFields(t *testing.T) {
	addr := netip.MustParseAddr
	tests := []struct {
		name string
		m    *workloadv1.Match
		c    Conn
		want bool
	}{
		// principals and the StringMatch kinds
		{"principals exact hit", &workloadv1.Match{Principals: sm(exact("cluster.local/ns/app/sa/web"))}, mtls, true},
		{"principals exact miss", &workloadv1.Match{Principals: sm(exact("cluster.local/ns/app/sa/db"))}, mtls, false},
		{"principals prefix hit", &workloadv1.Match{Principals: sm(prefix("cluster.local/ns/app/"))}, mtls, true},
		{"principals prefix miss", &workloadv1.Match{Principals: sm(prefix("cluster.local/ns/other/"))}, mtls, false},
		{"principals suffix hit", &workloadv1.Match{Principals: sm(suffix("/sa/web"))}, mtls, true},
		{"principals suffix miss", &workloadv1.Match{Principals: sm(suffix("/sa/db"))}, mtls, false},
		{"principals presence mtls", &workloadv1.Match{Principals: sm(presence())}, mtls, true},
		{"principals presence plaintext", &workloadv1.Match{Principals: sm(presence())}, plain, false},
		{"principals exact empty plaintext", &workloadv1.Match{Principals: sm(exact(""))}, plain, false},
		{"principals prefix empty plaintext", &workloadv1.Match{Principals: sm(prefix(""))}, plain, false},
		{"principals any entry", &workloadv1.Match{Principals: sm(exact("x"), suffix("/sa/web"))}, mtls, true},
		{"principals spiffe form accepted", &workloadv1.Match{Principals: sm(exact("cluster.local/ns/app/sa/web"))},
			with(mtls, func(c *Conn) { c.Principal = "spiffe://cluster.local/ns/app/sa/web" }), true},
		// not_principals
		{"not_principals hit", &workloadv1.Match{NotPrincipals: sm(exact("cluster.local/ns/app/sa/web"))}, mtls, false},
		{"not_principals miss", &workloadv1.Match{NotPrincipals: sm(exact("cluster.local/ns/app/sa/db"))}, mtls, true},
		{"not_principals presence mtls", &workloadv1.Match{NotPrincipals: sm(presence())}, mtls, false},
		{"not_principals presence plaintext", &workloadv1.Match{NotPrincipals: sm(presence())}, plain, true},
		{"not_principals prefix plaintext", &workloadv1.Match{NotPrincipals: sm(prefix(""))}, plain, true},
		// namespaces
		{"namespaces exact hit", &workloadv1.Match{Namespaces: sm(exact("app"))}, mtls, true},
		{"namespaces exact miss", &workloadv1.Match{Namespaces: sm(exact("other"))}, mtls, false},
		{"namespaces prefix hit", &workloadv1.Match{Namespaces: sm(prefix("ap"))}, mtls, true},
		{"namespaces suffix miss", &workloadv1.Match{Namespaces: sm(suffix("-sandbox"))}, mtls, false},
		{"namespaces presence mtls", &workloadv1.Match{Namespaces: sm(presence())}, mtls, true},
		{"namespaces presence plaintext", &workloadv1.Match{Namespaces: sm(presence())}, plain, false},
		{"namespaces exact empty plaintext", &workloadv1.Match{Namespaces: sm(exact(""))}, plain, false},
		{"namespaces ignored without principal", &workloadv1.Match{Namespaces: sm(exact("app"))},
			with(plain, func(c *Conn) { c.Namespace = "app" }), false},
		// not_namespaces
		{"not_namespaces hit", &workloadv1.Match{NotNamespaces: sm(exact("app"))}, mtls, false},
		{"not_namespaces miss", &workloadv1.Match{NotNamespaces: sm(exact("other"))}, mtls, true},
		{"not_namespaces presence plaintext", &workloadv1.Match{NotNamespaces: sm(presence())}, plain, true},
		// source_ips
		{"source_ips cidr hit", &workloadv1.Match{SourceIps: []string{"10.0.0.0/8"}}, mtls, true},
		{"source_ips cidr miss", &workloadv1.Match{SourceIps: []string{"192.168.0.0/16"}}, mtls, false},
		{"source_ips ip hit", &workloadv1.Match{SourceIps: []string{"10.0.0.1"}}, mtls, true},
		{"source_ips ip miss", &workloadv1.Match{SourceIps: []string{"10.0.0.2"}}, mtls, false},
		{"source_ips unmasked cidr", &workloadv1.Match{SourceIps: []string{"10.0.0.7/24"}}, mtls, true},
		{"source_ips any entry", &workloadv1.Match{SourceIps: []string{"192.168.0.0/16", "10.0.0.1"}}, mtls, true},
		{"source_ips v4-mapped conn", &workloadv1.Match{SourceIps: []string{"10.0.0.0/24"}},
			with(mtls, func(c *Conn) { c.SourceIP = addr("::ffff:10.0.0.1") }), true},
		{"source_ips v6 hit", &workloadv1.Match{SourceIps: []string{"fd00::/64"}},
			with(mtls, func(c *Conn) { c.SourceIP = addr("fd00::5") }), true},
		{"source_ips v6 vs v4", &workloadv1.Match{SourceIps: []string{"::/0"}}, mtls, false},
		{"source_ips plaintext", &workloadv1.Match{SourceIps: []string{"10.0.0.1/32"}}, plain, true},
		// not_source_ips
		{"not_source_ips hit", &workloadv1.Match{NotSourceIps: []string{"10.0.0.0/24"}}, mtls, false},
		{"not_source_ips miss", &workloadv1.Match{NotSourceIps: []string{"10.9.0.0/24"}}, mtls, true},
		// destination_ips
		{"destination_ips hit", &workloadv1.Match{DestinationIps: []string{"10.1.0.1"}}, mtls, true},
		{"destination_ips miss", &workloadv1.Match{DestinationIps: []string{"10.1.0.2"}}, mtls, false},
		{"not_destination_ips hit", &workloadv1.Match{NotDestinationIps: []string{"10.1.0.0/16"}}, mtls, false},
		{"not_destination_ips miss", &workloadv1.Match{NotDestinationIps: []string{"10.2.0.0/16"}}, mtls, true},
		// ports
		{"destination_ports hit", &workloadv1.Match{DestinationPorts: []uint32{80, 8080}}, mtls, true},
		{"destination_ports miss", &workloadv1.Match{DestinationPorts: []uint32{80}}, mtls, false},
		{"not_destination_ports hit", &workloadv1.Match{NotDestinationPorts: []uint32{8080}}, mtls, false},
		{"not_destination_ports miss", &workloadv1.Match{NotDestinationPorts: []uint32{15021, 15020}}, mtls, true},
		// every non-empty field must match
		{"all fields hit", &workloadv1.Match{
			Principals: sm(suffix("/sa/web")), NotPrincipals: sm(exact("x")),
			Namespaces: sm(exact("app")), NotNamespaces: sm(exact("y")),
			SourceIps: []string{"10.0.0.0/8"}, NotSourceIps: []string{"10.0.0.2"},
			DestinationIps: []string{"10.1.0.0/16"}, NotDestinationIps: []string{"10.1.0.2"},
			DestinationPorts: []uint32{8080}, NotDestinationPorts: []uint32{22},
		}, mtls, true},
		{"one field misses", &workloadv1.Match{Principals: sm(suffix("/sa/web")), DestinationPorts: []uint32{80}}, mtls, false},
		{"positive and negative in one field", &workloadv1.Match{Principals: sm(prefix("cluster.local/ns/app/")), NotPrincipals: sm(suffix("/sa/web"))}, mtls, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStore(set(auth(selector, allow, "dst", "p", one(tt.m))))
			if p := s.Problems(); len(p) > 0 {
				t.Fatalf("problems: %q", p)
			}
			d := s.Plan(Destination{Namespace: "dst", Policies: []string{"dst/p"}}).Check(tt.c)
			if d.Allowed != tt.want {
				t.Fatalf("allowed = %v, want %v (%+v)", d.Allowed, tt.want, d)
			}
			if tt.want && d.Policy != "dst/p" {
				t.Errorf("policy = %q, want dst/p", d.Policy)
			}
		})
	}
}

func TestDecisions(t *testing.T) {
	dst := Destination{Namespace: "dst", Policies: []string{"dst/sel", "dst/sel2", "weft-system/weft_static_strict", "dst/missing"}}
	portMatch := func(p uint32) *workloadv1.Rule { return one(&workloadv1.Match{DestinationPorts: []uint32{p}}) }
	fromNS := func(ns string) *workloadv1.Rule { return one(&workloadv1.Match{Namespaces: sm(exact(ns))}) }
	strict := auth(selector, deny, "weft-system", "weft_static_strict", one(&workloadv1.Match{NotPrincipals: sm(presence())}))
	tests := []struct {
		name       string
		policies   []*workloadv1.Authorization
		dst        Destination
		c          Conn
		want       bool
		wantPolicy string
		wantReason string
	}{
		{name: "no policies", c: mtls, want: true, wantReason: ReasonNoAllowPolicy},
		{name: "no ALLOW means allow", policies: []*workloadv1.Authorization{
			auth(global, deny, "weft-system", "g", portMatch(22)),
		}, c: mtls, want: true, wantReason: ReasonNoAllowPolicy},
		{name: "empty rule allows", policies: []*workloadv1.Authorization{
			auth(selector, allow, "dst", "sel", ruleOf()),
		}, c: plain, want: true, wantPolicy: "dst/sel", wantReason: ReasonAllowMatched},
		{name: "ALLOW without rules denies", policies: []*workloadv1.Authorization{
			auth(selector, allow, "dst", "sel"),
		}, c: mtls, want: false, wantReason: ReasonNoAllowMatched},
		{name: "DENY without rules denies nothing", policies: []*workloadv1.Authorization{
			auth(selector, deny, "dst", "sel"),
		}, c: mtls, want: true, wantReason: ReasonNoAllowPolicy},
		{name: "empty rule DENY denies all", policies: []*workloadv1.Authorization{
			auth(nsScope, deny, "dst", "ns", ruleOf()),
		}, c: mtls, want: false, wantPolicy: "dst/ns", wantReason: ReasonDenyMatched},
		{name: "rule needs all clauses", policies: []*workloadv1.Authorization{
			auth(selector, allow, "dst", "sel", ruleOf(
				clauseOf(&workloadv1.Match{Namespaces: sm(exact("app"))}),
				clauseOf(&workloadv1.Match{DestinationPorts: []uint32{80}}))),
		}, c: mtls, want: false, wantReason: ReasonNoAllowMatched},
		{name: "clause needs any match", policies: []*workloadv1.Authorization{
			auth(selector, allow, "dst", "sel", ruleOf(
				clauseOf(&workloadv1.Match{Namespaces: sm(exact("app"))}),
				clauseOf(&workloadv1.Match{DestinationPorts: []uint32{80}}, &workloadv1.Match{DestinationPorts: []uint32{8080}}))),
		}, c: mtls, want: true, wantPolicy: "dst/sel", wantReason: ReasonAllowMatched},
		{name: "policy needs any rule", policies: []*workloadv1.Authorization{
			auth(selector, allow, "dst", "sel", portMatch(80), fromNS("app")),
		}, c: mtls, want: true, wantPolicy: "dst/sel", wantReason: ReasonAllowMatched},
		{name: "any ALLOW policy", policies: []*workloadv1.Authorization{
			auth(selector, allow, "dst", "sel", portMatch(80)),
			auth(nsScope, allow, "dst", "ns", fromNS("app")),
		}, c: mtls, want: true, wantPolicy: "dst/ns", wantReason: ReasonAllowMatched},

		// scopes
		{name: "GLOBAL DENY beats WORKLOAD_SELECTOR ALLOW", policies: []*workloadv1.Authorization{
			auth(global, deny, "weft-system", "g", fromNS("app")),
			auth(selector, allow, "dst", "sel", ruleOf()),
		}, c: mtls, want: false, wantPolicy: "weft-system/g", wantReason: ReasonDenyMatched},
		{name: "NAMESPACE DENY beats GLOBAL ALLOW", policies: []*workloadv1.Authorization{
			auth(global, allow, "weft-system", "g", ruleOf()),
			auth(nsScope, deny, "dst", "ns", portMatch(8080)),
		}, c: mtls, want: false, wantPolicy: "dst/ns", wantReason: ReasonDenyMatched},
		{name: "WORKLOAD_SELECTOR DENY beats NAMESPACE ALLOW", policies: []*workloadv1.Authorization{
			auth(nsScope, allow, "dst", "ns", ruleOf()),
			auth(selector, deny, "dst", "sel2", fromNS("app")),
		}, c: mtls, want: false, wantPolicy: "dst/sel2", wantReason: ReasonDenyMatched},
		{name: "GLOBAL ALLOW applies everywhere", policies: []*workloadv1.Authorization{
			auth(global, allow, "weft-system", "g", fromNS("other")),
		}, dst: Destination{Namespace: "elsewhere"}, c: mtls, want: false, wantReason: ReasonNoAllowMatched},
		{name: "NAMESPACE policy of another namespace does not apply", policies: []*workloadv1.Authorization{
			auth(nsScope, deny, "other", "ns", ruleOf()),
			auth(nsScope, allow, "other", "ns2"),
		}, c: mtls, want: true, wantReason: ReasonNoAllowPolicy},
		{name: "WORKLOAD_SELECTOR policy not listed does not apply", policies: []*workloadv1.Authorization{
			auth(selector, deny, "dst", "unlisted", ruleOf()),
			auth(selector, allow, "dst", "unlisted2"),
		}, c: mtls, want: true, wantReason: ReasonNoAllowPolicy},
		{name: "listed name of a NAMESPACE policy is not a selector policy", policies: []*workloadv1.Authorization{
			auth(nsScope, deny, "other", "x", ruleOf()),
		}, dst: Destination{Namespace: "dst", Policies: []string{"other/x"}}, c: mtls, want: true, wantReason: ReasonNoAllowPolicy},
		{name: "first DENY by name wins", policies: []*workloadv1.Authorization{
			auth(nsScope, deny, "dst", "b", ruleOf()),
			auth(nsScope, deny, "dst", "a", ruleOf()),
		}, c: mtls, want: false, wantPolicy: "dst/a", wantReason: ReasonDenyMatched},

		// PeerAuthentication
		{name: "STRICT denies plaintext", policies: []*workloadv1.Authorization{strict},
			c: plain, want: false, wantPolicy: "weft-system/weft_static_strict", wantReason: ReasonDenyMatched},
		{name: "STRICT allows mTLS", policies: []*workloadv1.Authorization{strict},
			c: mtls, want: true, wantReason: ReasonNoAllowPolicy},
		{name: "STRICT not listed allows plaintext", policies: []*workloadv1.Authorization{strict},
			dst: Destination{Namespace: "dst"}, c: plain, want: true, wantReason: ReasonNoAllowPolicy},
		{name: "STRICT with PERMISSIVE port", policies: []*workloadv1.Authorization{
			auth(selector, deny, "dst", "sel", one(&workloadv1.Match{NotPrincipals: sm(presence()), NotDestinationPorts: []uint32{8080}})),
		}, c: plain, want: true, wantReason: ReasonNoAllowPolicy},
		{name: "STRICT with PERMISSIVE port, other port", policies: []*workloadv1.Authorization{
			auth(selector, deny, "dst", "sel", one(&workloadv1.Match{NotPrincipals: sm(presence()), NotDestinationPorts: []uint32{9090}})),
		}, c: plain, want: false, wantPolicy: "dst/sel", wantReason: ReasonDenyMatched},
		{name: "STRICT and an ALLOW for plaintext", policies: []*workloadv1.Authorization{
			strict, auth(selector, allow, "dst", "sel", ruleOf()),
		}, c: plain, want: false, wantPolicy: "weft-system/weft_static_strict", wantReason: ReasonDenyMatched},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.dst
			if d.Namespace == "" {
				d = dst
			}
			s := NewStore(set(tt.policies...))
			if p := s.Problems(); len(p) > 0 {
				t.Fatalf("problems: %q", p)
			}
			got := s.Plan(d).Check(tt.c)
			want := Decision{Allowed: tt.want, Policy: tt.wantPolicy, Reason: tt.wantReason}
			if got != want {
				t.Fatalf("got %+v, want %+v", got, want)
			}
		})
	}
}

// TestMalformed checks that malformed input fails closed: an ALLOW rule
// with an invalid part never matches; in a DENY rule the invalid part
// constrains nothing.
func TestMalformed(t *testing.T) {
	dst := Destination{Namespace: "dst", Policies: []string{"dst/sel"}}
	badSM := &workloadv1.StringMatch{}
	tests := []struct {
		name string
		a    *workloadv1.Authorization
		c    Conn
		want bool
	}{
		{"ALLOW bad CIDR drops the rule", auth(selector, allow, "dst", "sel",
			one(&workloadv1.Match{SourceIps: []string{"10.0.0.0/8", "nope"}})), mtls, false},
		{"ALLOW bad not CIDR drops the rule", auth(selector, allow, "dst", "sel",
			one(&workloadv1.Match{NotSourceIps: []string{"10.0.0.300"}})), mtls, false},
		{"ALLOW bad rule does not affect good rule", auth(selector, allow, "dst", "sel",
			one(&workloadv1.Match{DestinationIps: []string{"1.2.3.4/33"}}), one(&workloadv1.Match{Namespaces: sm(exact("app"))})), mtls, true},
		{"ALLOW bad match in clause drops the rule", auth(selector, allow, "dst", "sel",
			ruleOf(clauseOf(&workloadv1.Match{Namespaces: sm(exact("app"))}, &workloadv1.Match{SourceIps: []string{"x"}}))), mtls, false},
		{"ALLOW port 0", auth(selector, allow, "dst", "sel",
			one(&workloadv1.Match{DestinationPorts: []uint32{0, 8080}})), mtls, false},
		{"ALLOW port 70000", auth(selector, allow, "dst", "sel",
			one(&workloadv1.Match{NotDestinationPorts: []uint32{70000}})), mtls, false},
		{"ALLOW string match without type", auth(selector, allow, "dst", "sel",
			one(&workloadv1.Match{NotPrincipals: sm(badSM)})), mtls, false},
		{"ALLOW presence false", auth(selector, allow, "dst", "sel",
			one(&workloadv1.Match{NotPrincipals: sm(&workloadv1.StringMatch{MatchType: &workloadv1.StringMatch_Presence{}})})), plain, false},
		{"ALLOW empty match", auth(selector, allow, "dst", "sel", one(&workloadv1.Match{})), mtls, false},
		{"ALLOW empty clause", auth(selector, allow, "dst", "sel", ruleOf(clauseOf())), mtls, false},
		{"DENY bad CIDR ignores the field", auth(selector, deny, "dst", "sel",
			one(&workloadv1.Match{SourceIps: []string{"192.168.0.0/16", "bad"}, DestinationPorts: []uint32{8080}})), mtls, false},
		{"DENY bad not CIDR ignores the field", auth(selector, deny, "dst", "sel",
			one(&workloadv1.Match{NotSourceIps: []string{"10.0.0.0/8", "bad"}, DestinationPorts: []uint32{8080}})), mtls, false},
		{"DENY bad field keeps the others", auth(selector, deny, "dst", "sel",
			one(&workloadv1.Match{NotSourceIps: []string{"bad"}, DestinationPorts: []uint32{22}})), mtls, true},
		{"DENY bad port ignores the field", auth(selector, deny, "dst", "sel",
			one(&workloadv1.Match{DestinationPorts: []uint32{99999}})), mtls, false},
		{"DENY string match without type", auth(selector, deny, "dst", "sel",
			one(&workloadv1.Match{Principals: sm(exact("nobody"), badSM)})), mtls, false},
		{"DENY empty match", auth(selector, deny, "dst", "sel", one(&workloadv1.Match{})), mtls, false},
		{"DENY empty clause", auth(selector, deny, "dst", "sel", ruleOf(clauseOf())), mtls, false},
		{"unknown action is ignored", &workloadv1.Authorization{Name: "sel", Namespace: "dst", Scope: selector, Action: 7,
			Rules: []*workloadv1.Rule{ruleOf()}}, mtls, true},
		{"unknown scope is ignored", &workloadv1.Authorization{Name: "sel", Namespace: "dst", Scope: 9, Action: deny,
			Rules: []*workloadv1.Rule{ruleOf()}}, mtls, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStore(set(tt.a))
			if len(s.Problems()) == 0 {
				t.Error("no problem reported")
			}
			for _, p := range s.Problems() {
				if !strings.HasPrefix(p, "dst/sel: ") {
					t.Errorf("problem %q does not name the policy", p)
				}
			}
			if d := s.Plan(dst).Check(tt.c); d.Allowed != tt.want {
				t.Fatalf("allowed = %v, want %v (%+v; problems %q)", d.Allowed, tt.want, d, s.Problems())
			}
		})
	}
}

func TestNilStore(t *testing.T) {
	var s *Store
	if d := s.Plan(Destination{}).Check(plain); !d.Allowed {
		t.Errorf("nil store: %+v", d)
	}
	if s.Len() != 0 || s.Problems() != nil {
		t.Error("nil store is not empty")
	}
	s = NewStore(set(auth(nsScope, deny, "dst", "all", ruleOf()), nil2()))
	if n := s.Len(); n != 1 {
		t.Errorf("Len = %d, want 1", n)
	}
	if d := s.Plan(Destination{Namespace: "dst"}).Check(plain); d.Allowed || d.Policy != "dst/all" {
		t.Errorf("deny all: %+v", d)
	}
	if d := NewStore(nil).Plan(Destination{Namespace: "dst"}).Check(plain); !d.Allowed {
		t.Errorf("empty store: %+v", d)
	}
}

// nil2 is a named nil entry: nil resources are skipped.
func nil2() *workloadv1.Authorization {
	return &workloadv1.Authorization{Name: "nil", Namespace: "x", Scope: 9}
}

func TestCheckDoesNotAllocate(t *testing.T) {
	for _, size := range [][2]int{{1000, 10}, {1000, 1000}} {
		s, dst := benchStore(size[0], size[1])
		p, c := s.Plan(dst), mtls
		allocs := testing.AllocsPerRun(1000, func() {
			_ = p.Check(c)
			_ = p.Check(plain)
		})
		if allocs != 0 {
			t.Fatalf("%v: Plan.Check allocates %v times per run", size, allocs)
		}
	}
}

// dryRun is a as the control plane sends a dry-run policy: DENY with no
// rules, the policy as written in DryRun.
func dryRun(a *workloadv1.Authorization) *workloadv1.Authorization {
	a.DryRun = &workloadv1.DryRun{Action: a.Action, Rules: a.Rules}
	a.Action, a.Rules = workloadv1.Action_DENY, nil
	return a
}

// TestDryRun: dry-run policies never change the decision; their would-be
// decision is reported as the waypoint logs it. An agent that ignores
// DryRun (older than the field) sees a DENY without rules: nothing denied.
func TestDryRun(t *testing.T) {
	dst := Destination{Namespace: "dst", Policies: []string{"dst/sel"}}
	denyAll := func() *workloadv1.Authorization { return auth(nsScope, deny, "dst", "dry-deny", ruleOf()) }
	tests := []struct {
		name       string
		policies   []*workloadv1.Authorization
		want       bool
		wantDryRun string
	}{
		{"no dry-run policy", []*workloadv1.Authorization{denyAll()}, false, ""},
		{"dry-run DENY matches: allowed, would be denied", []*workloadv1.Authorization{dryRun(denyAll())}, true, "denied[dst/dry-deny]"},
		{"dry-run DENY does not match", []*workloadv1.Authorization{dryRun(auth(nsScope, deny, "dst", "d", one(&workloadv1.Match{DestinationPorts: []uint32{22}})))}, true, DryRunAllowed},
		{"dry-run ALLOW none matches", []*workloadv1.Authorization{dryRun(auth(selector, allow, "dst", "sel", one(&workloadv1.Match{DestinationPorts: []uint32{22}})))}, true, "denied[none]"},
		{"dry-run ALLOW matches", []*workloadv1.Authorization{dryRun(auth(selector, allow, "dst", "sel", ruleOf()))}, true, DryRunAllowed},
		{"enforced DENY and dry-run ALLOW", []*workloadv1.Authorization{denyAll(), dryRun(auth(selector, allow, "dst", "sel", ruleOf()))}, false, DryRunAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := NewStore(set(tc.policies...)).Plan(dst).Check(mtls)
			if d.Allowed != tc.want || d.DryRun != tc.wantDryRun {
				t.Errorf("Check = allowed %v, dry run %q; want %v, %q", d.Allowed, d.DryRun, tc.want, tc.wantDryRun)
			}
			legacy := map[string]*workloadv1.Authorization{}
			for k, a := range set(tc.policies...) {
				a = proto.Clone(a).(*workloadv1.Authorization)
				a.DryRun = nil
				legacy[k] = a
			}
			if got := NewStore(legacy).Plan(dst).Check(mtls); got.Allowed != tc.want {
				t.Errorf("an agent ignoring dry_run decides allowed %v, want %v", got.Allowed, tc.want)
			}
		})
	}
}
