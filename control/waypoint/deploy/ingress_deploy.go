package deploy

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// Deployed ingress gateways: for a Gateway of class weft, Weft deploys a
// gateway of its own, as Istio's gateway deployment controller does: a
// ServiceAccount, a Deployment running weft-gateway (GatewayCommand) and a
// LoadBalancer Service whose ports are the listeners' ports, all named
// "<gateway>-weft" and owned by the Gateway, labelled and annotated with
// spec.infrastructure; status.addresses come from that Service. The
// translation serves the Gateway to those pods only (IngressSelector,
// IngressNamespace), and they get no other Gateway's configuration: their
// xDS snapshot is keyed by their service account. A Gateway annotated
// weft.io/gateway-selector is served by the pods it selects instead
// (charts/gateway; Istio's "manual deployment"), and nothing is deployed.

// LabelGatewayNamespace, on a RoleBinding Weft made for a deployed
// gateway, names the Gateway's namespace (the binding may be in another
// one, where no owner reference can point).
const LabelGatewayNamespace = "weft.io/gateway-namespace"

// Deployed reports whether Weft deploys the gateway of ingress Gateway gw
// (no weft.io/gateway-selector annotation).
func Deployed(gw *gatewayv1.Gateway) bool {
	_, manual := gw.Annotations[AnnotationGatewaySelector]
	return IsIngress(gw) && !manual
}

// IngressNamespace is the only namespace whose pods may serve ingress
// Gateway gw: its own when Weft deploys its gateway, "" (any) for one
// served by the pods its selector names.
func IngressNamespace(gw *gatewayv1.Gateway) string {
	if Deployed(gw) {
		return gw.Namespace
	}
	return ""
}

// servedPorts are the distinct ports of gw's listeners whose protocols
// the gateway serves, in listener order.
func servedPorts(gw *gatewayv1.Gateway) []gatewayv1.Listener {
	var out []gatewayv1.Listener
	for _, l := range gw.Spec.Listeners {
		if IngressProtocolSupported(l.Protocol) && !slices.ContainsFunc(out, func(o gatewayv1.Listener) bool { return o.Port == l.Port }) {
			out = append(out, l)
		}
	}
	return out
}

// ingressServiceSpec is the Service of a deployed gateway: LoadBalancer
// (Istio's default), one port per listener port, served on the same port
// by the pods (ingressPod lets them bind ports below 1024). A Gateway
// with no servable listener still gets its first listener's port (a
// Service needs one).
func ingressServiceSpec(gw *gatewayv1.Gateway) *corev1ac.ServiceSpecApplyConfiguration {
	spec := corev1ac.ServiceSpec().WithType(corev1.ServiceTypeLoadBalancer).WithSelector(SelectorLabels(gw))
	ports := servedPorts(gw)
	if len(ports) == 0 && len(gw.Spec.Listeners) > 0 {
		ports = gw.Spec.Listeners[:1]
	}
	for _, l := range ports {
		spec.WithPorts(corev1ac.ServicePort().WithName(strings.ToLower(string(l.Protocol)) + "-" + strconv.Itoa(int(l.Port))).
			WithPort(int32(l.Port)).WithTargetPort(intstr.FromInt32(int32(l.Port))).WithProtocol(corev1.ProtocolTCP))
	}
	return spec
}

// gatewayContainer runs weft-gateway (the waypoint image's gateway
// binary, weft-waypoint in gateway mode plus Secrets) for gw: the
// waypoint container's identity, environment, probe and hardening, the
// listener ports instead of HBONE, and Kubernetes API access to read its
// certificates (from its namespace and credentialNamespaces).
func gatewayContainer(cfg Config, gw *gatewayv1.Gateway, credentialNamespaces []string) *corev1ac.ContainerApplyConfiguration {
	c := waypointContainer(cfg, gw.Namespace, ObjectName(gw))
	c.Command = []string{GatewayCommand}
	c.Args = []string{"--mode=gateway"}
	if len(credentialNamespaces) > 0 {
		c.Args = append(c.Args, "--credential-namespaces="+strings.Join(credentialNamespaces, ","))
	}
	c.Ports = nil
	for _, l := range servedPorts(gw) {
		c.WithPorts(corev1ac.ContainerPort().WithContainerPort(int32(l.Port)).WithProtocol(corev1.ProtocolTCP))
	}
	c.WithPorts(
		corev1ac.ContainerPort().WithName("metrics").WithContainerPort(mesh.MetricsPort).WithProtocol(corev1.ProtocolTCP),
		corev1ac.ContainerPort().WithName("readiness").WithContainerPort(mesh.ReadinessPort).WithProtocol(corev1.ProtocolTCP))
	return c.WithVolumeMounts(corev1ac.VolumeMount().WithName("kube-api-access").
		WithMountPath("/var/run/secrets/kubernetes.io/serviceaccount").WithReadOnly(true))
}

// ingressPod completes a deployed gateway's pod spec: unprivileged ports
// start at 0 in the pod's network namespace (a namespaced, safe sysctl;
// Istio's gateways do the same) so the non-root gateway binds port 80 and
// 443 itself; and Kubernetes API access, for one thing only: reading the
// Secrets its HTTPS listeners name (secretBindings), spelled out as in
// charts/gateway so its lifetime and use are visible.
func ingressPod(pod *corev1ac.PodSpecApplyConfiguration) {
	pod.SecurityContext.WithSysctls(corev1ac.Sysctl().WithName("net.ipv4.ip_unprivileged_port_start").WithValue("0"))
	pod.WithVolumes(corev1ac.Volume().WithName("kube-api-access").WithProjected(corev1ac.ProjectedVolumeSource().WithSources(
		corev1ac.VolumeProjection().WithServiceAccountToken(corev1ac.ServiceAccountTokenProjection().
			WithExpirationSeconds(TokenExpiration).WithPath("token")),
		corev1ac.VolumeProjection().WithConfigMap(corev1ac.ConfigMapProjection().WithName("kube-root-ca.crt").
			WithItems(corev1ac.KeyToPath().WithKey("ca.crt").WithPath("ca.crt"))),
		corev1ac.VolumeProjection().WithDownwardAPI(corev1ac.DownwardAPIProjection().WithItems(
			corev1ac.DownwardAPIVolumeFile().WithPath("namespace").
				WithFieldRef(corev1ac.ObjectFieldSelector().WithFieldPath("metadata.namespace")))))))
}

