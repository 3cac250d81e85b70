// Package install installs, upgrades and removes Weft's Helm releases with
// the Helm SDK, and cleans the nodes the node agents leave behind.
package install

// Component is a top-level key of weftctl install's values: one chart.
type Component string

// The components, in install order.
const (
	Base      Component = "base"
	Control   Component = "control"
	NodeAgent Component = "nodeAgent"
)

// Components lists them in install order: the CRDs before the control
// plane that watches them, the control plane before the agents that need
// its CA.
var Components = []Component{Base, Control, NodeAgent}

// Release is one of Weft's Helm releases.
type Release struct {
	Component Component
	Name      string // release name
	Chart     string // chart directory in the charts FS
	Namespace string
}

// BaseNamespace is where weft-base's release record lives: helm's default
// namespace, as `helm install weft-base charts/base` (docs, hack/demo.sh,
// e2e) puts it, so that weftctl upgrades those installs instead of
// conflicting with them. Its objects (CRDs) are cluster-scoped.
const BaseNamespace = "default"

// Releases are Weft's releases in install order, with weft-control and the
// node agents in ns.
func Releases(ns string) []Release {
	return []Release{
		{Base, "weft-base", "base", BaseNamespace},
		{Control, "weft-control", "control", ns},
		{NodeAgent, "weft-node-agent", "node-agent", ns},
	}
}

// UninstallOrder is the reverse of the install order; weft-base (the CRDs,
// and with them every user's mesh configuration) only with purge.
func UninstallOrder(ns string, purge bool) []Release {
	r := Releases(ns)
	out := []Release{r[2], r[1]}
	if purge {
		out = append(out, r[0])
	}
	return out
}
