package charts

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// TestProxiesGODEBUG: by default the node agent, the gateway and (through
// weft-control's flag) the waypoints run with the GODEBUG the benchmarks
// measure them with (mesh.ProxyGODEBUG); godebug "" leaves it out.
func TestProxiesGODEBUG(t *testing.T) {
	for _, v := range []string{mesh.ProxyGODEBUG, ""} {
		var set []string
		if v == "" {
			set = []string{"--set", "godebug="}
		}
		_, ds := nodeAgentObjects(t, decodeNodeAgent(t, renderNodeAgent(t, set...)), "weft-node-agent", "weft.io/agent-not-ready")
		checkGODEBUG(t, "node agent", ds.Spec.Template.Spec.Containers, "node-agent", v)
		d := get[appsv1.Deployment](t, decodeGateway(t, renderGateway(t, set...)), "Deployment", gatewayRelease)
		checkGODEBUG(t, "gateway", d.Spec.Template.Spec.Containers, "", v)
		if v == "" {
			set = []string{"--set", "waypoint.godebug="}
		}
		c := controlContainer(t, get[appsv1.Deployment](t, decode(t, render(t, "control", set...)), "Deployment", "weft-control"))
		if !slices.Contains(c.Args, "--waypoint-godebug="+v) {
			t.Errorf("control plane args %q lack --waypoint-godebug=%s", c.Args, v)
		}
	}
}

// TestProxiesGOMAXPROCS: by default no proxy has GOMAXPROCS set, so each
// follows its load (pkg/gomaxprocs); the gomaxprocs values pin it.
func TestProxiesGOMAXPROCS(t *testing.T) {
	for _, v := range []string{"", "2"} {
		var set, waypointSet []string
		if v != "" {
			set, waypointSet = []string{"--set", "gomaxprocs=" + v}, []string{"--set", "waypoint.gomaxprocs=" + v}
		}
		_, ds := nodeAgentObjects(t, decodeNodeAgent(t, renderNodeAgent(t, set...)), "weft-node-agent", "weft.io/agent-not-ready")
		checkEnv(t, "node agent", ds.Spec.Template.Spec.Containers, "node-agent", "GOMAXPROCS", v)
		d := get[appsv1.Deployment](t, decodeGateway(t, renderGateway(t, set...)), "Deployment", gatewayRelease)
		checkEnv(t, "gateway", d.Spec.Template.Spec.Containers, "", "GOMAXPROCS", v)
		c := controlContainer(t, get[appsv1.Deployment](t, decode(t, render(t, "control", waypointSet...)), "Deployment", "weft-control"))
		pinned := slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--waypoint-gomaxprocs") })
		if pinned != (v != "") || v != "" && !slices.Contains(c.Args, "--waypoint-gomaxprocs="+v) {
			t.Errorf("waypoint.gomaxprocs %q: control plane args %q", v, c.Args)
		}
	}
}

// TestNodeAgentGOGC: by default the node agent has no GOGC, so it runs
// at its own (agent.GCPercent); the gogc value sets it.
func TestNodeAgentGOGC(t *testing.T) {
	for _, v := range []string{"", "100"} {
		var set []string
		if v != "" {
			set = []string{"--set-string", "gogc=" + v}
		}
		_, ds := nodeAgentObjects(t, decodeNodeAgent(t, renderNodeAgent(t, set...)), "weft-node-agent", "weft.io/agent-not-ready")
		checkEnv(t, "node agent", ds.Spec.Template.Spec.Containers, "node-agent", "GOGC", v)
	}
}

// checkGODEBUG checks the GODEBUG of the container named name (the only
// one if ""): want, or none when want is "".
func checkGODEBUG(t *testing.T, what string, cs []corev1.Container, name, want string) {
	t.Helper()
	checkEnv(t, what, cs, name, "GODEBUG", want)
}

// checkEnv checks the variable key of the container named name (the only
// one if ""): want, or unset when want is "".
func checkEnv(t *testing.T, what string, cs []corev1.Container, name, key, want string) {
	t.Helper()
	for _, c := range cs {
		if name != "" && c.Name != name {
			continue
		}
		got, found := "", false
		for _, e := range c.Env {
			if e.Name == key {
				got, found = e.Value, true
			}
		}
		if got != want || found != (want != "") {
			t.Errorf("%s: %s %q (set: %v), want %q", what, key, got, found, want)
		}
		return
	}
	t.Errorf("%s: no container %q", what, name)
}
