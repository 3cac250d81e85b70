// Package deploy is the waypoint deployment controller: for every Gateway of
// class weft-waypoint it keeps a ServiceAccount, a Deployment running
// weft-waypoint and a Service, all named like the Gateway and owned by it
// (deleting the Gateway deletes them), and it writes the Gateway's status.
// Rendering (Desired) and status (Status) are pure functions; Controller
// applies them with server-side apply. Run the controller on the leader only.
// See waypoint/README.md.
package deploy

import (
	"fmt"
	"maps"
	"strconv"

	"github.com/weft-mesh/weft/control/workload"
	"github.com/weft-mesh/weft/pkg/mesh"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// The contract (waypoint/README.md).
const (
	ClassName    = mesh.WaypointClass
	FieldManager = "weft-control"
	ListenerName = mesh.WaypointGatewayListener
	HBONE        = gatewayv1.ProtocolType(mesh.HBONEProtocol)

	LabelGatewayName   = mesh.LabelGatewayName
	LabelDataplaneMode = mesh.LabelDataplaneMode
	LabelAppName       = "app.kubernetes.io/name"
	AppName            = "weft-waypoint"
	// IngressAppName is the app name of the gateways deployed for
	// Gateways of class weft (ingress_deploy.go).
	IngressAppName = "weft-gateway"
	// GatewayCommand is the waypoint image's gateway binary, which the
	// gateways deployed for Gateways of class weft run.
	GatewayCommand = "weft-gateway"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "weft-control"

	// AnnotationReplicas on the Gateway sets the Deployment's replicas
	// (default 1).
	AnnotationReplicas = "weft.io/waypoint-replicas"

	// Prometheus scrape annotations of the waypoint pods (the
	// prometheus.io/* convention Istio's Prometheus addon follows).
	AnnotationPrometheusScrape = "prometheus.io/scrape"
	AnnotationPrometheusPort   = "prometheus.io/port"
	AnnotationPrometheusPath   = "prometheus.io/path"

	TokenAudience   = "weft-ca"
	TokenDir        = "/var/run/secrets/weft"
	TokenPath       = "token"
	TokenExpiration = 3600
	RootCertMap     = "weft-ca-root-cert"
	RootCertDir     = "/etc/weft/ca-root"
	ProxyUID        = 1337
	MaxReplicas     = 100
)

// Config is what the control plane knows about waypoints.
type Config struct {
	// Image of weft-waypoint, e.g. ghcr.io/weft-mesh/waypoint:<tag>.
	Image      string
	PullPolicy corev1.PullPolicy
	// TracingEndpoint, when set, is the OTLP/HTTP endpoint (e.g.
	// http://otel-collector.observability:4318) the waypoints send spans
	// to: it becomes OTEL_EXPORTER_OTLP_ENDPOINT of every waypoint
	// container, with OTEL_SERVICE_NAME=<gateway>.<namespace>. Empty: no
	// spans (trace headers are still propagated).
	TracingEndpoint string
	// GODEBUG of the waypoint and gateway containers (weft-control's
	// --waypoint-godebug, default mesh.ProxyGODEBUG); empty: none.
	GODEBUG string
	// GOMAXPROCS of the waypoint and gateway containers (weft-control's
	// --waypoint-gomaxprocs); 0: none, they follow their load
	// (pkg/gomaxprocs).
	GOMAXPROCS int
	// GatewaySecretsRole and SecretCheckRole are the ClusterRoles
	// (charts/control) that a deployed ingress gateway's RoleBindings grant
	// to it (read Secrets) and to weft-control (get Secrets, to check a
	// certificateRef), in its namespace and where its certificateRefs
	// point; ControlServiceAccount is weft-control's, "<ns>/<name>".
	// Empty: no RoleBindings (HTTPS listeners of deployed gateways do not
	// resolve).
	GatewaySecretsRole, SecretCheckRole, ControlServiceAccount string
}

// Environment of the waypoint containers when tracing is on.
const (
	EnvOTLPEndpoint = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvServiceName  = "OTEL_SERVICE_NAME"
)

// Validation is whether a Gateway can be deployed.
type Validation struct {
	Accepted bool
	Reason   gatewayv1.GatewayConditionReason
	Message  string
	Replicas int32
}

// ReasonUnsupportedValue: a listener other than HBONE on mesh.HBONEPort.
const ReasonUnsupportedValue gatewayv1.GatewayConditionReason = "UnsupportedValue"

// IsWaypoint reports whether the controller handles gw.
func IsWaypoint(gw *gatewayv1.Gateway) bool {
	return gw != nil && workload.IsWaypointClass(string(gw.Spec.GatewayClassName))
}

// Validate checks the Gateway against what a waypoint supports: listeners
// are HBONE on mesh.HBONEPort only (at least one), no infrastructure parametersRef,
// and a valid replica annotation. Pure.
func Validate(gw *gatewayv1.Gateway) Validation {
	v := Validation{Accepted: true, Reason: gatewayv1.GatewayReasonAccepted, Message: "Weft waypoint", Replicas: 1}
	if len(gw.Spec.Listeners) == 0 {
		return Validation{Reason: ReasonUnsupportedValue, Message: fmt.Sprintf("a waypoint needs a listener with protocol %s on port %d", HBONE, mesh.HBONEPort)}
	}
	for _, l := range gw.Spec.Listeners {
		if l.Protocol != HBONE || l.Port != mesh.HBONEPort {
			return Validation{Reason: ReasonUnsupportedValue,
				Message: fmt.Sprintf("listener %q: protocol %s port %d is not supported; a waypoint listens with protocol %s on port %d only", l.Name, l.Protocol, l.Port, HBONE, mesh.HBONEPort)}
		}
	}
	if inf := gw.Spec.Infrastructure; inf != nil && inf.ParametersRef != nil {
		return Validation{Reason: gatewayv1.GatewayReasonInvalidParameters,
			Message: fmt.Sprintf("infrastructure.parametersRef %s/%s %q is not supported (use the %s annotation)", inf.ParametersRef.Group, inf.ParametersRef.Kind, inf.ParametersRef.Name, AnnotationReplicas)}
	}
	n, err := replicas(gw)
	if err != nil {
		return Validation{Reason: gatewayv1.GatewayReasonInvalidParameters, Message: err.Error()}
	}
	v.Replicas = n
	return v
}

// replicas is the replica count the annotation AnnotationReplicas of gw
// asks for (default 1).
func replicas(gw *gatewayv1.Gateway) (int32, error) {
	s, ok := gw.Annotations[AnnotationReplicas]
	if !ok {
		return 1, nil
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil || n < 0 || n > MaxReplicas {
		return 0, fmt.Errorf("annotation %s=%q: want an integer from 0 to %d", AnnotationReplicas, s, MaxReplicas)
	}
	return int32(n), nil
}

// Objects are the desired objects of one waypoint or deployed ingress
// gateway, as apply configurations (only the fields Weft owns).
type Objects struct {
	ServiceAccount *corev1ac.ServiceAccountApplyConfiguration
	Deployment     *appsv1ac.DeploymentApplyConfiguration
	Service        *corev1ac.ServiceApplyConfiguration
	// RoleBindings let an ingress gateway read the Secrets its HTTPS
	// listeners name (ingress_deploy.go); none for a waypoint.
	RoleBindings []*rbacv1ac.RoleBindingApplyConfiguration
}

// ObjectName is the name of the ServiceAccount, Deployment and Service of
// gw: the Gateway's own name for a waypoint, "<name>-<class>" for an
// ingress Gateway, as Istio's deployment controller names them (its
// waypoint class drops the suffix, its other classes keep it).
func ObjectName(gw *gatewayv1.Gateway) string {
	if IsIngress(gw) {
		return gw.Name + "-" + string(gw.Spec.GatewayClassName)
	}
	return gw.Name
}

// SelectorLabels select a waypoint's or deployed gateway's pods (within
// the Gateway's namespace).
func SelectorLabels(gw *gatewayv1.Gateway) map[string]string {
	return map[string]string{LabelGatewayName: gw.Name}
}

// objectLabels: infrastructure labels first, Weft's win.
func objectLabels(gw *gatewayv1.Gateway) map[string]string {
	out := map[string]string{}
	if inf := gw.Spec.Infrastructure; inf != nil {
		for k, v := range inf.Labels {
			out[string(k)] = string(v)
		}
	}
	out[LabelGatewayName] = gw.Name
	out[LabelAppName] = AppName
	if IsIngress(gw) {
		out[LabelAppName] = IngressAppName
	}
	out[LabelManagedBy] = ManagedBy
	return out
}

func objectAnnotations(gw *gatewayv1.Gateway) map[string]string {
	out := map[string]string{}
	if inf := gw.Spec.Infrastructure; inf != nil {
		for k, v := range inf.Annotations {
			out[string(k)] = string(v)
		}
	}
	return out
}

func ownerRef(gw *gatewayv1.Gateway) *metav1ac.OwnerReferenceApplyConfiguration {
	// No blockOwnerDeletion: it would need update on gateways/finalizers.
	return metav1ac.OwnerReference().
		WithAPIVersion(gatewayv1.GroupVersion.String()).WithKind("Gateway").
		WithName(gw.Name).WithUID(gw.UID).WithController(true)
}

// Desired renders the objects of a waypoint Gateway, or of an ingress
// Gateway Weft deploys (Deployed), whose gateway reads certificates from
// the Secrets of its namespace and of credentialNamespaces (ignored for
// waypoints). Pure.
func Desired(cfg Config, gw *gatewayv1.Gateway, replicas int32, credentialNamespaces ...string) Objects {
	ns, name := gw.Namespace, ObjectName(gw)
	labels, annotations := objectLabels(gw), objectAnnotations(gw)
	meta := func() (map[string]string, map[string]string) { return maps.Clone(labels), maps.Clone(annotations) }

	l, a := meta()
	sa := corev1ac.ServiceAccount(name, ns).WithLabels(l).WithOwnerReferences(ownerRef(gw))
	if len(a) > 0 {
		sa.WithAnnotations(a)
	}

	tmpl := podTemplate(cfg, gw, labels, annotations, credentialNamespaces)
	l, a = meta()
	dep := appsv1ac.Deployment(name, ns).WithLabels(l).WithOwnerReferences(ownerRef(gw)).
		WithSpec(appsv1ac.DeploymentSpec().
			WithReplicas(replicas).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(SelectorLabels(gw))).
			WithTemplate(tmpl))
	if len(a) > 0 {
		dep.WithAnnotations(a)
	}

	l, a = meta()
	spec := corev1ac.ServiceSpec().WithType(corev1.ServiceTypeClusterIP).WithSelector(SelectorLabels(gw)).
		WithPorts(corev1ac.ServicePort().WithName(ListenerName).WithPort(mesh.HBONEPort).
			WithTargetPort(intstr.FromInt32(mesh.HBONEPort)).WithProtocol(corev1.ProtocolTCP))
	if IsIngress(gw) {
		spec = ingressServiceSpec(gw)
	}
	svc := corev1ac.Service(name, ns).WithLabels(l).WithOwnerReferences(ownerRef(gw)).WithSpec(spec)
	if len(a) > 0 {
		svc.WithAnnotations(a)
	}
	objs := Objects{ServiceAccount: sa, Deployment: dep, Service: svc}
	if IsIngress(gw) {
		objs.RoleBindings = secretBindings(cfg, gw, labels, credentialNamespaces)
	}
	return objs
}

// podTemplate is the pod of a waypoint Deployment: one waypoint container,
// its projected token and the mesh's root certificate, never captured. An
// ingress gateway's pod runs the same image in gateway mode
// (ingressPod).
func podTemplate(cfg Config, gw *gatewayv1.Gateway, labels, annotations map[string]string, credentialNamespaces []string) *corev1ac.PodTemplateSpecApplyConfiguration {
	name := ObjectName(gw)
	podLabels := maps.Clone(labels)
	podLabels[LabelDataplaneMode] = "none" // a waypoint is never captured
	container := waypointContainer(cfg, gw.Namespace, name)
	if IsIngress(gw) {
		container = gatewayContainer(cfg, gw, credentialNamespaces)
	}
	pod := corev1ac.PodSpec().
		WithServiceAccountName(name).
		WithAutomountServiceAccountToken(false).
		WithSecurityContext(corev1ac.PodSecurityContext().WithFSGroup(ProxyUID)).
		WithContainers(container).
		WithVolumes(
			corev1ac.Volume().WithName("weft-token").WithProjected(corev1ac.ProjectedVolumeSource().
				WithSources(corev1ac.VolumeProjection().WithServiceAccountToken(corev1ac.ServiceAccountTokenProjection().
					WithAudience(TokenAudience).WithExpirationSeconds(TokenExpiration).WithPath(TokenPath)))),
			corev1ac.Volume().WithName("weft-ca-root").WithConfigMap(corev1ac.ConfigMapVolumeSource().WithName(RootCertMap)),
		)
	// Prometheus finds waypoints the way Istio's addon finds its waypoints:
	// by annotation. The Gateway's infrastructure annotations win.
	podAnnotations := map[string]string{
		AnnotationPrometheusScrape: "true",
		AnnotationPrometheusPort:   strconv.Itoa(mesh.MetricsPort),
		AnnotationPrometheusPath:   "/metrics",
	}
	maps.Copy(podAnnotations, annotations)
	if IsIngress(gw) {
		ingressPod(pod)
	}
	return corev1ac.PodTemplateSpec().WithLabels(podLabels).WithAnnotations(podAnnotations).WithSpec(pod)
}

// waypointContainer runs the waypoint for the Gateway ns/name, unprivileged
// and read-only, with the ports, probe and mounts it needs.
func waypointContainer(cfg Config, ns, name string) *corev1ac.ContainerApplyConfiguration {
	pullPolicy := cfg.PullPolicy
	if pullPolicy == "" {
		pullPolicy = corev1.PullIfNotPresent
	}
	env := waypointEnv(cfg, ns, name)
	return corev1ac.Container().
		WithName("waypoint").
		WithImage(cfg.Image).
		WithImagePullPolicy(pullPolicy).
		WithArgs("--gateway="+ns+"/"+name).
		WithEnv(env...).
		WithPorts(
			corev1ac.ContainerPort().WithName("hbone").WithContainerPort(mesh.HBONEPort).WithProtocol(corev1.ProtocolTCP),
			corev1ac.ContainerPort().WithName("metrics").WithContainerPort(mesh.MetricsPort).WithProtocol(corev1.ProtocolTCP),
			corev1ac.ContainerPort().WithName("readiness").WithContainerPort(mesh.ReadinessPort).WithProtocol(corev1.ProtocolTCP),
		).
		WithReadinessProbe(corev1ac.Probe().
			WithHTTPGet(corev1ac.HTTPGetAction().WithPath("/healthz/ready").WithPort(intstr.FromInt32(mesh.ReadinessPort))).
			WithPeriodSeconds(2).WithFailureThreshold(3)).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName("weft-token").WithMountPath(TokenDir).WithReadOnly(true),
			corev1ac.VolumeMount().WithName("weft-ca-root").WithMountPath(RootCertDir).WithReadOnly(true),
		).
		WithSecurityContext(corev1ac.SecurityContext().
			WithRunAsNonRoot(true).WithRunAsUser(ProxyUID).WithRunAsGroup(ProxyUID).
			WithAllowPrivilegeEscalation(false).WithReadOnlyRootFilesystem(true).WithPrivileged(false).
			WithCapabilities(corev1ac.Capabilities().WithDrop("ALL")).
			WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault)))
}

