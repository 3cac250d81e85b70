// Package charts tests Weft's Helm charts through the helm CLI: lint, golden
// renders, the values schemas, and typed, strict decoding of every rendered
// object. The package holds no code; the charts are the product.
package charts

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/kube-openapi/pkg/validation/spec"
	"k8s.io/kube-openapi/pkg/validation/strfmt"
	"k8s.io/kube-openapi/pkg/validation/validate"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/control/unsupported"
	"github.com/weft-mesh/weft/pkg/golden"
	"github.com/weft-mesh/weft/pkg/mesh"
)

const (
	release   = "weft-control"
	namespace = "weft-system"
)

var customValues = filepath.Join("testdata", "control-custom.values.yaml")

// helm returns the helm CLI: $WEFT_KUBE_ASSETS/helm, else the one
// `make kube-assets` builds. Missing: skip, or fail under WEFT_E2E_REQUIRE=1.
func helm(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("WEFT_KUBE_ASSETS")
	if dir == "" {
		dir = filepath.Join("..", "_output", "kube-assets", "bin")
	}
	bin, err := filepath.Abs(filepath.Join(dir, "helm"))
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		msg := fmt.Sprintf("helm CLI unavailable (%v): run `make kube-assets` or set WEFT_KUBE_ASSETS", err)
		if os.Getenv("WEFT_E2E_REQUIRE") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bin
}

// runHelm runs helm with private config/cache/data directories and no
// kubeconfig, so that a user's setup cannot change the result. On failure it
// returns stdout and stderr with the error.
func runHelm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(helm(t), args...)
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+filepath.Join(home, "no-kubeconfig"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		out := append(stdout.Bytes(), stderr.Bytes()...)
		return out, fmt.Errorf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return stdout.Bytes(), nil
}

