package workload

import (
	"cmp"
	"slices"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	securityapi "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
)

// Names of the Authorizations derived from PeerAuthentications. They use
// '_', which Kubernetes names cannot contain, so they never collide with an
// AuthorizationPolicy (Istio does the same).
const (
	// StaticStrictPolicy (in the root namespace) denies connections without
	// an authenticated peer; workloads whose effective mode is STRICT on all
	// ports list it.
	StaticStrictPolicy   = "weft_static_strict"
	peerAuthPolicyPrefix = "weft_peer_authentication_"
)

// mtlsMode is a PeerAuthentication mode as the node agent sees it: DISABLE
// is PERMISSIVE, because an ambient node agent always accepts plaintext and
// mTLS alike unless told to deny plaintext.
type mtlsMode int

const (
	modeUnset mtlsMode = iota
	modePermissive
	modeStrict
)

func modeOf(m *securityapi.PeerAuthentication_MutualTLS) mtlsMode {
	switch m.GetMode() {
	case securityapi.PeerAuthentication_MutualTLS_STRICT:
		return modeStrict
	case securityapi.PeerAuthentication_MutualTLS_PERMISSIVE, securityapi.PeerAuthentication_MutualTLS_DISABLE:
		return modePermissive
	default:
		return modeUnset
	}
}

// peerAuthIndex holds the PeerAuthentications in effect. Precedence is
// Istio's (convertedSelectorPeerAuthentications): a workload policy
// (selector) overrides its namespace's policy, which overrides the mesh
// policy (root namespace, no selector); UNSET inherits; at each level the
// oldest policy wins (then the name, so the result is deterministic).
type peerAuthIndex struct {
	any       bool
	mesh      *securityv1.PeerAuthentication
	namespace map[string]*securityv1.PeerAuthentication
	// selector policies by namespace, oldest first.
	selector map[string][]*securityv1.PeerAuthentication
	// derived Authorization name per selector policy "<ns>/<name>", when
	// its port-level settings need one.
	derived map[string]string
}

func hasSelector(pa *securityv1.PeerAuthentication) bool {
	return len(pa.Spec.GetSelector().GetMatchLabels()) > 0
}

func olderFirst(a, b *securityv1.PeerAuthentication) int {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	return cmp.Compare(a.Name, b.Name)
}

func (t *translator) translatePeerAuthentications(pas []*securityv1.PeerAuthentication) {
	idx := peerAuthIndex{
		namespace: make(map[string]*securityv1.PeerAuthentication),
		selector:  make(map[string][]*securityv1.PeerAuthentication),
		derived:   make(map[string]string),
	}
	sorted := slices.DeleteFunc(slices.Clone(pas), func(pa *securityv1.PeerAuthentication) bool { return pa == nil })
	slices.SortFunc(sorted, olderFirst)
	for _, pa := range sorted {
		idx.any = true
		if hasSelector(pa) {
			// Unlike Istio ambient, which ignores selector policies in the
			// root namespace (istio/istio#61023), Weft applies them to the
			// root namespace's own workloads, as sidecar mode does.
			idx.selector[pa.Namespace] = append(idx.selector[pa.Namespace], pa)
			continue
		}
		if len(pa.Spec.PortLevelMtls) > 0 {
			t.problem("PeerAuthentication", pa.Namespace, pa.Name, "spec.portLevelMtls: needs a selector; ignored")
		}
		mesh := pa.Namespace == t.cfg.RootNamespace
		winner := idx.namespace[pa.Namespace]
		if mesh {
			winner = idx.mesh
		}
		switch {
		case winner != nil:
			t.problem("PeerAuthentication", pa.Namespace, pa.Name,
				"conflicts with the older PeerAuthentication %s without selector in this namespace; ignored", winner.Name)
		case mesh:
			idx.mesh = pa
		default:
			idx.namespace[pa.Namespace] = pa
		}
	}
	t.peerAuth = idx
	if idx.any {
		// Always available, as in Istio, so that workloads can refer to it.
		t.authorizations[key(t.cfg.RootNamespace, StaticStrictPolicy)] = &workloadv1.Authorization{
			Name:      StaticStrictPolicy,
			Namespace: t.cfg.RootNamespace,
			Scope:     workloadv1.Scope_WORKLOAD_SELECTOR,
			Action:    workloadv1.Action_DENY,
			Rules:     []*workloadv1.Rule{denyPlaintext(nil, nil)},
		}
	}
	for _, list := range idx.selector {
		for _, pa := range list {
			t.derivePeerAuthPolicy(pa)
		}
	}
}

