package mesh

import (
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// WorkloadID is the SPIFFE ID of service account sa in namespace ns:
// spiffe://<td>/ns/<ns>/sa/<sa>, the form weft-control's CA issues.
func WorkloadID(td spiffeid.TrustDomain, ns, sa string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, "ns", ns, "sa", sa)
}

// ParseWorkloadID splits a SPIFFE ID of exactly WorkloadID's form; ok is
// false for any other path.
func ParseWorkloadID(id spiffeid.ID) (ns, sa string, ok bool) {
	parts := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" || parts[1] == "" || parts[3] == "" {
		return "", "", false
	}
	return parts[1], parts[3], true
}

// NamespaceOf is the segment after "ns" in a Kubernetes-style SPIFFE ID
// (for telemetry: it accepts any path with an "ns" segment), "" without
// one.
func NamespaceOf(id spiffeid.ID) string {
	parts := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	for i := 0; i+1 < len(parts); i++ {
		if parts[i] == "ns" {
			return parts[i+1]
		}
	}
	return ""
}