// render runs `helm template` for chart ("base" or "control") with extra args.
func render(t *testing.T, chart string, args ...string) []byte {
	t.Helper()
	out, err := runHelm(t, append([]string{"template", release, chart, "--namespace", namespace}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLintStrict(t *testing.T) {
	for _, chart := range []string{"base", "control"} {
		t.Run(chart, func(t *testing.T) {
			out, err := runHelm(t, "lint", "--strict", "--namespace", namespace, chart)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(out, []byte("[WARNING]")) || bytes.Contains(out, []byte("[ERROR]")) {
				t.Fatalf("helm lint --strict %s is not clean:\n%s", chart, out)
			}
		})
	}
}

// TestGolden compares `helm template` with testdata/<chart>-<case>.golden.yaml.
// weft-base has no golden file: it renders the generated CRD templates
// verbatim (TestBaseRendersGeneratedCRDs), and those are checked against a
// fresh hack/gen-crds.sh run (TestGeneratedCRDsAreCurrent), which says more
// than a 1.5 MB copy would.
func TestGolden(t *testing.T) {
	cases := []struct {
		chart, name string
		args        []string
	}{
		{"control", "default", nil},
		{"control", "custom", []string{"--values", customValues}},
	}
	for _, c := range cases {
		t.Run(c.chart+"-"+c.name, func(t *testing.T) {
			got := render(t, c.chart, c.args...)
			golden.Assert(t, filepath.Join("testdata", c.chart+"-"+c.name+".golden.yaml"), got)
		})
	}
}

func TestSchemaRejectsBadValues(t *testing.T) {
	cases := []struct {
		chart string
		set   string
		field string // the error must name it
	}{
		{"control", "replicaCount=two", "replicaCount"},
		{"control", "replicaCount=0", "replicaCount"},
		{"control", "logLevel=loud", "logLevel"},
		{"control", "replicaCont=2", "replicaCont"},
		{"control", "certTTL=1day", "certTTL"},
		{"control", "debounce=fast", "debounce"},
		{"control", "trustDomain=Example.ORG/x", "trustDomain"},
		{"control", "image.pullPolicy=Sometimes", "pullPolicy"},
		{"control", "waypoint.image.pullPolicy=Sometimes", "pullPolicy"},
		{"control", "waypoint.image.registry=x", "registry"},
		{"control", "waypoint.tracing.otlpEndpoint=otel-collector:4318", "otlpEndpoint"},
		{"control", "waypoint.tracing.otlpEndpoint=grpc://otel-collector:4317", "otlpEndpoint"},
		{"control", "waypoint.tracing.endpoint=http://x:4318", "endpoint"},
		{"control", "image.registry=x", "registry"},
		{"control", "podAntiAffinity=maybe", "podAntiAffinity"},
		{"control", "meshConfig.pathNormalization.normalization=merge_slashes", "normalization"},
		{"control", "meshConfig.pathNormalization.mode=NONE", "mode"},
		{"base", "crds.enabled=yes please", "crds/enabled"},
		{"base", "gatewayClass.enabled=true", "gatewayClass"},
	}
	for _, c := range cases {
		t.Run(c.chart+" "+c.set, func(t *testing.T) {
			out, err := runHelm(t, "template", release, c.chart, "--namespace", namespace, "--set", c.set)
			if err == nil {
				t.Fatalf("helm template %s --set %s succeeded; want a schema error", c.chart, c.set)
			}
			if !bytes.Contains(out, []byte("schema")) || !bytes.Contains(out, []byte(c.field)) {
				t.Fatalf("the error does not name %q as a schema violation:\n%s", c.field, out)
			}
		})
	}
}

// objects is a render decoded into typed objects, by "Kind/name".
type objects map[string]any

// kinds maps apiVersion/kind to the typed object it decodes into. A rendered
// kind missing here fails the test: add it deliberately.
var kinds = map[string]func() any{
	"apps/v1/Deployment":                               func() any { return &appsv1.Deployment{} },
	"v1/Service":                                       func() any { return &corev1.Service{} },
	"v1/ServiceAccount":                                func() any { return &corev1.ServiceAccount{} },
	"v1/ConfigMap":                                     func() any { return &corev1.ConfigMap{} },
	"policy/v1/PodDisruptionBudget":                    func() any { return &policyv1.PodDisruptionBudget{} },
	"rbac.authorization.k8s.io/v1/ClusterRole":         func() any { return &rbacv1.ClusterRole{} },
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding":  func() any { return &rbacv1.ClusterRoleBinding{} },
	"rbac.authorization.k8s.io/v1/Role":                func() any { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1/RoleBinding":         func() any { return &rbacv1.RoleBinding{} },
	"apiextensions.k8s.io/v1/CustomResourceDefinition": func() any { return &apiextv1.CustomResourceDefinition{} },
	"gateway.networking.k8s.io/v1/GatewayClass":        func() any { return &gatewayv1.GatewayClass{} },
	"admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy": func() any {
		return &admissionv1.ValidatingAdmissionPolicy{}
	},
	"admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding": func() any {
		return &admissionv1.ValidatingAdmissionPolicyBinding{}
	},
}

var (
	docSeparator = regexp.MustCompile(`(?m)^---\s*$`)
	commentLine  = regexp.MustCompile(`(?m)^#.*\n`)
)

// documents splits a render into its YAML documents that hold more than
// comments.
func documents(out []byte) [][]byte {
	var docs [][]byte
	for _, d := range docSeparator.Split(string(out), -1) {
		if strings.TrimSpace(commentLine.ReplaceAllString(d+"\n", "")) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

// decode decodes a control or base render strictly (see decodeOnly).
func decode(t *testing.T, out []byte) objects {
	t.Helper()
	return decodeOnly(t, "the chart", out, namespace, kinds)
}

// get returns the object kind/name of type T, failing when absent.
func get[T any](t *testing.T, objs objects, kind, name string) *T {
	t.Helper()
	o, ok := objs[kind+"/"+name]
	if !ok {
		t.Fatalf("%s/%s not rendered", kind, name)
	}
	return o.(*T)
}

// defaultArgs are the control plane's flags with default values.
var defaultArgs = []string{
	"--trust-domain=cluster.local",
	"--cluster-id=Kubernetes",
	"--domain-suffix=cluster.local",
	"--root-namespace=" + namespace,
	"--path-normalization=BASE",
	"--xds-address=:15012",
	"--monitoring-address=:15014",
	"--cert-ttl=24h",
	"--max-cert-ttl=168h",
	"--ca-audience=weft-ca",
	"--node-agent-service-account=" + namespace + "/weft-node-agent",
	"--service-name=weft-control",
	"--leader-elect=true",
	"--log-level=info",
	"--debounce=100ms",
	"--waypoint-image=ghcr.io/weft-mesh/waypoint:0.1.0",
	"--waypoint-image-pull-policy=IfNotPresent",
	"--service-account=weft-control",
	"--gateway-secrets-role=weft-control-gateway-secrets",
	"--gateway-secret-check-role=weft-control-gateway-secret-check",
	"--waypoint-godebug=" + mesh.ProxyGODEBUG,
}

func controlContainer(t *testing.T, d *appsv1.Deployment) corev1.Container {
	t.Helper()
	if n := len(d.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("deployment has %d containers, want 1", n)
	}
	return d.Spec.Template.Spec.Containers[0]
}

func TestControlDefaults(t *testing.T) {
	objs := decode(t, render(t, "control"))

	d := get[appsv1.Deployment](t, objs, "Deployment", "weft-control")
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %v, want 2", d.Spec.Replicas)
	}
	podLabels := labels.Set(d.Spec.Template.Labels)
	if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil || !sel.Matches(podLabels) {
		t.Errorf("selector %v does not match pod labels %v (%v)", d.Spec.Selector, podLabels, err)
	}
	for k, v := range map[string]string{
		"app": "weft-control", "app.kubernetes.io/name": "weft-control", "app.kubernetes.io/instance": release,
		"app.kubernetes.io/version": "0.1.0", "app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": "weft-control-0.1.0",
		"istio.io/dataplane-mode": "none",
	} {
		if podLabels[k] != v {
			t.Errorf("pod label %s = %q, want %q", k, podLabels[k], v)
		}
	}
	// Prometheus finds weft-control as it finds istiod: by annotation, on
	// the monitoring port that serves /metrics.
	if want := map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "15014", "prometheus.io/path": "/metrics"}; !sameJSON(d.Spec.Template.Annotations, want) {
		t.Errorf("pod annotations = %v, want %v", d.Spec.Template.Annotations, want)
	}
	pod := d.Spec.Template.Spec
	if pod.ServiceAccountName != "weft-control" {
		t.Errorf("serviceAccountName = %q", pod.ServiceAccountName)
	}
	if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds != 30 {
		t.Errorf("terminationGracePeriodSeconds = %v, want 30", pod.TerminationGracePeriodSeconds)
	}
	if pod.PriorityClassName != "" || pod.NodeSelector != nil || pod.Tolerations != nil || pod.TopologySpreadConstraints != nil {
		t.Errorf("unexpected scheduling defaults: priorityClassName %q nodeSelector %v tolerations %v spread %v",
			pod.PriorityClassName, pod.NodeSelector, pod.Tolerations, pod.TopologySpreadConstraints)
	}
	if a := pod.Affinity; a == nil || a.PodAntiAffinity == nil || a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil ||
		len(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 {
		t.Errorf("want one preferred pod anti-affinity term, got %+v", a)
	} else {
		term := a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm
		ts, err := metav1.LabelSelectorAsSelector(term.LabelSelector)
		if term.TopologyKey != "kubernetes.io/hostname" || err != nil || !ts.Matches(podLabels) {
			t.Errorf("anti-affinity term %+v does not spread the control plane pods by hostname (%v)", term, err)
		}
	}

	c := controlContainer(t, d)
	if c.Image != "ghcr.io/weft-mesh/control:0.1.0" || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %q pullPolicy %q", c.Image, c.ImagePullPolicy)
	}
	if !slices.Equal(c.Args, defaultArgs) {
		t.Errorf("args:\n got %q\nwant %q", c.Args, defaultArgs)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	if env["POD_NAME"] != "metadata.name" || env["POD_NAMESPACE"] != "metadata.namespace" {
		t.Errorf("env fieldRefs = %v", env)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["grpc-xds"] != 15012 || ports["http-monitoring"] != 15014 || len(ports) != 2 {
		t.Errorf("container ports = %v", ports)
	}
	checkProbe := func(what string, p *corev1.Probe, path string) *corev1.Probe {
		t.Helper()
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path || resolvePort(c, p.HTTPGet.Port.String()) != 15014 {
			t.Errorf("%s probe = %+v, want httpGet %s on 15014", what, p, path)
			return &corev1.Probe{}
		}
		return p
	}
	if p := checkProbe("readiness", c.ReadinessProbe, "/ready"); p.PeriodSeconds != 2 {
		t.Errorf("readiness periodSeconds = %d, want 2", p.PeriodSeconds)
	}
	if p := checkProbe("liveness", c.LivenessProbe, "/healthz"); p.InitialDelaySeconds != 10 {
		t.Errorf("liveness initialDelaySeconds = %d, want 10", p.InitialDelaySeconds)
	}
	sc := c.SecurityContext
	if sc == nil || !isTrue(sc.RunAsNonRoot) || sc.RunAsUser == nil || *sc.RunAsUser != 1337 ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !isTrue(sc.ReadOnlyRootFilesystem) ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault || isTrue(sc.Privileged) {
		t.Errorf("container securityContext is not locked down: %+v", sc)
	}
	if c.Resources.Requests.Cpu().String() != "100m" || c.Resources.Requests.Memory().String() != "128Mi" || len(c.Resources.Limits) != 0 {
		t.Errorf("resources = %+v, want requests cpu 100m memory 128Mi and no limits", c.Resources)
	}

	get[corev1.ServiceAccount](t, objs, "ServiceAccount", "weft-control")
	svc := get[corev1.Service](t, objs, "Service", "weft-control")
	if svc.Spec.Type != corev1.ServiceTypeClusterIP || !sameJSON(svc.Spec.Selector, map[string]string{"app": "weft-control"}) {
		t.Errorf("service type %q selector %v", svc.Spec.Type, svc.Spec.Selector)
	}
	svcPorts := map[string]int32{}
	for _, p := range svc.Spec.Ports {
		svcPorts[p.Name] = p.Port
		if resolvePort(c, p.TargetPort.String()) != p.Port {
			t.Errorf("service port %s targets %s, not container port %d", p.Name, p.TargetPort.String(), p.Port)
		}
	}
	if svcPorts["grpc-xds"] != 15012 || svcPorts["http-monitoring"] != 15014 || len(svcPorts) != 2 {
		t.Errorf("service ports = %v", svcPorts)
	}

	pdb := get[policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", "weft-control")
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 || pdb.Spec.MaxUnavailable != nil {
		t.Errorf("pdb minAvailable %v maxUnavailable %v, want minAvailable 1", pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable)
	}
	if ps, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector); err != nil || !ps.Matches(podLabels) {
		t.Errorf("pdb selector %v does not select the control plane pods (%v)", pdb.Spec.Selector, err)
	}

	checkRBAC(t, objs)

	gc := get[gatewayv1.GatewayClass](t, objs, "GatewayClass", "weft-waypoint")
	if gc.Spec.ControllerName != "weft.io/waypoint-controller" || gc.Spec.Description == nil || *gc.Spec.Description == "" {
		t.Errorf("GatewayClass spec = %+v", gc.Spec)
	}
}

// checkRBAC asserts least privilege: exactly these cluster-wide grants, no
// wildcards, no secrets cluster-wide, and in the namespace secrets get (by
// name) and create only.
func checkRBAC(t *testing.T, objs objects) {
	t.Helper()
	read := []string{"get", "list", "watch"}
	status := []string{"patch", "update"}
	want := map[string][]string{
		"/pods": read, "/namespaces": read, "/nodes": read,
		// Waypoints: server-side apply (an apply that creates needs
		// create); the garbage collector deletes them with their Gateway.
		"/services":                          {"create", "get", "list", "patch", "watch"},
		"/serviceaccounts":                   {"create", "get", "list", "patch", "watch"},
		"apps/deployments":                   {"create", "get", "list", "patch", "watch"},
		"apps/replicasets":                   {"list", "watch"},
		"discovery.k8s.io/endpointslices":    read,
		"authentication.k8s.io/tokenreviews": {"create"},
		"/configmaps":                        {"create", "get", "list", "patch", "update", "watch"},
		"/events":                            {"create", "patch"},
		// Deployed ingress gateways' Secret access: RoleBindings to the two
		// ClusterRoles below, which alone it may bind (checked after),
		// and only on RoleBindings it manages (the admission policy).
		"rbac.authorization.k8s.io/rolebindings": {"create", "delete", "get", "list", "patch"},
		"rbac.authorization.k8s.io/clusterroles": {"bind"},
		// The Istio kinds Weft translates: read, and status written.
		"networking.istio.io/virtualservices":             read,
		"networking.istio.io/destinationrules":            read,
		"networking.istio.io/gateways":                    read,
		"networking.istio.io/serviceentries":              read,
		"networking.istio.io/virtualservices/status":      {"update"},
		"networking.istio.io/destinationrules/status":     {"update"},
		"networking.istio.io/gateways/status":             {"update"},
		"networking.istio.io/serviceentries/status":       {"update"},
		"networking.istio.io/envoyfilters":                read,
		"networking.istio.io/envoyfilters/status":         {"update"},
		"telemetry.istio.io/telemetries":                  read,
		"telemetry.istio.io/telemetries/status":           {"update"},
		"security.istio.io/authorizationpolicies":         read,
		"security.istio.io/peerauthentications":           read,
		"security.istio.io/authorizationpolicies/status":  {"update"},
		"security.istio.io/peerauthentications/status":    {"update"},
		"security.istio.io/requestauthentications":        read,
		"security.istio.io/requestauthentications/status": {"update"},
		"gateway.networking.k8s.io/gateways":              read,
		"gateway.networking.k8s.io/gatewayclasses":        read,
		"gateway.networking.k8s.io/httproutes":            read,
		"gateway.networking.k8s.io/grpcroutes":            read,
		"gateway.networking.k8s.io/referencegrants":       read,
		"gateway.networking.k8s.io/gateways/status":       status,
		"gateway.networking.k8s.io/gatewayclasses/status": status,
		"gateway.networking.k8s.io/httproutes/status":     status,
		"gateway.networking.k8s.io/grpcroutes/status":     status,
	}
	// The kinds Weft does not implement: read, and marked Unsupported.
	for _, k := range unsupported.Kinds {
		r := k.Resource.Group + "/" + k.Resource.Resource
		want[r], want[r+"/status"] = read, []string{"update"}
	}
	cr := get[rbacv1.ClusterRole](t, objs, "ClusterRole", "weft-control")
	got := grants(t, "ClusterRole", cr.Rules)
	for _, r := range cr.Rules {
		bindable := []string{"weft-control-gateway-secrets", "weft-control-gateway-secret-check"}
		if slices.Contains(r.Verbs, "bind") && (!slices.Equal(r.Verbs, []string{"bind"}) || !slices.Equal(r.ResourceNames, bindable)) {
			t.Errorf("ClusterRole rule %+v: bind must be alone and limited to %v", r, bindable)
		}
		if (len(r.ResourceNames) != 0 && !slices.Contains(r.Verbs, "bind")) || len(r.NonResourceURLs) != 0 {
			t.Errorf("ClusterRole rule %+v: unexpected resourceNames/nonResourceURLs", r)
		}
	}
	checkGatewaySecretRoles(t, objs)
	if v, ok := got["/secrets"]; ok {
		t.Errorf("ClusterRole grants secrets cluster-wide: %v", v)
	}
	if !equalGrants(got, want) {
		t.Errorf("ClusterRole grants:\n got %v\nwant %v", got, want)
	}

	role := get[rbacv1.Role](t, objs, "Role", "weft-control")
	got = grants(t, "Role", role.Rules)
	if !equalGrants(got, map[string][]string{
		"/secrets":                   {"create", "get"},
		"coordination.k8s.io/leases": {"create", "get", "update"},
	}) {
		t.Errorf("Role grants %v; want secrets get/create and leases get/create/update only", got)
	}
	for _, r := range role.Rules {
		if slices.Contains(r.Resources, "secrets") && slices.Contains(r.Verbs, "get") &&
			!slices.Equal(r.ResourceNames, []string{"weft-ca-root", "cacerts"}) {
			t.Errorf("secrets get is not limited to weft-ca-root and cacerts: %+v", r)
		}
	}

	sub := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "weft-control", Namespace: namespace}}
	crb := get[rbacv1.ClusterRoleBinding](t, objs, "ClusterRoleBinding", "weft-control")
	if crb.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "weft-control"}) || !slices.Equal(crb.Subjects, sub) {
		t.Errorf("ClusterRoleBinding = %+v %+v", crb.RoleRef, crb.Subjects)
	}
	rb := get[rbacv1.RoleBinding](t, objs, "RoleBinding", "weft-control")
	if rb.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "weft-control"}) || !slices.Equal(rb.Subjects, sub) {
		t.Errorf("RoleBinding = %+v %+v", rb.RoleRef, rb.Subjects)
	}
}

