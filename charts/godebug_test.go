package charts

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// TestProxiesRunWithProxyGODEBUG: the node agent and the gateway run with
// the GODEBUG the benchmarks measure them with (mesh.ProxyGODEBUG).
func TestProxiesRunWithProxyGODEBUG(t *testing.T) {
	_, ds := nodeAgentObjects(t, decodeNodeAgent(t, renderNodeAgent(t)), "weft-node-agent", "weft.io/agent-not-ready")
	checkGODEBUG(t, "node agent", ds.Spec.Template.Spec.Containers, "node-agent")
	d := get[appsv1.Deployment](t, decodeGateway(t, renderGateway(t)), "Deployment", gatewayRelease)
	checkGODEBUG(t, "gateway", d.Spec.Template.Spec.Containers, "")
}

// checkGODEBUG checks the container named name (the only one if "").
func checkGODEBUG(t *testing.T, what string, cs []corev1.Container, name string) {
	t.Helper()
	for _, c := range cs {
		if name != "" && c.Name != name {
			continue
		}
		for _, e := range c.Env {
			if e.Name == "GODEBUG" {
				if e.Value != mesh.ProxyGODEBUG {
					t.Errorf("%s: GODEBUG=%q, want %q", what, e.Value, mesh.ProxyGODEBUG)
				}
				return
			}
		}
		t.Errorf("%s: container %s has no GODEBUG, want %q", what, c.Name, mesh.ProxyGODEBUG)
		return
	}
	t.Errorf("%s: no container %q", what, name)
}
