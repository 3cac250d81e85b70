package analyze

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// nodeAgents reports, for every namespace labelled
// istio.io/dataplane-mode=ambient, the nodes without a Running and Ready
// node agent: pods there are not captured (no mTLS, no L4 policy) while
// the namespace says they are in the mesh. An error when pods of the
// namespace run on such a node, a warning otherwise (pods may be scheduled
// there at any time).
func (a *analyzer) nodeAgents() {
	if len(a.s.Nodes) == 0 {
		return // no Nodes in the snapshot: nothing to compare with
	}
	ready := map[string]bool{}
	for _, p := range a.s.NodeAgents {
		if p != nil && p.DeletionTimestamp == nil && p.Spec.NodeName != "" &&
			p.Status.Phase == corev1.PodRunning && podReady(p) {
			ready[p.Spec.NodeName] = true
		}
	}
	var missing []string
	for _, n := range a.s.Nodes {
		if n != nil && !ready[n.Name] {
			missing = append(missing, n.Name)
		}
	}
	if len(missing) == 0 {
		return
	}
	slices.Sort(missing)
	for _, ns := range a.s.Namespaces {
		if ns == nil || !mesh.Enrolled(nil, ns.Labels) {
			continue
		}
		// Pods of the namespace on nodes without an agent.
		stranded := map[string][]string{}
		for _, p := range a.s.Pods {
			if p == nil || p.Namespace != ns.Name || p.Spec.HostNetwork || podDone(p) ||
				!slices.Contains(missing, p.Spec.NodeName) || !mesh.Enrolled(p.Labels, ns.Labels) {
				continue
			}
			stranded[p.Spec.NodeName] = append(stranded[p.Spec.NodeName], p.Name)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "labelled %s=%s, but node(s) %s have no Running and Ready node agent (DaemonSet %s in %s)",
			labelDataplaneMode, dataplaneAmbient, strings.Join(missing, ", "), a.o.NodeAgentDaemonSet, a.o.RootNamespace)
		sev := Warning
		if len(stranded) > 0 {
			sev = Error
			var parts []string
			for _, node := range missing {
				if pods := stranded[node]; len(pods) > 0 {
					slices.Sort(pods)
					parts = append(parts, fmt.Sprintf("%s on %s", strings.Join(pods, ", "), node))
				}
			}
			fmt.Fprintf(&b, ": pods %s are not captured (no mTLS, no authorization policy, no waypoint)", strings.Join(parts, "; "))
		} else {
			b.WriteString(": no pod of this namespace runs there now, but any scheduled there would not be captured (no mTLS, no authorization policy)")
		}
		b.WriteString("; check the DaemonSet's pods (tolerations, node selector, crash loops)")
		a.add(sev, "Namespace", "", ns.Name, CodeNodeAgentMissing, b.String())
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podDone(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}