// waypointEnv is the waypoint's environment: who it is (from the downward
// API) and, with tracing on, where spans go and under which service name.
func waypointEnv(cfg Config, ns, name string) []*corev1ac.EnvVarApplyConfiguration {
	fieldEnv := func(name, path string) *corev1ac.EnvVarApplyConfiguration {
		return corev1ac.EnvVar().WithName(name).WithValueFrom(corev1ac.EnvVarSource().
			WithFieldRef(corev1ac.ObjectFieldSelector().WithFieldPath(path)))
	}
	env := []*corev1ac.EnvVarApplyConfiguration{
		fieldEnv("POD_NAME", "metadata.name"),
		fieldEnv("POD_NAMESPACE", "metadata.namespace"),
		fieldEnv("SERVICE_ACCOUNT", "spec.serviceAccountName"),
		corev1ac.EnvVar().WithName("GATEWAY_NAME").WithValue(name),
	}
	if cfg.GODEBUG != "" {
		env = append(env, corev1ac.EnvVar().WithName("GODEBUG").WithValue(cfg.GODEBUG))
	}
	if cfg.GOMAXPROCS > 0 {
		env = append(env, corev1ac.EnvVar().WithName("GOMAXPROCS").WithValue(strconv.Itoa(cfg.GOMAXPROCS)))
	}
	if cfg.TracingEndpoint != "" {
		env = append(env,
			corev1ac.EnvVar().WithName(EnvOTLPEndpoint).WithValue(cfg.TracingEndpoint),
			corev1ac.EnvVar().WithName(EnvServiceName).WithValue(name+"."+ns))
	}
	return env
}
