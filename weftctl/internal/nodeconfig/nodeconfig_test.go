package nodeconfig

import (
	"encoding/json"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/weft-mesh/weft/weftctl/internal/output"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// golden compares a rendered table with testdata/<name>.golden.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := "testdata/" + name + ".golden"
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if got != string(want) {
		t.Fatalf("%s:\n%s\nwant (%s)\n%s", name, got, path, want)
	}
}

var now = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func load(t *testing.T) *Dump {
	t.Helper()
	b, err := os.ReadFile("testdata/config_dump.json")
	if err != nil {
		t.Fatal(err)
	}
	d, err := ParseDump(b)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func table(t *testing.T, tab output.Tabular) string {
	t.Helper()
	var b strings.Builder
	if err := output.WriteTable(&b, tab.Header(), tab.Rows()); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestWorkloads(t *testing.T) {
	d := load(t)
	if !d.Synced || d.Version != 7 {
		t.Fatalf("dump %+v", d)
	}
	got := table(t, WorkloadRows(d, Filter{}))
	golden(t, "workloads", got)
	rows := WorkloadRows(d, Filter{WorkloadNode: "node-0", Namespace: "default"})
	if len(rows) != 1 || rows[0].Name != "productpage-v1-abc" || !rows[0].Enrolled {
		t.Fatalf("filtered %+v", rows)
	}
	b, _ := json.Marshal(WorkloadRows(d, Filter{Namespace: "nothing"}))
	if string(b) != "[]" {
		t.Fatalf("empty JSON %s", b)
	}
}

func TestServices(t *testing.T) {
	got := table(t, ServiceRows(load(t), Filter{}))
	golden(t, "services", got)
}

func TestPolicies(t *testing.T) {
	got := table(t, PolicyRows(load(t), Filter{}))
	golden(t, "policies", got)
}

func TestCertificatesNeverShowKeys(t *testing.T) {
	c := CertificateRows(load(t), Filter{}, now)
	got := table(t, c)
	golden(t, "certificates", got)
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), `[{"identity":"spiffe://cluster.local/ns/default/sa/bookinfo-details"`) {
		t.Fatalf("json %s", b)
	}
	if f := CertificateRows(load(t), Filter{Namespace: "other"}, now); len(f.List) != 1 {
		t.Fatalf("namespace filter: %+v", f.List)
	}
}

func TestConnections(t *testing.T) {
	b, err := os.ReadFile("testdata/connections.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConnections(b, Filter{}, now)
	if err != nil {
		t.Fatal(err)
	}
	rows := c.Rows()
	if len(rows) != 2 || rows[0][1] != "default/productpage-v1 (10.244.0.5:40000)" || rows[0][7] != "1m0s" || rows[1][1] != "10.244.0.9:1234" {
		t.Fatalf("rows %v", rows)
	}
	if f, _ := ParseConnections(b, Filter{Namespace: "default"}, now); len(f.List) != 1 {
		t.Fatalf("filtered %+v", f.List)
	}
	if _, err := ParseConnections([]byte("{"), Filter{}, now); err == nil {
		t.Fatal("garbage accepted")
	}
}

func TestParseDumpErrors(t *testing.T) {
	if _, err := ParseDump([]byte("not json")); err == nil {
		t.Fatal("garbage accepted")
	}
	if _, err := ParseDump([]byte(`{"config":{"workloads":{"x":{"addresses":5}}}}`)); err == nil || !strings.Contains(err.Error(), "workload x") {
		t.Fatalf("bad workload: %v", err)
	}
}
