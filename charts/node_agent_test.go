package charts

import (
	"bytes"
	"fmt"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/weft-mesh/weft/pkg/golden"
)

// The weft-node-agent chart, installed as
// `helm install weft-node-agent charts/node-agent -n weft-system`.
const (
	nodeAgentChart   = "node-agent"
	nodeAgentRelease = "weft-node-agent"
	nodeAgentName    = "weft-node-agent"
)

var nodeAgentCustomValues = filepath.Join("testdata", "node-agent-custom.values.yaml")

// renderNodeAgent runs `helm template weft-node-agent node-agent` with extra args.
func renderNodeAgent(t *testing.T, args ...string) []byte {
	t.Helper()
	out, err := runHelm(t, append([]string{"template", nodeAgentRelease, nodeAgentChart, "--namespace", namespace}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// nodeAgentKinds are the only kinds the node agent chart may render. In
// particular no Role, and one ClusterRole, whose grants
// checkAgentAPIAccess checks.
var nodeAgentKinds = map[string]func() any{
	"v1/ServiceAccount":                               func() any { return &corev1.ServiceAccount{} },
	"apps/v1/DaemonSet":                               func() any { return &appsv1.DaemonSet{} },
	"rbac.authorization.k8s.io/v1/ClusterRole":        func() any { return &rbacv1.ClusterRole{} },
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding": func() any { return &rbacv1.ClusterRoleBinding{} },
	"admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy": func() any {
		return &admissionv1.ValidatingAdmissionPolicy{}
	},
	"admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding": func() any {
		return &admissionv1.ValidatingAdmissionPolicyBinding{}
	},
}

// decodeNodeAgent decodes a node agent render strictly (see decodeOnly):
// only nodeAgentKinds, all in the release namespace.
func decodeNodeAgent(t *testing.T, out []byte) objects {
	t.Helper()
	return decodeOnly(t, "weft-node-agent", out, namespace, nodeAgentKinds)
}

func TestLintStrictNodeAgent(t *testing.T) {
	for _, values := range []string{"", nodeAgentCustomValues} {
		t.Run("values="+values, func(t *testing.T) {
			args := []string{"lint", "--strict", "--namespace", namespace, nodeAgentChart}
			if values != "" {
				args = append(args, "--values", values)
			}
			out, err := runHelm(t, args...)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(out, []byte("[WARNING]")) || bytes.Contains(out, []byte("[ERROR]")) {
				t.Fatalf("helm lint --strict %s is not clean:\n%s", nodeAgentChart, out)
			}
		})
	}
}

// TestGoldenNodeAgent compares `helm template` with
// testdata/node-agent-<case>.golden.yaml; `go test ./charts -run TestGolden
// -update` rewrites them along with the control chart's.
func TestGoldenNodeAgent(t *testing.T) {
	cases := []struct {
		name string
		args []string
	}{
		{"default", nil},
		{"custom", []string{"--values", nodeAgentCustomValues}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := renderNodeAgent(t, c.args...)
			golden.Assert(t, filepath.Join("testdata", "node-agent-"+c.name+".golden.yaml"), got)
		})
	}
}

func TestSchemaRejectsBadValuesNodeAgent(t *testing.T) {
	cases := []struct {
		flag, value string
		field       string // the error must name it
	}{
		{"--set", "controlAddress=x:1", "controlAddress"},
		{"--set", "serviceAcount.name=x", "serviceAcount"},
		{"--set", "bpffs.mount=false", "mount"},
		{"--set", "cni.dir=/x", "dir"},
		{"--set", "image.registry=x", "registry"},
		{"--set", "image.pullPolicy=Sometimes", "pullPolicy"},
		{"--set", "logLevel=loud", "logLevel"},
		{"--set", "bpffs.mountIfMissing=maybe", "mountIfMissing"},
		{"--set", "terminationGracePeriodSeconds=soon", "terminationGracePeriodSeconds"},
		{"--set", "terminationGracePeriodSeconds=-1", "terminationGracePeriodSeconds"},
		{"--set", "cni.binDir=opt/cni/bin", "binDir"},
		{"--set", "cni.confDir=/etc/cni net.d", "confDir"},
		{"--set", "control.address=weft-control", "address"},
		{"--set", "control.address=https://weft-control:15012", "address"},
		{"--set", "serviceAccount.name=Node_Agent", "serviceAccount"},
		{"--set", "caAudience=", "caAudience"},
		{"--set", "tolerations=all", "tolerations"},
		{"--set", "podAnnotations.owner=1", "podAnnotations"},
		{"--set", "nodeSelector.pool=2", "nodeSelector"},
		{"--set", "cni.readinessTaint=not ready", "readinessTaint"},
		{"--set", "cni.readinessTaint=x/y/z", "readinessTaint"},
		{"--set-string", "gogc=fifty", "gogc"},
		{"--set", "gogc=0", "gogc"},
		{"--set", "gogc=off", "gogc"},
	}
	for _, c := range cases {
		t.Run(c.value, func(t *testing.T) {
			out, err := runHelm(t, "template", nodeAgentRelease, nodeAgentChart, "--namespace", namespace, c.flag, c.value)
			if err == nil {
				t.Fatalf("helm template %s %s %s succeeded; want a schema error", nodeAgentChart, c.flag, c.value)
			}
			if !bytes.Contains(out, []byte("schema")) || !bytes.Contains(out, []byte(c.field)) {
				t.Fatalf("the error does not name %q as a schema violation:\n%s", c.field, out)
			}
		})
	}
}

// nodeAgentObjects checks the rendered objects are exactly the agent's
// ServiceAccount sa, DaemonSet and API access (with taint: the admission
// policy that bounds the readiness taint's removal), and returns the first
// two.
func nodeAgentObjects(t *testing.T, objs objects, sa, taint string) (*corev1.ServiceAccount, *appsv1.DaemonSet) {
	t.Helper()
	var keys []string
	for k := range objs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"ClusterRole/" + nodeAgentName, "ClusterRoleBinding/" + nodeAgentName, "DaemonSet/" + nodeAgentName, "ServiceAccount/" + sa}
	if taint != "" {
		want = append(want, "ValidatingAdmissionPolicy/"+nodeAgentName+"-nodes", "ValidatingAdmissionPolicyBinding/"+nodeAgentName+"-nodes")
		slices.Sort(want)
	}
	if !slices.Equal(keys, want) {
		t.Fatalf("rendered %v, want exactly %v", keys, want)
	}
	ds := get[appsv1.DaemonSet](t, objs, "DaemonSet", nodeAgentName)
	checkAgentAPIAccess(t, objs, sa, taint, ds)
	return get[corev1.ServiceAccount](t, objs, "ServiceAccount", sa), ds
}

// checkAgentAPIAccess: the agent's API use is getting the Pod of a CNI ADD
// (its own dataplane-mode label) and a Namespace (its labels, when the
// control plane cannot say whether the namespace is enrolled);
// install-cni's, with a readiness taint, is removing that taint from its
// node, which an admission policy bounds.
// Only those two containers have an API token, for the API server's
// audience, short-lived and read-only.
func checkAgentAPIAccess(t *testing.T, objs objects, sa, taint string, ds *appsv1.DaemonSet) {
	t.Helper()
	cr := get[rbacv1.ClusterRole](t, objs, "ClusterRole", nodeAgentName)
	want := map[string][]string{"/namespaces": {"get"}, "/pods": {"get"}}
	if taint != "" {
		want["/nodes"] = []string{"get", "patch"}
	}
	if got := grants(t, "ClusterRole", cr.Rules); !reflect.DeepEqual(got, want) {
		t.Errorf("ClusterRole grants %v, want %v", got, want)
	}
	for _, r := range cr.Rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("ClusterRole rule %+v: unexpected resourceNames/nonResourceURLs", r)
		}
	}
	crb := get[rbacv1.ClusterRoleBinding](t, objs, "ClusterRoleBinding", nodeAgentName)
	wantSub := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: namespace}}
	if crb.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: nodeAgentName}) || !slices.Equal(crb.Subjects, wantSub) {
		t.Errorf("ClusterRoleBinding = %+v %+v", crb.RoleRef, crb.Subjects)
	}
	v := volume(t, ds, "kube-api-access")
	var tok *corev1.ServiceAccountTokenProjection
	for _, src := range v.VolumeSource.Projected.Sources {
		if src.ServiceAccountToken != nil {
			tok = src.ServiceAccountToken
		}
	}
	if tok == nil || tok.Audience != "" || tok.Path != "token" || tok.ExpirationSeconds == nil || *tok.ExpirationSeconds != 3600 {
		t.Errorf("kube-api-access token %+v, want the API server's audience at token, 3600 s", tok)
	}
	holders := []string{"node-agent"}
	if taint != "" {
		holders = append(holders, "install-cni")
	}
	pod := ds.Spec.Template.Spec
	for _, ctr := range slices.Concat(pod.InitContainers, pod.Containers) {
		for _, m := range ctr.VolumeMounts {
			if m.Name != "kube-api-access" {
				continue
			}
			if !slices.Contains(holders, ctr.Name) || m.MountPath != "/var/run/secrets/kubernetes.io/serviceaccount" || !m.ReadOnly {
				t.Errorf("container %s mounts kube-api-access at %s (read-only %v): only %v may, read-only, where in-cluster clients look",
					ctr.Name, m.MountPath, m.ReadOnly, holders)
			}
		}
	}
	if taint != "" {
		checkReadinessTaint(t, objs, sa, taint, ds)
	}
}