// grants flattens rules to "group/resource" -> sorted verbs, failing on any
// wildcard group, resource or verb.
// checkGatewaySecretRoles: the ClusterRoles weft-control may bind grant
// Secret reads only, and an admission policy, enforced, keeps its
// RoleBinding writes to the bindings it manages, for its own service
// account only (e2e TestControlPlane attacks it).
func checkGatewaySecretRoles(t *testing.T, objs objects) {
	t.Helper()
	for name, want := range map[string][]string{
		"weft-control-gateway-secrets":      {"get", "list", "watch"},
		"weft-control-gateway-secret-check": {"get"},
	} {
		got := grants(t, "ClusterRole", get[rbacv1.ClusterRole](t, objs, "ClusterRole", name).Rules)
		if !equalGrants(got, map[string][]string{"/secrets": want}) {
			t.Errorf("ClusterRole %s grants %v; want secrets %v only", name, got, want)
		}
	}
	vap := get[admissionv1.ValidatingAdmissionPolicy](t, objs, "ValidatingAdmissionPolicy", "weft-control-rolebindings")
	if len(vap.Spec.MatchConditions) != 1 || !strings.Contains(vap.Spec.MatchConditions[0].Expression, `"system:serviceaccount:`+namespace+`:weft-control"`) ||
		vap.Spec.FailurePolicy == nil || *vap.Spec.FailurePolicy != admissionv1.Fail || len(vap.Spec.Validations) != 3 {
		t.Errorf("ValidatingAdmissionPolicy %+v: want it failing closed, for weft-control's service account, with 3 validations", vap.Spec)
	}
	b := get[admissionv1.ValidatingAdmissionPolicyBinding](t, objs, "ValidatingAdmissionPolicyBinding", "weft-control-rolebindings")
	if b.Spec.PolicyName != vap.Name || !slices.Equal(b.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Deny}) {
		t.Errorf("ValidatingAdmissionPolicyBinding %+v: want Deny for %s", b.Spec, vap.Name)
	}
}

