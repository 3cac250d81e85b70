package mesh

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestWorkloadID(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	id, err := WorkloadID(td, "default", "bookinfo-productpage")
	if err != nil || id.String() != "spiffe://cluster.local/ns/default/sa/bookinfo-productpage" {
		t.Fatalf("WorkloadID = %v, %v", id, err)
	}
	if ns, sa, ok := ParseWorkloadID(id); !ok || ns != "default" || sa != "bookinfo-productpage" {
		t.Errorf("ParseWorkloadID(%v) = %q %q %v", id, ns, sa, ok)
	}
	if ns := NamespaceOf(id); ns != "default" {
		t.Errorf("NamespaceOf(%v) = %q", id, ns)
	}
	for _, p := range []string{"/ns/default", "/ns/default/sa/x/extra", "/sa/x/ns/default", "/ns/default/x/y"} {
		other := spiffeid.RequireFromPath(td, p)
		if _, _, ok := ParseWorkloadID(other); ok {
			t.Errorf("ParseWorkloadID(%v) ok", other)
		}
	}
	// NamespaceOf is lenient: any "ns" segment.
	if ns := NamespaceOf(spiffeid.RequireFromPath(td, "/sa/x/ns/default")); ns != "default" {
		t.Errorf("NamespaceOf = %q", ns)
	}
	if ns := NamespaceOf(spiffeid.RequireFromPath(td, "/gateway")); ns != "" {
		t.Errorf("NamespaceOf = %q", ns)
	}
}