// checkReadinessTaint: install-cni removes the taint from its own node
// (named by the downward API), the agent tolerates it (or it could never
// run where it must remove it), and the admission policy that keeps the
// service account to that one change binds it, denying.
func checkReadinessTaint(t *testing.T, objs objects, sa, taint string, ds *appsv1.DaemonSet) {
	t.Helper()
	installer := container(t, ds, "install-cni")
	if got := flagValue(t, installer.Args, "readiness-taint"); got != taint {
		t.Errorf("install-cni --readiness-taint=%s, want %s", got, taint)
	}
	if got := flagValue(t, installer.Args, "node-name"); got != "$(NODE_NAME)" {
		t.Errorf("install-cni --node-name=%s", got)
	}
	if e := installer.Env; len(e) != 1 || e[0].Name != "NODE_NAME" || e[0].ValueFrom == nil || e[0].ValueFrom.FieldRef == nil || e[0].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("install-cni env %+v, want NODE_NAME from spec.nodeName", e)
	}
	if !slices.ContainsFunc(ds.Spec.Template.Spec.Tolerations, func(tol corev1.Toleration) bool {
		return tol.Operator == corev1.TolerationOpExists && (tol.Key == taint || tol.Key == "") && tol.Effect == ""
	}) {
		t.Errorf("tolerations %+v do not tolerate %s", ds.Spec.Template.Spec.Tolerations, taint)
	}
	vap := get[admissionv1.ValidatingAdmissionPolicy](t, objs, "ValidatingAdmissionPolicy", nodeAgentName+"-nodes")
	user := fmt.Sprintf("request.userInfo.username == %q", "system:serviceaccount:"+namespace+":"+sa)
	if p := vap.Spec; p.FailurePolicy == nil || *p.FailurePolicy != admissionv1.Fail || len(p.MatchConditions) != 1 || p.MatchConditions[0].Expression != user ||
		len(p.Validations) != 3 || !strings.Contains(p.Validations[1].Expression, "'"+taint+"'") {
		t.Errorf("node policy %+v: want it to fail closed, match %s and allow removing only %s", p, user, taint)
	}
	b := get[admissionv1.ValidatingAdmissionPolicyBinding](t, objs, "ValidatingAdmissionPolicyBinding", nodeAgentName+"-nodes")
	if b.Spec.PolicyName != vap.Name || !slices.Equal(b.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Deny}) {
		t.Errorf("node policy binding %+v", b.Spec)
	}
}