// bindingName names a RoleBinding of deployed gateway gw (role "secrets"
// or "secret-check"); the Gateway's namespace is part of it, as bindings
// of Gateways of several namespaces may share a Secrets namespace.
func bindingName(gw *gatewayv1.Gateway, role string) string {
	return ObjectName(gw) + "." + gw.Namespace + "-" + role
}

// secretBindings are the RoleBindings, in gw's namespace and in each of
// credentialNamespaces (where ReferenceGrants let gw's certificateRefs
// point), that let the deployed gateway read Secrets there
// (cfg.GatewaySecretsRole) and weft-control check the Secrets its
// listeners name (cfg.SecretCheckRole), both ClusterRoles of
// charts/control. None when cfg names no roles (then HTTPS listeners do
// not resolve). The one in gw's namespace is owned by gw; the others are
// labelled with it and removed by the controller (pruneBindings).
func secretBindings(cfg Config, gw *gatewayv1.Gateway, labels map[string]string, credentialNamespaces []string) []*rbacv1ac.RoleBindingApplyConfiguration {
	if cfg.GatewaySecretsRole == "" || cfg.SecretCheckRole == "" {
		return nil
	}
	ctrlNS, ctrlSA, _ := strings.Cut(cfg.ControlServiceAccount, "/")
	var out []*rbacv1ac.RoleBindingApplyConfiguration
	for _, ns := range append([]string{gw.Namespace}, credentialNamespaces...) {
		l := map[string]string{LabelGatewayNamespace: gw.Namespace}
		for k, v := range labels {
			l[k] = v
		}
		for _, b := range []struct{ role, clusterRole, saNS, sa string }{
			{"secrets", cfg.GatewaySecretsRole, gw.Namespace, ObjectName(gw)},
			{"secret-check", cfg.SecretCheckRole, ctrlNS, ctrlSA},
		} {
			rb := rbacv1ac.RoleBinding(bindingName(gw, b.role), ns).WithLabels(l).
				WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup(rbacv1.GroupName).WithKind("ClusterRole").WithName(b.clusterRole)).
				WithSubjects(rbacv1ac.Subject().WithKind(rbacv1.ServiceAccountKind).WithNamespace(b.saNS).WithName(b.sa))
			if ns == gw.Namespace {
				rb.WithOwnerReferences(ownerRef(gw))
			}
			out = append(out, rb)
		}
	}
	return out
}

// credentialNamespaces are the namespaces other than gw's own whose
// Secrets its HTTPS listeners name, as ReferenceGrants permit
// (ListenerCredential), sorted.
func credentialNamespaces(gw *gatewayv1.Gateway, grants []*gatewayv1beta1.ReferenceGrant) []string {
	var out []string
	for i := range gw.Spec.Listeners {
		l := &gw.Spec.Listeners[i]
		if l.Protocol != gatewayv1.HTTPSProtocolType {
			continue
		}
		if ref, err := ListenerCredential(gw, l, grants); err == nil && ref.Namespace != gw.Namespace {
			out = append(out, ref.Namespace)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// bindingSelector selects the RoleBindings Weft made for the deployed
// gateway of Gateway ns/name, in any namespace.
func bindingSelector(ns, name string) string {
	return labels.Set{LabelManagedBy: ManagedBy, LabelGatewayName: name, LabelGatewayNamespace: ns}.String()
}

// pruneBindings deletes the RoleBindings Weft made for Gateway ns/name
// outside its namespace that are not in keep (namespace -> true): those of
// a certificateRef or ReferenceGrant that is gone, or all of them once the
// Gateway is deleted (keep nil). Those in the Gateway's namespace go with
// it (owner reference).
func (c *Controller) pruneBindings(ctx context.Context, ns, name string, keep map[string]bool) error {
	list, err := c.Kube.RbacV1().RoleBindings("").List(ctx, metav1.ListOptions{LabelSelector: bindingSelector(ns, name)})
	if err != nil {
		return fmt.Errorf("listing the gateway's RoleBindings: %w", err)
	}
	for _, rb := range list.Items {
		if rb.Namespace == ns || keep[rb.Namespace] {
			continue
		}
		err := c.Kube.RbacV1().RoleBindings(rb.Namespace).Delete(ctx, rb.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &rb.UID}})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting RoleBinding %s/%s: %w", rb.Namespace, rb.Name, err)
		}
		c.Log.Info("removed a gateway's Secret access", "gateway", ns+"/"+name, "rolebinding", rb.Namespace+"/"+rb.Name)
	}
	return nil
}

// ownsBinding reports whether RoleBinding rb was made for gw: controlled
// by it (its namespace), or labelled with it (others).
func ownsBinding(rb metav1.Object, gw *gatewayv1.Gateway) bool {
	if rb.GetNamespace() == gw.Namespace {
		return controlledBy(rb, gw)
	}
	l := rb.GetLabels()
	return l[LabelManagedBy] == ManagedBy && l[LabelGatewayName] == gw.Name && l[LabelGatewayNamespace] == gw.Namespace
}
