package charts

import (
	"bytes"
	"path/filepath"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/pkg/golden"
)

const (
	gatewayChart     = "gateway"
	gatewayRelease   = "weft-ingress"
	gatewayNamespace = "weft-ingress"
)

var gatewayCustomValues = filepath.Join("testdata", "gateway-custom.values.yaml")

// renderGateway runs `helm template weft-ingress gateway -n weft-ingress`,
// the install command of docs/ingress.md.
func renderGateway(t *testing.T, args ...string) []byte {
	t.Helper()
	out, err := runHelm(t, append([]string{"template", gatewayRelease, gatewayChart, "--namespace", gatewayNamespace}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// gatewayKinds are the only kinds the gateway chart may render: its config
// comes over xDS; its only API access is a namespaced Role to read the
// Secrets its HTTPS servers name (no ClusterRole), and weft-control's a
// namespaced Role to get them (listener status).
var gatewayKinds = map[string]func() any{
	"v1/ServiceAccount":                        func() any { return &corev1.ServiceAccount{} },
	"v1/Service":                               func() any { return &corev1.Service{} },
	"apps/v1/Deployment":                       func() any { return &appsv1.Deployment{} },
	"rbac.authorization.k8s.io/v1/Role":        func() any { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1/RoleBinding": func() any { return &rbacv1.RoleBinding{} },
}

func decodeGateway(t *testing.T, out []byte) objects {
	t.Helper()
	return decodeOnly(t, "weft-gateway", out, gatewayNamespace, gatewayKinds)
}

func TestLintStrictGateway(t *testing.T) {
	for _, values := range []string{"", gatewayCustomValues} {
		t.Run("values="+values, func(t *testing.T) {
			args := []string{"lint", "--strict", "--namespace", gatewayNamespace, gatewayChart}
			if values != "" {
				args = append(args, "--values", values)
			}
			out, err := runHelm(t, args...)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(out, []byte("[WARNING]")) || bytes.Contains(out, []byte("[ERROR]")) {
				t.Fatalf("helm lint --strict %s is not clean:\n%s", gatewayChart, out)
			}
		})
	}
}

// TestGoldenGateway compares `helm template` with
// testdata/gateway-<case>.golden.yaml (-update rewrites them).
func TestGoldenGateway(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
	}{{"default", nil}, {"custom", []string{"--values", gatewayCustomValues}}} {
		t.Run(c.name, func(t *testing.T) {
			golden.Assert(t, filepath.Join("testdata", "gateway-"+c.name+".golden.yaml"), renderGateway(t, c.args...))
		})
	}
}

func TestSchemaRejectsBadValuesGateway(t *testing.T) {
	for _, c := range []struct{ set, field string }{
		{"service.type=ExternalName", "type"},
		{"service.ports[0].targetPort=80", "targetPort"},
		{"service.ports[0].protocol=UDP", "protocol"},
		{"logLevel=loud", "logLevel"},
		{"replicaCont=2", "replicaCont"},
		{"image.pullPolicy=Sometimes", "pullPolicy"},
		{"control.address=weft-control", "address"},
		{"trustDomain=Example.ORG/x", "trustDomain"},
	} {
		t.Run(c.set, func(t *testing.T) {
			out, err := runHelm(t, "template", gatewayRelease, gatewayChart, "--namespace", gatewayNamespace, "--set", c.set)
			if err == nil {
				t.Fatalf("helm template --set %s succeeded; want a schema error", c.set)
			}
			if !bytes.Contains(out, []byte("schema")) || !bytes.Contains(out, []byte(c.field)) {
				t.Fatalf("the error does not name %q as a schema violation:\n%s", c.field, out)
			}
		})
	}
}

// TestGatewayDefaults checks what users and the control plane rely on: the
// Service ports Istio's tutorials read (http2, https, status-port) mapped to
// the unprivileged ports the non-root pod listens on, the istio=ingress
// label Gateway selectors match, the gateway identity and its CA token.
func TestGatewayDefaults(t *testing.T) {
	objs := decodeGateway(t, renderGateway(t))
	sa := get[corev1.ServiceAccount](t, objs, "ServiceAccount", gatewayRelease)
	if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Errorf("ServiceAccount must not automount an API token")
	}
	svc := get[corev1.Service](t, objs, "Service", gatewayRelease)
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		t.Errorf("Service type %s, want LoadBalancer", svc.Spec.Type)
	}
	wantPorts := map[string][2]int32{"status-port": {15021, 15021}, "http2": {80, 8080}, "https": {443, 8443}}
	for _, p := range svc.Spec.Ports {
		w, ok := wantPorts[p.Name]
		if !ok {
			t.Errorf("unexpected Service port %q", p.Name)
			continue
		}
		if p.Port != w[0] || p.TargetPort != intstr.FromInt32(w[1]) {
			t.Errorf("Service port %s: %d->%s, want %d->%d", p.Name, p.Port, p.TargetPort.String(), w[0], w[1])
		}
		delete(wantPorts, p.Name)
	}
	if len(wantPorts) > 0 {
		t.Errorf("Service lacks ports %v", wantPorts)
	}

	d := get[appsv1.Deployment](t, objs, "Deployment", gatewayRelease)
	pod := d.Spec.Template
	if want := map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "15020", "prometheus.io/path": "/metrics"}; !sameJSON(pod.Annotations, want) {
		t.Errorf("pod annotations = %v, want %v", pod.Annotations, want)
	}
	if pod.Labels["istio"] != "ingress" || pod.Labels["app.kubernetes.io/name"] == "" {
		t.Errorf("pod labels %v: want istio=ingress and app.kubernetes.io/name", pod.Labels)
	}
	if pod.Labels["istio.io/dataplane-mode"] != "none" {
		t.Errorf("gateway pods must never be captured (istio.io/dataplane-mode=none), labels %v", pod.Labels)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(pod.Labels)) {
		t.Errorf("Deployment selector %v does not match its pods %v (%v)", d.Spec.Selector, pod.Labels, err)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels)) {
		t.Errorf("Service selector %v does not match the pods %v", svc.Spec.Selector, pod.Labels)
	}
	if pod.Spec.ServiceAccountName != gatewayRelease || isTrue(pod.Spec.AutomountServiceAccountToken) {
		t.Errorf("pod runs as %q (automount %v), want %s without an API token", pod.Spec.ServiceAccountName,
			pod.Spec.AutomountServiceAccountToken, gatewayRelease)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	if c.Image != "ghcr.io/weft-mesh/waypoint:0.1.0" {
		t.Errorf("image %q", c.Image)
	}
	if !slices.Contains(c.Args, "--mode=gateway") || !slices.Equal(c.Command, []string{"weft-gateway"}) {
		t.Errorf("command %v args %v, want weft-gateway --mode=gateway", c.Command, c.Args)
	}
	sc := c.SecurityContext
	if sc == nil || !isTrue(sc.RunAsNonRoot) || sc.RunAsUser == nil || *sc.RunAsUser == 0 || isTrue(sc.Privileged) ||
		isTrue(sc.AllowPrivilegeEscalation) || !isTrue(sc.ReadOnlyRootFilesystem) || sc.Capabilities == nil ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("container security context is not least privilege: %+v", sc)
	}
	for _, p := range svc.Spec.Ports {
		if got := resolvePort(c, p.TargetPort.String()); p.TargetPort.IntValue() < 1024 || got == 0 {
			t.Errorf("Service port %s targets %s: want an unprivileged port the container declares", p.Name, p.TargetPort.String())
		}
	}
	tokens := map[string]*corev1.ServiceAccountTokenProjection{} // by volume
	for _, v := range pod.Spec.Volumes {
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.ServiceAccountToken != nil {
					tokens[v.Name] = s.ServiceAccountToken
				}
			}
		}
	}
	if token := tokens["weft-token"]; token == nil || token.Audience != "weft-ca" || token.Path != "token" {
		t.Errorf("projected CA token %+v, want audience weft-ca at token", token)
	}
	// The API token (default audience) for reading credentialName Secrets,
	// where client-go's in-cluster config looks for it.
	if token := tokens["kube-api-access"]; token == nil || token.Audience != "" || token.Path != "token" {
		t.Errorf("projected API token %+v, want the API server audience at token", token)
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		mounted = mounted || (m.Name == "kube-api-access" && m.MountPath == "/var/run/secrets/kubernetes.io/serviceaccount" && m.ReadOnly)
	}
	if !mounted {
		t.Errorf("kube-api-access is not mounted read-only where in-cluster clients read it: %+v", c.VolumeMounts)
	}

	// Least privilege: read Secrets of its own namespace, nothing else.
	role := get[rbacv1.Role](t, objs, "Role", gatewayRelease)
	if role.Namespace != gatewayNamespace || len(role.Rules) != 1 || !slices.Equal(role.Rules[0].APIGroups, []string{""}) ||
		!slices.Equal(role.Rules[0].Resources, []string{"secrets"}) || !slices.Equal(role.Rules[0].Verbs, []string{"get", "list", "watch"}) ||
		len(role.Rules[0].ResourceNames) != 0 {
		t.Errorf("Role %s/%s rules %+v, want get/list/watch on secrets only", role.Namespace, role.Name, role.Rules)
	}
	rb := get[rbacv1.RoleBinding](t, objs, "RoleBinding", gatewayRelease)
	if rb.RoleRef.Kind != "Role" || rb.RoleRef.Name != role.Name || len(rb.Subjects) != 1 ||
		rb.Subjects[0].Kind != "ServiceAccount" || rb.Subjects[0].Name != gatewayRelease || rb.Subjects[0].Namespace != gatewayNamespace {
		t.Errorf("RoleBinding %+v binds %+v, want the Role to the gateway's ServiceAccount", rb.RoleRef, rb.Subjects)
	}
	// weft-control: get (no list or watch) on this namespace's Secrets, to
	// check a Gateway API listener's certificateRef.
	check := get[rbacv1.Role](t, objs, "Role", gatewayRelease+"-secret-check")
	if check.Namespace != gatewayNamespace || len(check.Rules) != 1 || !slices.Equal(check.Rules[0].Resources, []string{"secrets"}) ||
		!slices.Equal(check.Rules[0].Verbs, []string{"get"}) {
		t.Errorf("Role %s/%s rules %+v, want get on secrets only", check.Namespace, check.Name, check.Rules)
	}
	crb := get[rbacv1.RoleBinding](t, objs, "RoleBinding", gatewayRelease+"-secret-check")
	if crb.RoleRef.Name != check.Name || len(crb.Subjects) != 1 || crb.Subjects[0].Kind != "ServiceAccount" ||
		crb.Subjects[0].Name != "weft-control" || crb.Subjects[0].Namespace != "weft-system" {
		t.Errorf("RoleBinding %+v binds %+v, want the secret-check Role to weft-control's ServiceAccount", crb.RoleRef, crb.Subjects)
	}
}