func grants(t *testing.T, what string, rules []rbacv1.PolicyRule) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, r := range rules {
		for _, s := range slices.Concat(r.APIGroups, r.Resources, r.Verbs) {
			if strings.Contains(s, "*") {
				t.Errorf("%s rule %+v has a wildcard %q", what, r, s)
			}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				k := g + "/" + res
				out[k] = append(out[k], r.Verbs...)
				sort.Strings(out[k])
				out[k] = slices.Compact(out[k])
			}
		}
	}
	return out
}

func equalGrants(got, want map[string][]string) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range got {
		if !slices.Equal(v, slices.Sorted(slices.Values(want[k]))) {
			return false
		}
	}
	return true
}

func TestControlCustomValues(t *testing.T) {
	objs := decode(t, render(t, "control", "--values", customValues))
	d := get[appsv1.Deployment](t, objs, "Deployment", "weft-control")
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("replicas = %v, want 3", d.Spec.Replicas)
	}
	c := controlContainer(t, d)
	if c.Image != "registry.example.org/mesh/control:1.2.3-rc.1" || c.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("image %q pullPolicy %q", c.Image, c.ImagePullPolicy)
	}
	want := []string{
		"--trust-domain=example.org", "--cluster-id=east", "--domain-suffix=corp.example",
		"--root-namespace=mesh-config", "--path-normalization=DECODE_AND_MERGE_SLASHES",
		`--extension-providers=[{"envoyExtAuthzGrpc":{"port":9000,"service":"ext-authz.foo.svc.cluster.local"},"name":"sample-ext-authz-grpc"}]`,
		"--xds-address=:15012", "--monitoring-address=:15014",
		"--cert-ttl=12h", "--max-cert-ttl=72h", "--ca-audience=example-ca",
		"--node-agent-service-account=weft-dataplane/node-agent", "--service-name=weft-control",
		"--leader-elect=true", "--log-level=debug", "--debounce=250ms",
		"--waypoint-image=registry.example.org/mesh/waypoint:1.2.3-rc.1", "--waypoint-image-pull-policy=Always",
		"--service-account=weft-control", "--gateway-secrets-role=weft-control-gateway-secrets",
		"--gateway-secret-check-role=weft-control-gateway-secret-check",
		"--waypoint-godebug=" + mesh.ProxyGODEBUG,
		"--waypoint-tracing-endpoint=http://otel-collector.observability:4318",
	}
	if !slices.Equal(c.Args, want) {
		t.Errorf("args:\n got %q\nwant %q", c.Args, want)
	}
	if c.Resources.Requests.Cpu().String() != "500m" || c.Resources.Requests.Memory().String() != "512Mi" ||
		c.Resources.Limits.Memory().String() != "1Gi" || !c.Resources.Limits.Cpu().IsZero() {
		t.Errorf("resources = %+v", c.Resources)
	}
	pod := d.Spec.Template.Spec
	if pod.PriorityClassName != "system-cluster-critical" || pod.NodeSelector["kubernetes.io/os"] != "linux" ||
		len(pod.Tolerations) != 1 || len(pod.TopologySpreadConstraints) != 1 ||
		!sameJSON(pod.ImagePullSecrets, []corev1.LocalObjectReference{{Name: "regcred"}}) {
		t.Errorf("scheduling values not applied: %+v", pod)
	}
	if a := pod.Affinity; a == nil || a.PodAntiAffinity == nil || len(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 ||
		a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution != nil {
		t.Errorf("podAntiAffinity=required: got %+v", a)
	}
	if d.Spec.Template.Labels["team"] != "mesh" {
		t.Errorf("podLabels not applied: %v", d.Spec.Template.Labels)
	}
	if want := map[string]string{
		"prometheus.io/scrape": "false", "prometheus.io/port": "15014", "prometheus.io/path": "/metrics", "example.org/owner": "mesh-team",
	}; !sameJSON(d.Spec.Template.Annotations, want) {
		t.Errorf("pod annotations = %v, want %v (podAnnotations override the chart's)", d.Spec.Template.Annotations, want)
	}
	if sa := get[corev1.ServiceAccount](t, objs, "ServiceAccount", "weft-control"); !sameJSON(sa.ImagePullSecrets, []corev1.LocalObjectReference{{Name: "regcred"}}) {
		t.Errorf("service account image pull secrets = %v", sa.ImagePullSecrets)
	}
	get[policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", "weft-control")
	checkRBAC(t, objs)
}

func TestControlOptionalParts(t *testing.T) {
	t.Run("one replica has no PDB", func(t *testing.T) {
		objs := decode(t, render(t, "control", "--set", "replicaCount=1"))
		if _, ok := objs["PodDisruptionBudget/weft-control"]; ok {
			t.Error("PodDisruptionBudget rendered for 1 replica: it would block every node drain")
		}
	})
	t.Run("no anti-affinity", func(t *testing.T) {
		objs := decode(t, render(t, "control", "--set", "podAntiAffinity=none"))
		if a := get[appsv1.Deployment](t, objs, "Deployment", "weft-control").Spec.Template.Spec.Affinity; a != nil {
			t.Errorf("affinity = %+v, want none", a)
		}
	})
	t.Run("user affinity wins", func(t *testing.T) {
		const anti = "affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0]"
		const node = "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0]"
		objs := decode(t, render(t, "control",
			"--set", anti+".weight=5", "--set", anti+".podAffinityTerm.topologyKey=zone",
			"--set", node+".key=k", "--set", node+".operator=Exists"))
		a := get[appsv1.Deployment](t, objs, "Deployment", "weft-control").Spec.Template.Spec.Affinity
		if a == nil || a.NodeAffinity == nil || a.PodAntiAffinity == nil ||
			len(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
			a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].Weight != 5 {
			t.Errorf("affinity = %+v, want the user's", a)
		}
	})
	t.Run("waypoint image of its own", func(t *testing.T) {
		objs := decode(t, render(t, "control", "--set", "image.hub=a.example/x", "--set", "waypoint.image.hub=b.example/y",
			"--set", "waypoint.image.tag=dev", "--set", "waypoint.image.pullPolicy=Never"))
		c := controlContainer(t, get[appsv1.Deployment](t, objs, "Deployment", "weft-control"))
		if c.Image != "a.example/x/control:0.1.0" || !slices.Contains(c.Args, "--waypoint-image=b.example/y/waypoint:dev") ||
			!slices.Contains(c.Args, "--waypoint-image-pull-policy=Never") {
			t.Errorf("image %s args %q", c.Image, c.Args)
		}
	})
	t.Run("waypoint tracing", func(t *testing.T) {
		objs := decode(t, render(t, "control", "--set", "waypoint.tracing.otlpEndpoint=https://collector.example.org:4318/otlp"))
		c := controlContainer(t, get[appsv1.Deployment](t, objs, "Deployment", "weft-control"))
		want := append(slices.Clone(defaultArgs), "--waypoint-tracing-endpoint=https://collector.example.org:4318/otlp")
		if !slices.Equal(c.Args, want) {
			t.Errorf("args:\n got %q\nwant %q", c.Args, want)
		}
	})
	t.Run("no GatewayClass", func(t *testing.T) {
		objs := decode(t, render(t, "control", "--set", "gatewayClass.enabled=false"))
		if _, ok := objs["GatewayClass/weft-waypoint"]; ok {
			t.Error("GatewayClass rendered with gatewayClass.enabled=false")
		}
	})
}

// wantCRDs are the kinds Weft reads, as group/kind.
var wantCRDs = []string{
	"networking.istio.io/VirtualService", "networking.istio.io/DestinationRule", "networking.istio.io/Gateway",
	"networking.istio.io/ServiceEntry", "networking.istio.io/WorkloadEntry", "networking.istio.io/EnvoyFilter",
	"security.istio.io/AuthorizationPolicy", "security.istio.io/PeerAuthentication", "security.istio.io/RequestAuthentication",
	"telemetry.istio.io/Telemetry",
	"gateway.networking.k8s.io/GatewayClass", "gateway.networking.k8s.io/Gateway", "gateway.networking.k8s.io/HTTPRoute",
	"gateway.networking.k8s.io/GRPCRoute", "gateway.networking.k8s.io/ReferenceGrant",
}

// baseCRDs renders weft-base and returns its CRDs by group/kind; it must
// render nothing else.
func baseCRDs(t *testing.T) map[string]*apiextv1.CustomResourceDefinition {
	t.Helper()
	crds := map[string]*apiextv1.CustomResourceDefinition{}
	for _, o := range decode(t, render(t, "base")) {
		crd, ok := o.(*apiextv1.CustomResourceDefinition)
		if !ok {
			t.Fatalf("weft-base rendered a %T; want CRDs only", o)
		}
		crds[crd.Spec.Group+"/"+crd.Spec.Names.Kind] = crd
	}
	return crds
}

func TestBaseCRDs(t *testing.T) {
	crds := baseCRDs(t)
	var got []string
	for k, crd := range crds {
		got = append(got, k)
		if crd.Annotations["helm.sh/resource-policy"] != "keep" {
			t.Errorf("CRD %s lacks helm.sh/resource-policy: keep (helm uninstall would delete every %s)", crd.Name, crd.Spec.Names.Kind)
		}
		if crd.Name != crd.Spec.Names.Plural+"."+crd.Spec.Group {
			t.Errorf("CRD name %q is not <plural>.<group>", crd.Name)
		}
		storage := 0
		for _, v := range crd.Spec.Versions {
			if v.Storage {
				storage++
			}
			if v.Served && (v.Schema == nil || v.Schema.OpenAPIV3Schema == nil) {
				t.Errorf("CRD %s version %s is served without a schema", crd.Name, v.Name)
			}
		}
		if storage != 1 {
			t.Errorf("CRD %s has %d storage versions", crd.Name, storage)
		}
	}
	sort.Strings(got)
	if want := slices.Sorted(slices.Values(wantCRDs)); !slices.Equal(got, want) {
		t.Errorf("CRDs:\n got %v\nwant %v", got, want)
	}

	if docs := documents(render(t, "base", "--set", "crds.enabled=false")); len(docs) != 0 {
		t.Errorf("crds.enabled=false still renders %d documents", len(docs))
	}
}

// TestGatewayClassMatchesCRD validates the rendered GatewayClass against the
// OpenAPI schema of the CRD that weft-base installs: the API server would
// reject, say, a description over 64 characters. (CEL rules are not run.)
func TestGatewayClassMatchesCRD(t *testing.T) {
	crd := baseCRDs(t)["gateway.networking.k8s.io/GatewayClass"]
	if crd == nil {
		t.Fatal("weft-base lacks the GatewayClass CRD")
	}
	for _, doc := range documents(render(t, "control", "--values", customValues)) {
		var u map[string]any
		if err := yaml.Unmarshal(doc, &u); err != nil {
			t.Fatal(err)
		}
		if u["kind"] != "GatewayClass" {
			continue
		}
		version := strings.TrimPrefix(u["apiVersion"].(string), crd.Spec.Group+"/")
		var schema *apiextv1.JSONSchemaProps
		for _, v := range crd.Spec.Versions {
			if v.Name == version && v.Served && v.Schema != nil {
				schema = v.Schema.OpenAPIV3Schema
			}
		}
		if schema == nil {
			t.Fatalf("the CRD serves no version %s", version)
		}
		raw, err := json.Marshal(schema)
		if err != nil {
			t.Fatal(err)
		}
		var s spec.Schema
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatal(err)
		}
		delete(u, "metadata") // the API server checks metadata, not the CRD schema
		if res := validate.NewSchemaValidator(&s, nil, "", strfmt.Default).Validate(u); !res.IsValid() {
			t.Errorf("GatewayClass does not match its CRD schema: %v", res.Errors)
		}
		return
	}
	t.Fatal("weft-control rendered no GatewayClass")
}

