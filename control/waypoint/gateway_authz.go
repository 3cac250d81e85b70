package waypoint

import (
	"cmp"
	"slices"
	"strings"

	typeapi "istio.io/api/type/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/control/waypoint/deploy"
)

// An ingress gateway applies the AuthorizationPolicies and
// RequestAuthentications of its pods, as Istio's gateways do (they are
// workloads, not waypoints): those whose selector matches the pods' labels
// in the pods' namespace or the root namespace, those without selector in
// either (namespace- and mesh-wide), and those with targetRefs to a Gateway
// API Gateway the pods serve. Gateway pods are not enrolled, so no node
// agent enforces them there. ipBlocks and remoteIpBlocks match the
// downstream TCP peer (Istio's default of no trusted proxy in front).

// gatewayAuthz is the policies an ingress gateway deployment applies.
type gatewayAuthz struct {
	pols []*authzPolicy
	jwt  []*jwtPolicy
}

// http is the authorization of the gateway's HTTP chain (refs gets the
// external authorizer's cluster, if a CUSTOM policy applies).
func (a gatewayAuthz) http(t *translator, chain string, refs map[string]clusterRef) chainAuthz {
	c := t.httpAuthz(chain, jwtAuthn(slices.Clone(a.jwt)), a.pols)
	c.addCluster(refs)
	return c
}

// indexIngressNames records the Gateway API Gateways served by ingress
// gateway deployments: targetRefs to them configure those, not waypoints.
func (t *translator) indexIngressNames(gws []*gatewayv1.Gateway) {
	for _, gw := range gws {
		if gw != nil && deploy.IsIngress(gw) {
			t.ingressNames[gw.Namespace+"/"+gw.Name] = true
		}
	}
}

// gatewayAuthzFor collects what applies to the gateway deployment of pod
// serving gws.
func (t *translator) gatewayAuthzFor(pod *corev1.Pod, gws []*networkingv1.Gateway) gatewayAuthz {
	var a gatewayAuthz
	for _, ap := range t.authzPolicies {
		if !t.selectsGateway(ap.Namespace, ap.Spec.Selector, targetRefs(ap.Spec.TargetRefs, ap.Spec.TargetRef), pod, gws) {
			continue
		}
		t.usedByGateway[ap] = true
		if pol := t.gatewayPolicy(ap); pol != nil {
			a.pols = append(a.pols, pol)
		}
	}
	for _, ra := range t.requestAuthns {
		if t.selectsGateway(ra.Namespace, ra.Spec.Selector, targetRefs(ra.Spec.TargetRefs, ra.Spec.TargetRef), pod, gws) {
			t.usedByGateway[ra] = true
			a.jwt = append(a.jwt, t.jwtPolicyOf(ra))
		}
	}
	return a
}

// selectsGateway: a policy of namespace ns with that selector or those
// targetRefs applies to the gateway pod serving gws.
func (t *translator) selectsGateway(ns string, selector *typeapi.WorkloadSelector, refs []*typeapi.PolicyTargetReference,
	pod *corev1.Pod, gws []*networkingv1.Gateway) bool {
	if len(refs) > 0 {
		return selector == nil && slices.ContainsFunc(refs, func(r *typeapi.PolicyTargetReference) bool {
			key := ns + "/" + r.Name
			return r.Group == "gateway.networking.k8s.io" && r.Kind == "Gateway" && cmp.Or(r.Namespace, ns) == ns && t.ingressNames[key] &&
				slices.ContainsFunc(gws, func(g *networkingv1.Gateway) bool { return g.Namespace+"/"+g.Name == key })
		})
	}
	if ns != pod.Namespace && ns != t.cfg.RootNamespace {
		return false
	}
	return labels.SelectorFromSet(selector.GetMatchLabels()).Matches(labels.Set(pod.Labels))
}

// gatewayPolicy translates ap for ingress gateways, once.
func (t *translator) gatewayPolicy(ap *securityv1.AuthorizationPolicy) *authzPolicy {
	if pol, ok := t.gatewayAPs[ap]; ok {
		return pol
	}
	pol := t.waypointPolicy(ap, func(format string, args ...any) { t.problem(kindAP, ap.Namespace, ap.Name, format, args...) }, true)
	t.gatewayAPs[ap] = pol
	return pol
}

// reportUnusedRequestAuthentications reports the RequestAuthentications
// without targetRefs (or with targetRefs only to ingress Gateways) that
// no ingress gateway applies: waypoints apply only those with targetRefs.
func (t *translator) reportUnusedRequestAuthentications() {
	for _, ra := range t.requestAuthns {
		refs := targetRefs(ra.Spec.TargetRefs, ra.Spec.TargetRef)
		if t.usedByGateway[ra] || len(refs) > 0 && !slices.ContainsFunc(refs, func(r *typeapi.PolicyTargetReference) bool {
			return t.ingressNames[cmp.Or(r.Namespace, ra.Namespace)+"/"+r.Name]
		}) {
			continue
		}
		what := "no targetRefs"
		if ra.Spec.Selector != nil {
			what = "spec.selector"
		}
		if len(refs) > 0 {
			what = "spec.targetRefs"
		}
		t.problem(kindRA, ra.Namespace, ra.Name, "%s: applies to no ingress gateway, and waypoints apply only RequestAuthentications with targetRefs (a waypoint Gateway or a Service); not applied", what)
	}
}

// reportUnenforcedSelectorPolicies reports the AuthorizationPolicies whose
// selector picks only pods outside the mesh, none of them an ingress
// gateway's: nothing enforces them (control/workload leaves them to this
// report).
func (t *translator) reportUnenforcedSelectorPolicies() {
	for _, ap := range t.authzPolicies {
		sel := ap.Spec.GetSelector().GetMatchLabels()
		if len(sel) == 0 || len(targetRefs(ap.Spec.TargetRefs, ap.Spec.TargetRef)) > 0 || t.usedByGateway[ap] {
			continue
		}
		var outside []string
		for _, w := range t.workloads {
			if (ap.Namespace != t.cfg.RootNamespace && w.Namespace != ap.Namespace) ||
				!labels.SelectorFromSet(sel).Matches(labels.Set(t.podLabels[w.Uid])) {
				continue
			}
			if w.TunnelProtocol == workloadv1.TunnelProtocol_HBONE {
				outside = nil
				break
			}
			outside = append(outside, w.Namespace+"/"+w.Name)
		}
		if len(outside) > 0 {
			t.problem(kindAP, ap.Namespace, ap.Name, "spec.selector: picks only pods outside the mesh (%s), none of an ingress gateway Weft serves: nothing enforces the policy",
				strings.Join(outside, ", "))
		}
	}
}
