package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoKubernetesClient: a waypoint never talks to the API server,
// and client-go's packages cost it ~14 MB of resident memory at start
// (their init registers every API type) before it serves a request.
// Gateways read Secrets in weft-gateway.
func TestLinksNoKubernetesClient(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "k8s.io/client-go/") || strings.HasPrefix(pkg, "k8s.io/api/") {
			t.Errorf("weft-waypoint links %s", pkg)
		}
	}
}