// TestNodeAgentWithoutReadinessTaint: with no taint, install-cni has no
// API access and the service account no access to nodes.
func TestNodeAgentWithoutReadinessTaint(t *testing.T) {
	_, ds := nodeAgentObjects(t, decodeNodeAgent(t, renderNodeAgent(t, "--set", "cni.readinessTaint=")), "weft-node-agent", "")
	installer := container(t, ds, "install-cni")
	if slices.ContainsFunc(installer.Args, func(a string) bool { return strings.HasPrefix(a, "--readiness-taint") }) || len(installer.Env) != 0 {
		t.Errorf("install-cni args %v env %v: nothing about a taint", installer.Args, installer.Env)
	}
	checkInstallerSecurity(t, ds)
}

func agentContainer(t *testing.T, ds *appsv1.DaemonSet) corev1.Container {
	t.Helper()
	return container(t, ds, "node-agent")
}

// container is the DaemonSet's container name; node-agent and install-cni
// are its only containers.
func container(t *testing.T, ds *appsv1.DaemonSet, name string) corev1.Container {
	t.Helper()
	cs := ds.Spec.Template.Spec.Containers
	if len(cs) != 2 || cs[0].Name != "node-agent" || cs[1].Name != "install-cni" {
		t.Fatalf("daemonset containers %v, want node-agent and install-cni", cs)
	}
	return cs[slices.IndexFunc(cs, func(c corev1.Container) bool { return c.Name == name })]
}

// checkInstallerSecurity: the install-cni container is the only one that
// mounts the CNI directories, and may do nothing else: no capability, no
// way to gain one, a read-only root filesystem and a read-only view of
// the agent's run directory.
func checkInstallerSecurity(t *testing.T, ds *appsv1.DaemonSet) {
	t.Helper()
	c := container(t, ds, "install-cni")
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Fatalf("install-cni securityContext %+v: want capabilities drop [ALL], add none", sc)
	}
	if !isFalse(sc.Privileged) || !isFalse(sc.AllowPrivilegeEscalation) || !isTrue(sc.ReadOnlyRootFilesystem) ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("install-cni securityContext %+v: want unprivileged, no escalation, read-only root, RuntimeDefault seccomp", sc)
	}
	if m := mount(t, c, "run"); !m.ReadOnly {
		t.Error("install-cni mounts the run directory writable")
	}
	var names []string
	for _, m := range c.VolumeMounts {
		names = append(names, m.Name)
	}
	want := []string{"cni-bin", "cni-conf", "run"}
	if slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--readiness-taint=") }) {
		want = []string{"cni-bin", "cni-conf", "kube-api-access", "run"} // to remove the taint
	}
	if !slices.Equal(slices.Sorted(slices.Values(names)), want) {
		t.Errorf("install-cni mounts %v, want %v only", names, want)
	}
	for _, ctr := range slices.Concat(ds.Spec.Template.Spec.InitContainers, ds.Spec.Template.Spec.Containers) {
		for _, m := range ctr.VolumeMounts {
			if (m.Name == "cni-bin" || m.Name == "cni-conf") && ctr.Name != "install-cni" {
				t.Errorf("container %s mounts %s: only install-cni may write the CNI directories", ctr.Name, m.Name)
			}
		}
	}
}

