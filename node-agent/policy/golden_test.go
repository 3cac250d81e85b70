package policy

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// golden is a control-plane translation golden
// (control/workload/testdata/<case>/expected.json): the Authorizations and
// the workloads' destinations by IP.
type golden struct {
	store *Store
	dst   map[netip.Addr]Destination
}

func loadGolden(t *testing.T, name string) golden {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "control", "workload", "testdata", name, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Addresses      map[string]json.RawMessage `json:"addresses"`
		Authorizations map[string]json.RawMessage `json:"authorizations"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	auths := make(map[string]*workloadv1.Authorization, len(raw.Authorizations))
	for k, v := range raw.Authorizations {
		a := &workloadv1.Authorization{}
		if err := protojson.Unmarshal(v, a); err != nil {
			t.Fatalf("authorization %s: %v", k, err)
		}
		auths[k] = a
	}
	g := golden{store: NewStore(auths), dst: make(map[netip.Addr]Destination)}
	if p := g.store.Problems(); len(p) > 0 {
		t.Errorf("%s: problems %q", name, p)
	}
	if g.store.Len() != len(auths) {
		t.Errorf("%s: %d policies in force, want %d", name, g.store.Len(), len(auths))
	}
	for k, v := range raw.Addresses {
		a := &workloadv1.Address{}
		if err := protojson.Unmarshal(v, a); err != nil {
			t.Fatalf("address %s: %v", k, err)
		}
		w := a.GetWorkload()
		if w == nil {
			continue
		}
		for _, ip := range w.GetAddresses() {
			g.dst[netip.MustParseAddr(ip)] = Destination{Namespace: w.GetNamespace(), Policies: w.GetAuthorizationPolicies()}
		}
	}
	return g
}

type goldenCase struct {
	name      string
	src       string
	dst       string // ip:port of a workload in the golden
	principal string // "" for plaintext; namespace is taken from it
	allowed   bool
	policy    string
}

func (g golden) run(t *testing.T, cases []goldenCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ap := netip.MustParseAddrPort(tc.dst)
			dst, ok := g.dst[ap.Addr()]
			if !ok {
				t.Fatalf("no workload at %s", ap.Addr())
			}
			c := Conn{SourceIP: netip.MustParseAddr(tc.src), DestIP: ap.Addr(), DestPort: ap.Port(), Principal: tc.principal}
			if tc.principal != "" {
				c.Namespace = namespaceOf(tc.principal)
			}
			d := g.store.Plan(dst).Check(c)
			if d.Allowed != tc.allowed || d.Policy != tc.policy {
				t.Fatalf("got %+v, want allowed=%v policy=%q", d, tc.allowed, tc.policy)
			}
		})
	}
}

// namespaceOf extracts x from "<td>/ns/x/sa/y".
func namespaceOf(principal string) string {
	parts := strings.Split(principal, "/")
	if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" {
		return ""
	}
	return parts[2]
}

func TestGoldenAuthzL4(t *testing.T) {
	const (
		productpage = "10.244.1.10:9080"
		details     = "10.244.1.11:9080"
		reviews     = "10.244.1.12:9080"
		ratings     = "10.244.1.15:9080"
		sleep       = "10.244.9.1"
	)
	loadGolden(t, "authz-l4").run(t, []goldenCase{
		{"productpage from the gateway", "10.244.1.5", productpage, "cluster.local/ns/default/sa/bookinfo-gateway", true, "default/productpage-viewer"},
		{"productpage from another namespace's principal", "10.99.0.1", productpage, "cluster.local/ns/other/sa/sleep", true, "default/productpage-viewer"},
		{"productpage from reviews", "10.244.1.12", productpage, "cluster.local/ns/default/sa/bookinfo-reviews", false, ""},
		{"productpage from team namespace in range", "10.244.3.3", productpage, "cluster.local/ns/team-a/sa/x", true, "default/productpage-viewer"},
		{"productpage from team namespace out of range", "172.16.0.1", productpage, "cluster.local/ns/team-a/sa/x", false, ""},
		{"productpage from the gateway, wrong port", "10.244.1.5", "10.244.1.10:9081", "cluster.local/ns/default/sa/bookinfo-gateway", false, ""},
		{"productpage plaintext in node range", "10.244.1.7", productpage, "", false, ""},
		{"reviews from productpage", "10.244.1.10", reviews, "cluster.local/ns/default/sa/bookinfo-productpage", true, "default/reviews-from-productpage"},
		{"reviews from other/sleep", sleep, reviews, "cluster.local/ns/other/sa/sleep", true, "default/reviews-from-productpage"},
		{"reviews from productpage, excluded IP", "10.244.1.99", reviews, "cluster.local/ns/default/sa/bookinfo-productpage", false, ""},
		{"reviews from details", "10.244.1.11", reviews, "cluster.local/ns/default/sa/bookinfo-details", false, ""},
		{"details plaintext from outside", "10.99.0.1", details, "", false, "default/deny-untrusted"},
		{"details plaintext from outside to health port", "10.99.0.1", "10.244.1.11:15021", "", true, "default/details-allow-all"},
		{"details plaintext from node range", "10.244.1.50", details, "", true, "default/details-allow-all"},
		{"details from a sandbox namespace", "10.244.1.50", details, "cluster.local/ns/dev-sandbox/sa/x", false, "default/deny-untrusted"},
		{"details from anyone", "10.99.0.1", details, "cluster.local/ns/x/sa/y", true, "default/details-allow-all"},
		{"ratings allows nothing", "10.244.1.12", ratings, "cluster.local/ns/default/sa/bookinfo-reviews", false, ""},
		{"ratings from sandbox: global deny", "10.244.1.12", ratings, "cluster.local/ns/sandbox/sa/x", false, "weft-system/global-deny-sandbox"},
		{"sleep ssh", "10.244.1.10", sleep + ":22", "cluster.local/ns/default/sa/bookinfo-productpage", false, "weft-system/every-sleep"},
		{"sleep other port", "10.244.1.10", sleep + ":8080", "cluster.local/ns/default/sa/bookinfo-productpage", true, ""},
		{"sleep plaintext", "10.99.0.1", sleep + ":8080", "", true, ""},
	})
}

func TestGoldenPeerAuthentication(t *testing.T) {
	loadGolden(t, "peer-authentication").run(t, []goldenCase{
		{"STRICT plaintext", "10.244.1.10", "10.244.1.11:9080", "", false, "weft-system/weft_static_strict"},
		{"STRICT mTLS", "10.244.1.10", "10.244.1.11:9080", "cluster.local/ns/default/sa/bookinfo-productpage", true, ""},
		{"STRICT, PERMISSIVE port plaintext", "10.0.0.1", "10.244.1.10:9090", "", true, ""},
		{"STRICT, PERMISSIVE port, other port plaintext", "10.0.0.1", "10.244.1.10:9080", "", false, "default/weft_peer_authentication_productpage-probes"},
		{"PERMISSIVE workload plaintext", "10.0.0.1", "10.244.1.15:9080", "", true, ""},
		{"PERMISSIVE, STRICT port plaintext", "10.0.0.1", "10.244.7.2:8443", "", false, "legacy/weft_peer_authentication_metrics-port-strict"},
		{"PERMISSIVE, STRICT port mTLS", "10.0.0.1", "10.244.7.2:8443", "cluster.local/ns/default/sa/x", true, ""},
		{"PERMISSIVE, other port plaintext", "10.0.0.1", "10.244.7.2:8080", "", true, ""},
		{"legacy db plaintext", "10.0.0.1", "10.244.7.3:5432", "", true, ""},
		{"secure vault plaintext", "10.0.0.1", "10.244.8.1:8200", "", false, "weft-system/weft_static_strict"},
	})
}

func TestGoldenMalformed(t *testing.T) {
	// deny-bad-port lost its bad port field and kept an empty rule, so as
	// a DENY it now matches every connection to the namespace.
	loadGolden(t, "malformed").run(t, []goldenCase{
		{"mTLS from default", "10.244.1.2", "10.244.1.1:8080", "cluster.local/ns/default/sa/x", false, "default/deny-bad-port"},
		{"plaintext", "10.244.1.2", "10.244.1.1:8080", "", false, "default/deny-bad-port"},
	})
}

func TestGoldenAllLoad(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("..", "..", "control", "workload", "testdata", "*", "expected.json"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no goldens: %v", err)
	}
	for _, d := range dirs {
		name := filepath.Base(filepath.Dir(d))
		t.Run(name, func(t *testing.T) {
			g := loadGolden(t, name)
			// Every workload can be checked without surprises.
			for ip, dst := range g.dst {
				_ = g.store.Plan(dst).Check(Conn{SourceIP: ip, DestIP: ip, DestPort: 80})
			}
		})
	}
}
