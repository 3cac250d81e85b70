package install

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/charts"
)

func TestParseValues(t *testing.T) {
	file1 := []byte("control:\n  replicaCount: 3\n  image: {tag: v1}\nnodeAgent:\n  logLevel: warn\n")
	file2 := []byte("control:\n  image: {hub: example.com/weft}\n")
	got, err := ParseValues([][]byte{file1, file2}, []string{"control.replicaCount=2,nodeAgent.logLevel=debug", "base.crds.enabled=false"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[Component]map[string]any{
		// file2 merges into file1's image; --set wins over both.
		Control:   {"replicaCount": int64(2), "image": map[string]any{"tag": "v1", "hub": "example.com/weft"}},
		NodeAgent: {"logLevel": "debug"},
		Base:      {"crds": map[string]any{"enabled": false}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %#v\nwant %#v", got, want)
	}

	for _, tc := range []struct {
		files [][]byte
		sets  []string
		err   string
	}{
		{nil, []string{"controll.replicaCount=2"}, `unknown component "controll" in values: want base, control, nodeAgent`},
		{nil, []string{"replicaCount=2"}, `unknown component "replicaCount"`},
		{[][]byte{[]byte("replicaCount: 2\n")}, nil, `unknown component "replicaCount"`},
		{[][]byte{[]byte("control: 3\n")}, nil, "values for control: want a map"},
		{[][]byte{[]byte("control: [\n")}, nil, "values file 1"},
		{nil, []string{"control.replicaCount"}, "--set control.replicaCount: key"},
	} {
		if _, err := ParseValues(tc.files, tc.sets); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q %q: error %v, want %q", tc.files, tc.sets, err, tc.err)
		}
	}
	if got, err := ParseValues(nil, nil); err != nil || len(got) != 0 {
		t.Errorf("no values: %v %v", got, err)
	}
}

func TestReleaseOrder(t *testing.T) {
	names := func(rs []Release) (s []string) {
		for _, r := range rs {
			s = append(s, r.Name+"@"+r.Namespace+":"+r.Chart)
		}
		return s
	}
	if got, want := names(Releases("mesh")), []string{"weft-base@default:base", "weft-control@mesh:control", "weft-node-agent@mesh:node-agent"}; !slices.Equal(got, want) {
		t.Errorf("install order %v, want %v", got, want)
	}
	if got, want := names(UninstallOrder("mesh", false)), []string{"weft-node-agent@mesh:node-agent", "weft-control@mesh:control"}; !slices.Equal(got, want) {
		t.Errorf("uninstall order %v, want %v", got, want)
	}
	if got := names(UninstallOrder("mesh", true)); len(got) != 3 || got[2] != "weft-base@default:base" {
		t.Errorf("uninstall --purge order %v: weft-base last", got)
	}
	for _, r := range Releases("x") {
		if !slices.Contains(Components, r.Component) {
			t.Errorf("release %s: component %s", r.Name, r.Component)
		}
	}
}

// renderAgents renders the embedded node-agent chart's DaemonSet.
func renderAgents(t *testing.T, vals map[string]any) *appsv1.DaemonSet {
	t.Helper()
	c, err := LoadChart(charts.FS, "node-agent")
	if err != nil {
		t.Fatal(err)
	}
	top, err := chartutil.ToRenderValuesWithSchemaValidation(c, vals, common.ReleaseOptions{Name: "weft-node-agent", Namespace: "weft-system", IsInstall: true}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	out, err := engine.Render(c, top)
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict([]byte(out["weft-node-agent/templates/daemonset.yaml"]), &ds); err != nil {
		t.Fatal(err)
	}
	return &ds
}

func TestAgentSpecFromChart(t *testing.T) {
	ds := renderAgents(t, map[string]any{
		"image":            map[string]any{"hub": "example.com/w", "tag": "t1", "pullPolicy": "Never"},
		"imagePullSecrets": []any{map[string]any{"name": "regcred"}},
		"cni":              map[string]any{"binDir": "/usr/libexec/cni", "confDir": "/etc/cni/custom"},
	})
	got, err := AgentSpecFromDaemonSet(ds)
	if err != nil {
		t.Fatal(err)
	}
	want := AgentSpec{Image: "example.com/w/node-agent:t1", PullPolicy: corev1.PullNever,
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "regcred"}},
		CNIBinDir:        "/usr/libexec/cni", CNIConfDir: "/etc/cni/custom", BPFFSDir: "/sys/fs/bpf", RunDir: "/var/run/weft"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	// The fallback is the chart's defaults.
	def, err := AgentSpecFromDaemonSet(renderAgents(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	if d := DefaultAgentSpec(def.Image); !reflect.DeepEqual(def, d) {
		t.Errorf("DefaultAgentSpec %+v differs from the chart's defaults %+v", d, def)
	}
	ds.Spec.Template.Spec.Volumes = ds.Spec.Template.Spec.Volumes[1:]
	if _, err := AgentSpecFromDaemonSet(ds); err == nil {
		t.Error("a DaemonSet without the bpffs volume must be refused")
	}
}

func TestCleanupPod(t *testing.T) {
	s := AgentSpec{Image: "example.com/w/node-agent:t1", PullPolicy: corev1.PullNever,
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "regcred"}},
		CNIBinDir:        "/usr/libexec/cni", CNIConfDir: "/etc/cni/custom", BPFFSDir: "/sys/fs/bpf", RunDir: "/var/run/weft"}
	p := CleanupPod("weft-system", "node-7", s)
	spec := p.Spec
	if p.Namespace != "weft-system" || p.Labels[CleanupLabel] != "node-7" || p.Labels["istio.io/dataplane-mode"] != "none" {
		t.Errorf("metadata %+v", p.ObjectMeta)
	}
	if spec.NodeName != "node-7" || !spec.HostNetwork || spec.RestartPolicy != corev1.RestartPolicyNever ||
		spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken || spec.ActiveDeadlineSeconds == nil {
		t.Errorf("pod spec: node %q hostNetwork %v restart %s automount %v deadline %v", spec.NodeName, spec.HostNetwork, spec.RestartPolicy, spec.AutomountServiceAccountToken, spec.ActiveDeadlineSeconds)
	}
	if !reflect.DeepEqual(spec.Tolerations, []corev1.Toleration{{Operator: corev1.TolerationOpExists}}) {
		t.Errorf("tolerations %+v: want every taint tolerated", spec.Tolerations)
	}
	if !reflect.DeepEqual(spec.ImagePullSecrets, s.ImagePullSecrets) {
		t.Errorf("pull secrets %+v", spec.ImagePullSecrets)
	}
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 {
		t.Fatalf("containers %d, init containers %d", len(spec.Containers), len(spec.InitContainers))
	}
	c := spec.Containers[0]
	if c.Image != s.Image || c.ImagePullPolicy != corev1.PullNever {
		t.Errorf("image %s %s", c.Image, c.ImagePullPolicy)
	}
	if want := []string{"uninstall", "--bpf-dir=/sys/fs/bpf/weft", "--cni-bin-dir=/host/opt/cni/bin", "--cni-conf-dir=/host/etc/cni/net.d", "--run-dir=/var/run/weft"}; !slices.Equal(c.Args, want) {
		t.Errorf("args %q, want %q", c.Args, want)
	}
	sc := c.SecurityContext
	wantSC := &corev1.SecurityContext{
		Privileged: ptr.To(false), RunAsUser: ptr.To[int64](0), RunAsNonRoot: ptr.To(false),
		ReadOnlyRootFilesystem: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false),
		Capabilities:    &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_ADMIN"}},
		SeccompProfile:  &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined},
	}
	if !reflect.DeepEqual(sc, wantSC) {
		t.Errorf("securityContext %+v, want %+v", sc, wantSC)
	}
	// Exactly the four host directories, where the command's flags say.
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
		if m.Name == volBPFFS && (m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer) {
			t.Errorf("bpffs mount propagation %v, want HostToContainer", m.MountPropagation)
		}
		if m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional {
			t.Errorf("mount %s is Bidirectional", m.Name)
		}
	}
	if want := map[string]string{volBPFFS: "/sys/fs/bpf", volCNIBin: "/host/opt/cni/bin", volCNIConf: "/host/etc/cni/net.d", volRun: "/var/run/weft"}; !reflect.DeepEqual(mounts, want) {
		t.Errorf("mounts %v, want %v", mounts, want)
	}
	host := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath == nil {
			t.Errorf("volume %s is not a hostPath", v.Name)
			continue
		}
		host[v.Name] = v.HostPath.Path
	}
	if want := map[string]string{volBPFFS: "/sys/fs/bpf", volCNIBin: "/usr/libexec/cni", volCNIConf: "/etc/cni/custom", volRun: "/var/run/weft"}; !reflect.DeepEqual(host, want) {
		t.Errorf("host paths %v, want %v", host, want)
	}
}