// wantCapabilities is the agent's whole capability set; anything more needs
// a reason in daemonset.yaml and here.
var wantCapabilities = []corev1.Capability{"NET_ADMIN", "NET_RAW", "BPF", "PERFMON", "SYS_RESOURCE"}

// checkAgentSecurity checks what the agent may do, whatever the values.
func checkAgentSecurity(t *testing.T, sa *corev1.ServiceAccount, ds *appsv1.DaemonSet) {
	t.Helper()
	pod := ds.Spec.Template.Spec
	if !isFalse(sa.AutomountServiceAccountToken) || !isFalse(pod.AutomountServiceAccountToken) {
		t.Errorf("automountServiceAccountToken: ServiceAccount %s, pod %s; want false on both (only the agent and install-cni containers mount an API token)",
			deref(sa.AutomountServiceAccountToken), deref(pod.AutomountServiceAccountToken))
	}
	if pod.ServiceAccountName != sa.Name {
		t.Errorf("serviceAccountName = %q, want %q", pod.ServiceAccountName, sa.Name)
	}
	if !pod.HostNetwork || pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork %v dnsPolicy %q, want true and ClusterFirstWithHostNet", pod.HostNetwork, pod.DNSPolicy)
	}
	if pod.HostPID || pod.HostIPC || pod.HostUsers != nil {
		t.Errorf("hostPID %v hostIPC %v hostUsers %s: the agent needs none", pod.HostPID, pod.HostIPC, deref(pod.HostUsers))
	}
	if pod.SecurityContext != nil && !sameJSON(pod.SecurityContext, &corev1.PodSecurityContext{}) {
		t.Errorf("pod securityContext = %+v, want none", pod.SecurityContext)
	}

	c := agentContainer(t, ds)
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("node-agent container has no securityContext")
	}
	if sc.Privileged == nil || *sc.Privileged {
		t.Errorf("node-agent privileged = %s, want explicitly false", deref(sc.Privileged))
	}
	if !isFalse(sc.AllowPrivilegeEscalation) || !isTrue(sc.ReadOnlyRootFilesystem) {
		t.Errorf("allowPrivilegeEscalation %s readOnlyRootFilesystem %s, want false and true", deref(sc.AllowPrivilegeEscalation), deref(sc.ReadOnlyRootFilesystem))
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 || !isFalse(sc.RunAsNonRoot) {
		t.Errorf("runAsUser %s runAsNonRoot %s, want 0 and false", deref(sc.RunAsUser), deref(sc.RunAsNonRoot))
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Fatalf("capabilities %+v: want drop [ALL]", sc.Capabilities)
	}
	want := wantCapabilities
	if slices.Contains(c.Args, "--dns-capture=true") {
		// Answers from <resolver IP>:53 bind a port below 1024.
		want = append(slices.Clone(want), "NET_BIND_SERVICE")
	}
	if got := slices.Sorted(slices.Values(sc.Capabilities.Add)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Errorf("capabilities add %v, want exactly %v", sc.Capabilities.Add, want)
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile = %+v, want RuntimeDefault", sc.SeccompProfile)
	}
	if sc.AppArmorProfile == nil || sc.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined {
		t.Errorf("appArmorProfile = %+v, want Unconfined (default profiles deny bpffs pins)", sc.AppArmorProfile)
	}
	// On the host network every containerPort is a hostPort, which would
	// make the scheduler refuse a rolling update's surge pod.
	if len(c.Ports) != 0 {
		t.Errorf("ports = %v, want none (host ports cannot surge)", c.Ports)
	}

	// The only privileged containers are mount-bpffs and
	// disable-tcp-early-demux, and only mount-bpffs mounts with
	// Bidirectional propagation.
	for _, ic := range pod.InitContainers {
		if ic.Name != "mount-bpffs" && ic.Name != "disable-tcp-early-demux" {
			t.Errorf("unexpected init container %q", ic.Name)
		}
	}
	for _, ctr := range slices.Concat(pod.InitContainers, pod.Containers) {
		for _, m := range ctr.VolumeMounts {
			if m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional && ctr.Name != "mount-bpffs" {
				t.Errorf("container %s mounts %s Bidirectional", ctr.Name, m.MountPath)
			}
		}
	}

	// The CA token: projected, for the CA's audience, short-lived.
	v := volume(t, ds, "weft-ca-token")
	if v.Projected == nil || len(v.Projected.Sources) != 1 || v.Projected.Sources[0].ServiceAccountToken == nil {
		t.Fatalf("weft-ca-token = %+v, want one projected serviceAccountToken", v.VolumeSource)
	}
	if tok := v.Projected.Sources[0].ServiceAccountToken; tok.ExpirationSeconds == nil || *tok.ExpirationSeconds != 3600 || tok.Path != "token" {
		t.Errorf("token projection = %+v, want expirationSeconds 3600 and path token", tok)
	}
	if m := mount(t, c, "weft-ca-token"); !m.ReadOnly {
		t.Error("weft-ca-token is mounted writable")
	}
	if m := mount(t, c, "weft-ca-root-cert"); !m.ReadOnly {
		t.Error("weft-ca-root-cert is mounted writable")
	}
	checkInstallerSecurity(t, ds)
}

