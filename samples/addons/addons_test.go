// Package addons_test checks the addon manifests against the Kubernetes API
// types, the Prometheus scrape semantics Istio's addon has and the ports
// Istio's Jaeger addon serves.
package addons_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// prometheusAddon is samples/addons/prometheus.yaml, decoded strictly.
type prometheusAddon struct {
	namespaces     []*corev1.Namespace
	serviceAccount *corev1.ServiceAccount
	configMap      *corev1.ConfigMap
	clusterRole    *rbacv1.ClusterRole
	binding        *rbacv1.ClusterRoleBinding
	service        *corev1.Service
	deployment     *appsv1.Deployment
}

// decode reads an addon manifest and decodes each document strictly into
// its Kubernetes API type.
func decode(t *testing.T, file string) []any {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]func() any{
		"v1/Namespace":       func() any { return &corev1.Namespace{} },
		"v1/ServiceAccount":  func() any { return &corev1.ServiceAccount{} },
		"v1/ConfigMap":       func() any { return &corev1.ConfigMap{} },
		"v1/Service":         func() any { return &corev1.Service{} },
		"apps/v1/Deployment": func() any { return &appsv1.Deployment{} },
		"rbac.authorization.k8s.io/v1/ClusterRole":        func() any { return &rbacv1.ClusterRole{} },
		"rbac.authorization.k8s.io/v1/ClusterRoleBinding": func() any { return &rbacv1.ClusterRoleBinding{} },
	}
	var objs []any
	for i, doc := range docSeparator.Split(string(data), -1) {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("%s document %d: %v", file, i, err)
		}
		newObj, ok := types[head.APIVersion+"/"+head.Kind]
		if !ok {
			t.Fatalf("%s document %d: unexpected %s %s", file, i, head.APIVersion, head.Kind)
		}
		obj := newObj()
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("%s document %d (%s): %v", file, i, head.Kind, err)
		}
		objs = append(objs, obj)
	}
	return objs
}

func decodePrometheus(t *testing.T) prometheusAddon {
	t.Helper()
	var a prometheusAddon
	for _, obj := range decode(t, "prometheus.yaml") {
		switch o := obj.(type) {
		case *corev1.Namespace:
			a.namespaces = append(a.namespaces, o)
		case *corev1.ServiceAccount:
			a.serviceAccount = o
		case *corev1.ConfigMap:
			a.configMap = o
		case *rbacv1.ClusterRole:
			a.clusterRole = o
		case *rbacv1.ClusterRoleBinding:
			a.binding = o
		case *corev1.Service:
			a.service = o
		case *appsv1.Deployment:
			a.deployment = o
		}
	}
	if a.serviceAccount == nil || a.configMap == nil || a.clusterRole == nil || a.binding == nil || a.service == nil || a.deployment == nil {
		t.Fatalf("prometheus.yaml lacks an object: %+v", a)
	}
	return a
}

