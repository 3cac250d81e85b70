package istiolabels

import "testing"

// TestValuesMatchNames: every value lands on its label's name.
func TestValuesMatchNames(t *testing.T) {
	src := &Peer{Workload: "sw", Namespace: "sns", Principal: "sp", CanonicalService: "sc", CanonicalRevision: "sr", Cluster: "scl"}
	dst := &Peer{Workload: "dw", Namespace: "dns", Principal: "dp", CanonicalService: "dc", CanonicalRevision: "dr"}
	svc := &Service{Host: "h", Name: "n", Namespace: "ns"}
	want := map[string]string{
		"reporter":                  "r",
		"source_workload":           "sw",
		"source_canonical_service":  "sc",
		"source_canonical_revision": "sr",
		"source_workload_namespace": "sns",
		"source_principal":          "sp",
		"source_app":                "sc", "source_version": "sr",
		"source_cluster":                 "scl",
		"destination_service":            "h",
		"destination_service_namespace":  "ns",
		"destination_service_name":       "n",
		"destination_workload":           "dw",
		"destination_canonical_service":  "dc",
		"destination_canonical_revision": "dr",
		"destination_workload_namespace": "dns",
		"destination_principal":          "dp",
		"destination_app":                "dc", "destination_version": "dr",
		"destination_cluster":        Unknown,
		"request_protocol":           "http",
		"response_flags":             "-",
		"connection_security_policy": "mutual_tls",
		"response_code":              "200",
		"grpc_response_status":       "",
	}
	check := func(names, values []string) {
		t.Helper()
		if len(names) != len(values) {
			t.Fatalf("%d names, %d values", len(names), len(values))
		}
		for i, n := range names {
			if values[i] != want[n] {
				t.Errorf("%s = %q, want %q", n, values[i], want[n])
			}
		}
	}
	check(TCP, TCPValues("r", src, dst, svc, "http", "-", "mutual_tls"))
	check(HTTP, HTTPValues("r", src, dst, svc, "http", "-", "mutual_tls", "200", ""))
	if len(HTTP) != len(want) {
		t.Errorf("%d HTTP labels, want %d", len(HTTP), len(want))
	}
}