// TestGatewayCredentialNamespaces: with credentialNamespaces the gateway
// may read (get/list/watch) and weft-control get the Secrets of those
// namespaces too, through a Role in each (still no ClusterRole), the
// gateway is told with --credential-namespaces and weft-control with the
// pod annotation weft.io/credential-namespaces.
func TestGatewayCredentialNamespaces(t *testing.T) {
	out := renderGateway(t, "--set", "credentialNamespaces={apps,web}")
	roles := map[string][]string{}  // "<ns>/<name>" -> verbs
	bindings := map[string]string{} // "<ns>/<name>" -> subject "<ns>/<name>"
	var dep *appsv1.Deployment
	for _, doc := range documents(out) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatal(err)
		}
		switch tm.Kind {
		case "ClusterRole", "ClusterRoleBinding":
			t.Fatalf("%s rendered: the gateway chart grants namespaced access only", tm.Kind)
		case "Role":
			var r rbacv1.Role
			if err := yaml.UnmarshalStrict(doc, &r); err != nil {
				t.Fatal(err)
			}
			if len(r.Rules) != 1 || !slices.Equal(r.Rules[0].Resources, []string{"secrets"}) {
				t.Errorf("Role %s/%s rules %+v, want secrets only", r.Namespace, r.Name, r.Rules)
			}
			roles[r.Namespace+"/"+r.Name] = r.Rules[0].Verbs
		case "RoleBinding":
			var b rbacv1.RoleBinding
			if err := yaml.UnmarshalStrict(doc, &b); err != nil {
				t.Fatal(err)
			}
			if len(b.Subjects) == 1 && b.RoleRef.Name == b.Name {
				bindings[b.Namespace+"/"+b.Name] = b.Subjects[0].Namespace + "/" + b.Subjects[0].Name
			}
		case "Deployment":
			dep = &appsv1.Deployment{}
			if err := yaml.UnmarshalStrict(doc, dep); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, ns := range []string{gatewayNamespace, "apps", "web"} {
		if v := roles[ns+"/"+gatewayRelease]; !slices.Equal(v, []string{"get", "list", "watch"}) {
			t.Errorf("namespace %s: gateway Role verbs %v, want get/list/watch", ns, v)
		}
		if v := roles[ns+"/"+gatewayRelease+"-secret-check"]; !slices.Equal(v, []string{"get"}) {
			t.Errorf("namespace %s: weft-control Role verbs %v, want get", ns, v)
		}
		if s := bindings[ns+"/"+gatewayRelease]; s != gatewayNamespace+"/"+gatewayRelease {
			t.Errorf("namespace %s: gateway RoleBinding subject %q", ns, s)
		}
		if s := bindings[ns+"/"+gatewayRelease+"-secret-check"]; s != "weft-system/weft-control" {
			t.Errorf("namespace %s: weft-control RoleBinding subject %q", ns, s)
		}
	}
	if len(roles) != 6 {
		t.Errorf("Roles %v, want two in each of the three namespaces", roles)
	}
	if dep == nil {
		t.Fatal("no Deployment rendered")
	}
	pod := dep.Spec.Template
	if a := pod.Annotations["weft.io/credential-namespaces"]; a != "apps,web" {
		t.Errorf("pod annotation weft.io/credential-namespaces %q, want apps,web", a)
	}
	if !slices.Contains(pod.Spec.Containers[0].Args, "--credential-namespaces=apps,web") {
		t.Errorf("gateway args %v lack --credential-namespaces=apps,web", pod.Spec.Containers[0].Args)
	}
}