// namespaceMode is the mode inherited by workloads of a namespace.
func (t *translator) namespaceMode(ns string) mtlsMode {
	mode := modePermissive
	if m := t.peerAuth.mesh; m != nil && modeOf(m.Spec.Mtls) != modeUnset {
		mode = modeOf(m.Spec.Mtls)
	}
	if n := t.peerAuth.namespace[ns]; n != nil && modeOf(n.Spec.Mtls) != modeUnset {
		mode = modeOf(n.Spec.Mtls)
	}
	return mode
}

// workloadMode is the mode of a workload under selector policy pa.
func (t *translator) workloadMode(pa *securityv1.PeerAuthentication) mtlsMode {
	if m := modeOf(pa.Spec.Mtls); m != modeUnset {
		return m
	}
	return t.namespaceMode(pa.Namespace)
}

// derivePeerAuthPolicy emits the Authorization for a selector policy whose
// port-level settings differ from its workload-level mode, like Istio's
// convertPeerAuthentication, as a single DENY rule: under STRICT, deny
// plaintext except on the PERMISSIVE/DISABLE ports; otherwise deny
// plaintext on the STRICT ports only. (One policy carries both the default
// and the exceptions: with two DENY policies the exception could not win.)
func (t *translator) derivePeerAuthPolicy(pa *securityv1.PeerAuthentication) {
	if len(pa.Spec.PortLevelMtls) == 0 {
		return
	}
	strict := t.workloadMode(pa) == modeStrict
	var exceptions []uint32
	for port, m := range pa.Spec.PortLevelMtls {
		if port == 0 || port > 65535 {
			t.problem("PeerAuthentication", pa.Namespace, pa.Name, "spec.portLevelMtls: %d is not a port number; ignored", port)
			continue
		}
		switch modeOf(m) {
		case modeStrict:
			if !strict {
				exceptions = append(exceptions, port)
			}
		case modePermissive:
			if strict {
				exceptions = append(exceptions, port)
			}
		}
	}
	if len(exceptions) == 0 {
		return
	}
	slices.Sort(exceptions)
	var rule *workloadv1.Rule
	if strict {
		rule = denyPlaintext(nil, exceptions)
	} else {
		rule = denyPlaintext(exceptions, nil)
	}
	name := peerAuthPolicyPrefix + pa.Name
	t.authorizations[key(pa.Namespace, name)] = &workloadv1.Authorization{
		Name:      name,
		Namespace: pa.Namespace,
		Scope:     workloadv1.Scope_WORKLOAD_SELECTOR,
		Action:    workloadv1.Action_DENY,
		Rules:     []*workloadv1.Rule{rule},
	}
	t.peerAuth.derived[key(pa.Namespace, pa.Name)] = key(pa.Namespace, name)
}

// denyPlaintext matches connections without an authenticated peer (no
// principal), optionally only on some ports or on all but some.
func denyPlaintext(ports, exceptPorts []uint32) *workloadv1.Rule {
	return &workloadv1.Rule{Clauses: []*workloadv1.Clause{{Matches: []*workloadv1.Match{{
		NotPrincipals:       []*workloadv1.StringMatch{{MatchType: &workloadv1.StringMatch_Presence{Presence: true}}},
		DestinationPorts:    ports,
		NotDestinationPorts: exceptPorts,
	}}}}}
}

// peerAuthPolicy returns the name of the Authorization that enforces the
// pod's effective PeerAuthentication, "" when it accepts plaintext.
func (t *translator) peerAuthPolicy(pod *corev1.Pod) string {
	if !t.peerAuth.any {
		return ""
	}
	var wl *securityv1.PeerAuthentication
	for _, pa := range t.peerAuth.selector[pod.Namespace] {
		if !selects(pa.Spec.GetSelector().GetMatchLabels(), pod.Labels) {
			continue
		}
		if wl == nil {
			wl = pa
			continue
		}
		t.problem("PeerAuthentication", pa.Namespace, pa.Name,
			"selects the same workloads as the older PeerAuthentication %s, which takes precedence for them", wl.Name)
	}
	if wl == nil {
		if t.namespaceMode(pod.Namespace) == modeStrict {
			return key(t.cfg.RootNamespace, StaticStrictPolicy)
		}
		return ""
	}
	if d := t.peerAuth.derived[key(wl.Namespace, wl.Name)]; d != "" {
		return d
	}
	if t.workloadMode(wl) == modeStrict {
		return key(t.cfg.RootNamespace, StaticStrictPolicy)
	}
	return ""
}