func TestEmbeddedChartsAndSchemas(t *testing.T) {
	for _, r := range Releases("weft-system") {
		c, err := LoadChart(charts.FS, r.Chart)
		if err != nil {
			t.Fatal(err)
		}
		if c.Name() != r.Name {
			t.Errorf("chart %s is named %s, want %s", r.Chart, c.Name(), r.Name)
		}
		if !slices.ContainsFunc(c.Templates, func(f *common.File) bool { return strings.HasSuffix(f.Name, "_helpers.tpl") }) && r.Component != Base {
			t.Errorf("chart %s lacks its _helpers.tpl (embed without all:?)", r.Chart)
		}
		if err := Validate(c, nil); err != nil {
			t.Errorf("chart %s defaults: %v", r.Chart, err)
		}
	}
	c, err := LoadChart(charts.FS, "control")
	if err != nil {
		t.Fatal(err)
	}
	err = Validate(c, map[string]any{"replicaCount": "two"})
	if err == nil || !strings.Contains(err.Error(), "replicaCount") || !strings.Contains(err.Error(), "values.schema.json") {
		t.Errorf("replicaCount=two: %v, want a schema error naming the field", err)
	}
	if _, err := LoadChart(charts.FS, "nope"); err == nil {
		t.Error("a missing chart must fail")
	}
}