func volume(t *testing.T, ds *appsv1.DaemonSet, name string) corev1.Volume {
	t.Helper()
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %q", name)
	return corev1.Volume{}
}

func mount(t *testing.T, c corev1.Container, name string) corev1.VolumeMount {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("container %s does not mount %q", c.Name, name)
	return corev1.VolumeMount{}
}

func isFalse(b *bool) bool { return b != nil && !*b }

// deref formats *p, or "unset" for nil, for error messages.
func deref[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

// flagValue returns the value of --name=value in args.
func flagValue(t *testing.T, args []string, name string) string {
	t.Helper()
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	t.Fatalf("no --%s in %q", name, args)
	return ""
}

// checkAgentMounts checks that every path flag of the agent lies on the
// volume meant for it: the chart's mounts and flags must not drift apart.
func checkAgentMounts(t *testing.T, ds *appsv1.DaemonSet, cniBin, cniConf string) {
	t.Helper()
	c := agentContainer(t, ds)
	under := func(c corev1.Container, flag, vol string) corev1.VolumeMount {
		t.Helper()
		p, m := flagValue(t, c.Args, flag), mount(t, c, vol)
		if p != m.MountPath && !strings.HasPrefix(p, m.MountPath+"/") {
			t.Errorf("--%s=%s is not on volume %s (mounted at %s)", flag, p, vol, m.MountPath)
		}
		return m
	}
	hostPath := func(vol, want string, typ corev1.HostPathType) {
		t.Helper()
		v := volume(t, ds, vol)
		if v.HostPath == nil || v.HostPath.Path != want || v.HostPath.Type == nil || *v.HostPath.Type != typ {
			t.Errorf("volume %s = %+v, want hostPath %s type %s", vol, v.VolumeSource, want, typ)
		}
	}
	propagation := func(m corev1.VolumeMount, want corev1.MountPropagationMode) {
		t.Helper()
		if m.MountPropagation == nil || *m.MountPropagation != want {
			t.Errorf("mount %s propagation %s, want %s", m.MountPath, deref(m.MountPropagation), want)
		}
	}

	propagation(under(c, "bpf-dir", "bpffs"), corev1.MountPropagationHostToContainer)
	hostPath("bpffs", "/sys/fs/bpf", corev1.HostPathDirectoryOrCreate)
	installer := container(t, ds, "install-cni")
	under(installer, "cni-bin-dir", "cni-bin")
	hostPath("cni-bin", cniBin, corev1.HostPathDirectoryOrCreate)
	under(installer, "cni-conf-dir", "cni-conf")
	hostPath("cni-conf", cniConf, corev1.HostPathDirectoryOrCreate)
	under(c, "run-dir", "run")
	under(installer, "run-dir", "run")
	hostPath("run", "/var/run/weft", corev1.HostPathDirectoryOrCreate)

	m := under(c, "token-file", "weft-ca-token")
	if got := path.Join(m.MountPath, volume(t, ds, "weft-ca-token").Projected.Sources[0].ServiceAccountToken.Path); got != flagValue(t, c.Args, "token-file") {
		t.Errorf("the token is projected to %s, --token-file is %s", got, flagValue(t, c.Args, "token-file"))
	}
	m = under(c, "ca-root-cert", "weft-ca-root-cert")
	root := volume(t, ds, "weft-ca-root-cert")
	if root.ConfigMap == nil || root.ConfigMap.Name != "weft-ca-root-cert" || isTrue(root.ConfigMap.Optional) ||
		!sameJSON(root.ConfigMap.Items, []corev1.KeyToPath{{Key: "root-cert.pem", Path: "root-cert.pem"}}) {
		t.Errorf("weft-ca-root-cert volume = %+v, want ConfigMap weft-ca-root-cert key root-cert.pem", root.VolumeSource)
	} else if got := path.Join(m.MountPath, root.ConfigMap.Items[0].Path); got != flagValue(t, c.Args, "ca-root-cert") {
		t.Errorf("the root certificate is at %s, --ca-root-cert is %s", got, flagValue(t, c.Args, "ca-root-cert"))
	}
	if m := mount(t, c, "tmp"); m.MountPath != "/tmp" || volume(t, ds, "tmp").EmptyDir == nil {
		t.Errorf("/tmp is not an emptyDir: %+v", m)
	}

	// Every mount has a volume, every volume a mount.
	mounted := map[string]bool{}
	for _, ctr := range slices.Concat(ds.Spec.Template.Spec.InitContainers, ds.Spec.Template.Spec.Containers) {
		for _, m := range ctr.VolumeMounts {
			volume(t, ds, m.Name)
			mounted[m.Name] = true
		}
	}
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if !mounted[v.Name] {
			t.Errorf("volume %s is mounted nowhere", v.Name)
		}
	}
}