// TestBaseRendersGeneratedCRDs: weft-base renders exactly the documents of
// the generated CRD templates, nothing more and nothing changed.
func TestBaseRendersGeneratedCRDs(t *testing.T) {
	directive := regexp.MustCompile(`(?m)^\{\{-.*\}\}\n?`)
	var want [][]byte
	for _, f := range []string{"crds-istio.yaml", "crds-gateway-api.yaml"} {
		b, err := os.ReadFile(filepath.Join("base", "templates", f))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, documents(directive.ReplaceAll(b, nil))...)
	}
	got := documents(render(t, "base"))
	// Helm adds "# Source:" comments and may order documents differently.
	norm := func(docs [][]byte) []string {
		var out []string
		for _, d := range docs {
			out = append(out, strings.TrimSpace(commentLine.ReplaceAllString(string(d), "")))
		}
		sort.Strings(out)
		return out
	}
	if len(got) != len(want) {
		t.Fatalf("weft-base renders %d documents, the generated templates hold %d", len(got), len(want))
	}
	if !slices.Equal(norm(got), norm(want)) {
		t.Error("weft-base does not render the generated CRD templates verbatim")
	}
}

// TestGeneratedCRDsAreCurrent re-runs hack/gen-crds.sh into a temporary
// directory and compares with the committed templates.
func TestGeneratedCRDsAreCurrent(t *testing.T) {
	for _, tool := range []string{"bash", "go", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			msg := fmt.Sprintf("hack/gen-crds.sh needs %s: %v", tool, err)
			if os.Getenv("WEFT_E2E_REQUIRE") == "1" {
				t.Fatal(msg) // make test / CI: a stale check must not pass by skipping
			}
			t.Skip(msg)
		}
	}
	dir := t.TempDir()
	cmd := exec.Command("bash", filepath.Join("..", "hack", "gen-crds.sh"))
	cmd.Env = append(os.Environ(), "WEFT_CRDS_OUT="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/gen-crds.sh: %v\n%s", err, out)
	}
	for _, f := range []string{"crds-istio.yaml", "crds-gateway-api.yaml"} {
		fresh, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		committed, err := os.ReadFile(filepath.Join("base", "templates", f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fresh, committed) {
			t.Errorf("charts/base/templates/%s is stale: run hack/gen-crds.sh\n%s", f, golden.Diff(fresh, committed))
		}
	}
}