func TestRolloutProgress(t *testing.T) {
	d := &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2)}}
	d.Name, d.Generation = "weft-control", 3
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: 3, Replicas: 3, UpdatedReplicas: 2, AvailableReplicas: 2}
	if msg, ok := DeploymentProgress(d); ok || msg != "deployment weft-control: 2/2 updated, 2 available, 3 total" {
		t.Errorf("old replica still there: %q %v", msg, ok)
	}
	d.Status.Replicas = 2
	if _, ok := DeploymentProgress(d); !ok {
		t.Error("rolled out deployment not done")
	}
	d.Generation = 4
	if _, ok := DeploymentProgress(d); ok {
		t.Error("unobserved generation counted as done")
	}
	ds := &appsv1.DaemonSet{}
	ds.Name, ds.Generation = "weft-node-agent", 2
	ds.Status = appsv1.DaemonSetStatus{ObservedGeneration: 2, DesiredNumberScheduled: 2, UpdatedNumberScheduled: 2, NumberAvailable: 1}
	if msg, ok := DaemonSetProgress(ds); ok || msg != "daemonset weft-node-agent: 2/2 updated, 1 available" {
		t.Errorf("%q %v", msg, ok)
	}
	ds.Status.NumberAvailable = 2
	if _, ok := DaemonSetProgress(ds); !ok {
		t.Errorf("rolled out daemonset not done: %+v", ds.Status)
	}
}