// wantAgentArgs are the agent's flags for a control address, log level,
// DNS capture switch and the fixed in-container paths.
func wantAgentArgs(control, logLevel, dnsCapture string) []string {
	return []string{
		"--node-name=$(NODE_NAME)",
		"--control-address=" + control,
		"--ca-root-cert=/etc/weft/ca-root/root-cert.pem",
		"--token-file=/var/run/secrets/weft/token",
		"--bpf-dir=/sys/fs/bpf/weft",
		"--install-cni=false",
		"--run-dir=/var/run/weft",
		"--ready-file=/tmp/weft-agent-ready",
		"--log-level=" + logLevel,
		"--dns-capture=" + dnsCapture,
		"--namespaces-from-api=true",
		"--pod-labels-from-api=true",
	}
}

func TestNodeAgentDefaults(t *testing.T) {
	sa, ds := nodeAgentObjects(t, decodeNodeAgent(t, renderNodeAgent(t)), "weft-node-agent", "weft.io/agent-not-ready")
	checkAgentSecurity(t, sa, ds)
	checkAgentMounts(t, ds, "/opt/cni/bin", "/etc/cni/net.d")

	podLabels := labels.Set(ds.Spec.Template.Labels)
	if sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector); err != nil || !sel.Matches(podLabels) {
		t.Errorf("selector %v does not match pod labels %v (%v)", ds.Spec.Selector, podLabels, err)
	}
	for k, v := range map[string]string{
		"app": nodeAgentName, "app.kubernetes.io/name": nodeAgentName, "app.kubernetes.io/instance": nodeAgentRelease,
		"app.kubernetes.io/version": "0.1.0", "app.kubernetes.io/component": "node-agent", "app.kubernetes.io/part-of": "weft",
		"app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": "weft-node-agent-0.1.0", "istio.io/dataplane-mode": "none",
	} {
		if podLabels[k] != v {
			t.Errorf("pod label %s = %q, want %q", k, podLabels[k], v)
		}
		if k != "istio.io/dataplane-mode" && (ds.Labels[k] != v || sa.Labels[k] != v) {
			t.Errorf("label %s: DaemonSet %q ServiceAccount %q, want %q", k, ds.Labels[k], sa.Labels[k], v)
		}
	}
	if want := map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "15020", "prometheus.io/path": "/metrics",
		"kubectl.kubernetes.io/default-container": "node-agent"}; !sameJSON(ds.Spec.Template.Annotations, want) {
		t.Errorf("pod annotations = %v, want %v", ds.Spec.Template.Annotations, want)
	}

	u := ds.Spec.UpdateStrategy
	if u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil ||
		u.RollingUpdate.MaxUnavailable == nil || u.RollingUpdate.MaxUnavailable.String() != "0" ||
		u.RollingUpdate.MaxSurge == nil || u.RollingUpdate.MaxSurge.String() != "1" {
		t.Errorf("updateStrategy = %+v, want RollingUpdate maxUnavailable 0 maxSurge 1 (the new agent starts before the old one hands over)", u)
	}

	pod := ds.Spec.Template.Spec
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName = %q, want system-node-critical", pod.PriorityClassName)
	}
	if !sameJSON(pod.Tolerations, []corev1.Toleration{{Operator: corev1.TolerationOpExists}}) {
		t.Errorf("tolerations = %+v, want [{operator: Exists}] (every node)", pod.Tolerations)
	}
	if !sameJSON(pod.NodeSelector, map[string]string{"kubernetes.io/os": "linux"}) {
		t.Errorf("nodeSelector = %v", pod.NodeSelector)
	}
	if pod.Affinity != nil || pod.ImagePullSecrets != nil || sa.ImagePullSecrets != nil {
		t.Errorf("unexpected defaults: affinity %+v imagePullSecrets %v / %v", pod.Affinity, pod.ImagePullSecrets, sa.ImagePullSecrets)
	}
	if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds != 30 {
		t.Errorf("terminationGracePeriodSeconds = %s, want 30", deref(pod.TerminationGracePeriodSeconds))
	}

	// mount-bpffs: privileged, Bidirectional on the host's /sys/fs/bpf;
	// disable-tcp-early-demux: privileged, no mounts.
	if len(pod.InitContainers) != 2 {
		t.Fatalf("init containers %d, want mount-bpffs and disable-tcp-early-demux", len(pod.InitContainers))
	}
	if ed := pod.InitContainers[1]; ed.Name != "disable-tcp-early-demux" || !slices.Equal(ed.Args, []string{"disable-tcp-early-demux"}) ||
		ed.SecurityContext == nil || !isTrue(ed.SecurityContext.Privileged) || len(ed.VolumeMounts) != 0 {
		t.Errorf("init container %s args %q securityContext %+v mounts %v, want disable-tcp-early-demux, privileged, no mounts", ed.Name, ed.Args, ed.SecurityContext, ed.VolumeMounts)
	}
	ic := pod.InitContainers[0]
	if ic.Image != "ghcr.io/weft-mesh/node-agent:0.1.0" || !slices.Equal(ic.Args, []string{"mount-bpffs", "--path=/sys/fs/bpf"}) {
		t.Errorf("mount-bpffs image %q args %q", ic.Image, ic.Args)
	}
	if ic.SecurityContext == nil || !isTrue(ic.SecurityContext.Privileged) {
		t.Errorf("mount-bpffs securityContext %+v, want privileged (Bidirectional propagation requires it)", ic.SecurityContext)
	}
	if m := mount(t, ic, "bpffs"); m.MountPath != "/sys/fs/bpf" || m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationBidirectional {
		t.Errorf("mount-bpffs mount = %+v, want /sys/fs/bpf Bidirectional", m)
	}

	c := agentContainer(t, ds)
	if c.Image != "ghcr.io/weft-mesh/node-agent:0.1.0" || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %q pullPolicy %q", c.Image, c.ImagePullPolicy)
	}
	if want := wantAgentArgs("weft-control.weft-system.svc:15012", "info", "false"); !slices.Equal(c.Args, want) {
		t.Errorf("args:\n got %q\nwant %q", c.Args, want)
	}
	if c.Command != nil {
		t.Errorf("command = %q, want the image's entrypoint", c.Command)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.Name == "GODEBUG" {
			continue // TestProxiesRunWithProxyGODEBUG
		}
		if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil {
			t.Errorf("env %s is not a fieldRef", e.Name)
			continue
		}
		env[e.Name] = e.ValueFrom.FieldRef.FieldPath
	}
	if want := map[string]string{"NODE_NAME": "spec.nodeName", "POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}; !sameJSON(env, want) {
		t.Errorf("env = %v, want %v", env, want)
	}
	// Readiness is this container's own (exec), not the shared port's.
	if p := c.ReadinessProbe; p == nil || p.Exec == nil ||
		!slices.Equal(p.Exec.Command, []string{"weft-node-agent", "ready", "--ready-file=/tmp/weft-agent-ready"}) ||
		!slices.Contains(c.Args, "--ready-file=/tmp/weft-agent-ready") {
		t.Errorf("readiness probe %+v with args %v, want exec weft-node-agent ready on the agent's --ready-file", p, c.Args)
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || resolvePort(c, p.HTTPGet.Port.String()) != 15021 || p.HTTPGet.Path != "/healthz/live" {
		t.Errorf("liveness probe %+v, want httpGet /healthz/live on 15021", p)
	}
	if c.Resources.Requests.Cpu().String() != "100m" || c.Resources.Requests.Memory().String() != "128Mi" || c.Resources.Limits != nil {
		t.Errorf("resources = %+v", c.Resources)
	}
	if aud := volume(t, ds, "weft-ca-token").Projected.Sources[0].ServiceAccountToken.Audience; aud != "weft-ca" {
		t.Errorf("token audience = %q, want weft-ca", aud)
	}
}