// TestPrometheusAddonObjects: Istio's names and namespace (the tutorials
// query svc/prometheus in istio-system), wired together.
func TestPrometheusAddonObjects(t *testing.T) {
	a := decodePrometheus(t)
	const ns = "istio-system"
	if len(a.namespaces) != 1 || a.namespaces[0].Name != ns {
		t.Errorf("namespaces %v, want the manifest to create %s", a.namespaces, ns)
	}
	for what, m := range map[string]string{"ServiceAccount": a.serviceAccount.Namespace, "ConfigMap": a.configMap.Namespace,
		"Service": a.service.Namespace, "Deployment": a.deployment.Namespace} {
		if m != ns {
			t.Errorf("%s in namespace %q, want %s", what, m, ns)
		}
	}
	if s := a.binding.Subjects; len(s) != 1 || s[0].Kind != "ServiceAccount" || s[0].Name != a.serviceAccount.Name || s[0].Namespace != ns ||
		a.binding.RoleRef.Name != a.clusterRole.Name {
		t.Errorf("ClusterRoleBinding %+v does not bind the ClusterRole to the ServiceAccount", a.binding)
	}
	var resources []string
	for _, r := range a.clusterRole.Rules {
		if slices.Contains(r.APIGroups, "") && slices.Equal(r.Verbs, []string{"get", "list", "watch"}) {
			resources = append(resources, r.Resources...)
		}
	}
	for _, want := range []string{"nodes", "nodes/metrics", "services", "endpoints", "pods"} {
		if !slices.Contains(resources, want) {
			t.Errorf("ClusterRole cannot get/list/watch %s", want)
		}
	}

	pod := a.deployment.Spec.Template
	for k, v := range a.service.Spec.Selector {
		if pod.Labels[k] != v {
			t.Errorf("Service selector %v does not select the pod %v", a.service.Spec.Selector, pod.Labels)
		}
	}
	if a.service.Name != "prometheus" || len(a.service.Spec.Ports) != 1 || a.service.Spec.Ports[0].Port != 9090 {
		t.Errorf("Service %s ports %+v, want prometheus:9090", a.service.Name, a.service.Spec.Ports)
	}
	if pod.Spec.ServiceAccountName != a.serviceAccount.Name || len(pod.Spec.Containers) != 1 {
		t.Fatalf("pod runs as %q with %d containers, want %s and one", pod.Spec.ServiceAccountName, len(pod.Spec.Containers), a.serviceAccount.Name)
	}
	c := pod.Spec.Containers[0]
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	for _, arg := range c.Args {
		name, value, _ := strings.Cut(arg, "=")
		switch name {
		case "--config.file":
			v := volumes["config-volume"]
			if v.ConfigMap == nil || v.ConfigMap.Name != a.configMap.Name || value != mounts["config-volume"]+"/prometheus.yml" {
				t.Errorf("%s is not the ConfigMap's prometheus.yml (mounts %v)", arg, mounts)
			}
		case "--storage.tsdb.path":
			if v := volumes["storage-volume"]; v.EmptyDir == nil || value != mounts["storage-volume"] {
				t.Errorf("%s is not the emptyDir (mounts %v)", arg, mounts)
			}
		case "--web.listen-address":
			if value != ":9090" {
				t.Errorf("%s, want :9090", arg)
			}
		}
	}
}

// scrapeConfig is the part of prometheus.yml the test reads.
type scrapeConfig struct {
	ScrapeConfigs []struct {
		JobName       string                  `json:"job_name"`
		HonorLabels   bool                    `json:"honor_labels"`
		KubernetesSD  []struct{ Role string } `json:"kubernetes_sd_configs"`
		RelabelConfig []struct {
			Action       string   `json:"action"`
			Regex        string   `json:"regex"`
			SourceLabels []string `json:"source_labels"`
			TargetLabel  string   `json:"target_label"`
			Replacement  string   `json:"replacement"`
		} `json:"relabel_configs"`
	} `json:"scrape_configs"`
}

// TestPrometheusAddonScrapesAnnotatedPods: Istio's kubernetes-pods job,
// which finds Weft's node agents, weft-control, waypoints and gateways by
// their prometheus.io annotations.
func TestPrometheusAddonScrapesAnnotatedPods(t *testing.T) {
	var cfg scrapeConfig
	if err := yaml.Unmarshal([]byte(decodePrometheus(t).configMap.Data["prometheus.yml"]), &cfg); err != nil {
		t.Fatal(err)
	}
	for _, job := range cfg.ScrapeConfigs {
		if job.JobName != "kubernetes-pods" {
			continue
		}
		if len(job.KubernetesSD) != 1 || job.KubernetesSD[0].Role != "pod" || !job.HonorLabels {
			t.Errorf("kubernetes-pods: service discovery %+v, honor_labels %v; want role pod, honoring labels", job.KubernetesSD, job.HonorLabels)
		}
		got := map[string]bool{}
		for _, r := range job.RelabelConfig {
			got[r.Action+" "+strings.Join(r.SourceLabels, ",")+" -> "+r.TargetLabel] = true
		}
		for _, want := range []string{
			"keep __meta_kubernetes_pod_annotation_prometheus_io_scrape -> ",
			"replace __meta_kubernetes_pod_annotation_prometheus_io_scheme -> __scheme__",
			"replace __meta_kubernetes_pod_annotation_prometheus_io_path -> __metrics_path__",
			"replace __meta_kubernetes_pod_annotation_prometheus_io_port,__meta_kubernetes_pod_ip -> __address__",
			"labelmap  -> ", // pod labels
			"replace __meta_kubernetes_namespace -> namespace",
			"replace __meta_kubernetes_pod_name -> pod",
		} {
			if !got[want] {
				t.Errorf("kubernetes-pods has no relabelling %q", want)
			}
		}
		return
	}
	t.Error("prometheus.yml has no kubernetes-pods job")
}