func isTrue(b *bool) bool { return b != nil && *b }

// resolvePort maps a port name or number of container c to its number.
func resolvePort(c corev1.Container, port string) int32 {
	if n, err := strconv.ParseInt(port, 10, 32); err == nil {
		return int32(n)
	}
	for _, p := range c.Ports {
		if p.Name == port || fmt.Sprint(p.ContainerPort) == port {
			return p.ContainerPort
		}
	}
	return 0
}

// sameJSON compares two values by their JSON form.
func sameJSON(a, b any) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// decodeOnly decodes a render strictly (unknown or duplicate fields fail)
// into typed objects by "Kind/name", failing on any kind outside kinds, on
// namespaced objects outside namespace ns and on cluster-scoped ones with a
// namespace.
func decodeOnly(t *testing.T, chart string, out []byte, ns string, kinds map[string]func() any) objects {
	t.Helper()
	objs := objects{}
	for _, doc := range documents(out) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("not YAML: %v\n%s", err, doc)
		}
		gvk := tm.APIVersion + "/" + tm.Kind
		newObj, ok := kinds[gvk]
		if !ok {
			t.Fatalf("%s rendered %s, which it may not:\n%s", chart, gvk, doc)
		}
		obj := newObj()
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("%s does not decode strictly: %v\n%s", gvk, err, doc)
		}
		meta := obj.(metav1.Object)
		switch tm.Kind {
		case "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "GatewayClass", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding":
			if meta.GetNamespace() != "" {
				t.Errorf("cluster-scoped %s/%s has namespace %q", tm.Kind, meta.GetName(), meta.GetNamespace())
			}
		default:
			if meta.GetNamespace() != ns {
				t.Errorf("%s/%s is in namespace %q, want the release namespace %q", tm.Kind, meta.GetName(), meta.GetNamespace(), ns)
			}
		}
		key := tm.Kind + "/" + meta.GetName()
		if _, dup := objs[key]; dup {
			t.Fatalf("%s rendered twice", key)
		}
		objs[key] = obj
	}
	return objs
}