func TestNodeAgentCustomValues(t *testing.T) {
	sa, ds := nodeAgentObjects(t, decodeNodeAgent(t, renderNodeAgent(t, "--values", nodeAgentCustomValues)), "node-agent", "mesh.example.org/agent-not-ready")
	checkAgentSecurity(t, sa, ds)
	checkAgentMounts(t, ds, "/var/lib/cni/bin", "/var/lib/cni/net.d")

	pod := ds.Spec.Template.Spec
	if pod.ServiceAccountName != "node-agent" {
		t.Errorf("serviceAccountName = %q", pod.ServiceAccountName)
	}
	if len(pod.InitContainers) != 0 {
		t.Errorf("bpffs.mountIfMissing=false, tcpEarlyDemux.disable=false still render %d init containers", len(pod.InitContainers))
	}
	for _, ctr := range slices.Concat(pod.InitContainers, pod.Containers) {
		if ctr.SecurityContext != nil && isTrue(ctr.SecurityContext.Privileged) {
			t.Errorf("container %s is privileged with bpffs.mountIfMissing=false, tcpEarlyDemux.disable=false", ctr.Name)
		}
	}
	c := agentContainer(t, ds)
	if c.Image != "registry.example.org/mesh/node-agent:1.2.3-rc.1" || c.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("image %q pullPolicy %q", c.Image, c.ImagePullPolicy)
	}
	if want := wantAgentArgs("weft-control.mesh-control.svc:15012", "debug", "true"); !slices.Equal(c.Args, want) {
		t.Errorf("args:\n got %q\nwant %q", c.Args, want)
	}
	if aud := volume(t, ds, "weft-ca-token").Projected.Sources[0].ServiceAccountToken.Audience; aud != "example-ca" {
		t.Errorf("token audience = %q, want example-ca", aud)
	}
	if c.Resources.Requests.Cpu().String() != "200m" || c.Resources.Requests.Memory().String() != "256Mi" ||
		c.Resources.Limits.Memory().String() != "1Gi" || !c.Resources.Limits.Cpu().IsZero() {
		t.Errorf("resources = %+v", c.Resources)
	}
	if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds != 45 {
		t.Errorf("terminationGracePeriodSeconds = %s, want 45", deref(pod.TerminationGracePeriodSeconds))
	}
	regcred := []corev1.LocalObjectReference{{Name: "regcred"}}
	if pod.PriorityClassName != "mesh-critical" ||
		!sameJSON(pod.NodeSelector, map[string]string{"kubernetes.io/os": "linux", "mesh.example.org/enabled": "true"}) ||
		!sameJSON(pod.Tolerations, []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "mesh", Effect: corev1.TaintEffectNoSchedule},
			{Key: "mesh.example.org/agent-not-ready", Operator: corev1.TolerationOpExists}}) ||
		pod.Affinity == nil || pod.Affinity.NodeAffinity == nil ||
		!sameJSON(pod.ImagePullSecrets, regcred) || !sameJSON(sa.ImagePullSecrets, regcred) {
		t.Errorf("scheduling values not applied: %+v", pod)
	}
	if ds.Spec.Template.Labels["team"] != "mesh" {
		t.Errorf("podLabels not applied: %v", ds.Spec.Template.Labels)
	}
	if want := map[string]string{
		"prometheus.io/scrape": "false", "prometheus.io/port": "15020", "prometheus.io/path": "/metrics", "example.org/owner": "mesh-team",
		"kubectl.kubernetes.io/default-container": "node-agent",
	}; !sameJSON(ds.Spec.Template.Annotations, want) {
		t.Errorf("pod annotations = %v, want %v (podAnnotations override the chart's)", ds.Spec.Template.Annotations, want)
	}
}

// TestNodeAgentMatchesControl: the two charts' defaults fit together: the
// agent's service account, CA audience and control address are the ones the
// default weft-control install in the same namespace expects and serves.
func TestNodeAgentMatchesControl(t *testing.T) {
	sa, ds := nodeAgentObjects(t, decodeNodeAgent(t, renderNodeAgent(t)), "weft-node-agent", "weft.io/agent-not-ready")
	control := decode(t, render(t, "control"))
	cc := controlContainer(t, get[appsv1.Deployment](t, control, "Deployment", "weft-control"))
	if got, want := flagValue(t, cc.Args, "node-agent-service-account"), namespace+"/"+sa.Name; got != want {
		t.Errorf("weft-control trusts node agent %s, the chart installs %s", got, want)
	}
	aud := volume(t, ds, "weft-ca-token").Projected.Sources[0].ServiceAccountToken.Audience
	if got := flagValue(t, cc.Args, "ca-audience"); got != aud {
		t.Errorf("weft-control's CA wants audience %q, the agent's token has %q", got, aud)
	}
	svc := get[corev1.Service](t, control, "Service", "weft-control")
	var xds int32
	for _, p := range svc.Spec.Ports {
		if p.Name == "grpc-xds" {
			xds = p.Port
		}
	}
	if got, want := flagValue(t, agentContainer(t, ds).Args, "control-address"), fmt.Sprintf("%s.%s.svc:%d", svc.Name, svc.Namespace, xds); got != want {
		t.Errorf("the agent dials %s, weft-control serves xDS at %s", got, want)
	}
}
