// Package samples_test checks the sample manifests against the Kubernetes API
// types and Weft's image map.
package samples_test

import (
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/samples/bookinfo/app"
)

const (
	bookinfoYAML = "bookinfo/platform/kube/bookinfo.yaml"
	curlYAML     = "curl/curl.yaml"
	imagesYAML   = "bookinfo/images.yaml"
)

// objects holds a manifest's documents, decoded strictly into typed objects.
type objects struct {
	services        map[string]*corev1.Service
	serviceAccounts map[string]*corev1.ServiceAccount
	deployments     map[string]*appsv1.Deployment
}

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

func decodeManifest(t *testing.T, file string) objects {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	objs := objects{map[string]*corev1.Service{}, map[string]*corev1.ServiceAccount{}, map[string]*appsv1.Deployment{}}
	for i, doc := range docSeparator.Split(string(data), -1) {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("%s document %d: %v", file, i, err)
		}
		var obj interface{ GetName() string }
		switch head.APIVersion + "/" + head.Kind {
		case "/": // comments only, e.g. after the trailing ---
			continue
		case "v1/Service":
			obj = &corev1.Service{}
		case "v1/ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "apps/v1/Deployment":
			obj = &appsv1.Deployment{}
		default:
			t.Fatalf("%s document %d: unexpected %s %s", file, i, head.APIVersion, head.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("%s document %d (%s): %v", file, i, head.Kind, err)
		}
		name := obj.GetName()
		switch o := obj.(type) {
		case *corev1.Service:
			objs.services[name] = o
		case *corev1.ServiceAccount:
			objs.serviceAccounts[name] = o
		case *appsv1.Deployment:
			objs.deployments[name] = o
		}
	}
	return objs
}

func assertLabels(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s labels = %v, want %v", what, got, want)
		return
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s labels = %v, want %v", what, got, want)
			return
		}
	}
}

func TestBookinfoManifest(t *testing.T) {
	objs := decodeManifest(t, bookinfoYAML)
	services := []string{"details", "ratings", "reviews", "productpage"}
	if len(objs.services) != len(services) || len(objs.serviceAccounts) != len(services) {
		t.Errorf("got %d services and %d service accounts, want %d each", len(objs.services), len(objs.serviceAccounts), len(services))
	}
	for _, name := range services {
		svc := objs.services[name]
		if svc == nil {
			t.Errorf("no Service %s", name)
			continue
		}
		assertLabels(t, "Service "+name, svc.Labels, map[string]string{"app": name, "service": name})
		assertLabels(t, "Service "+name+" selector", svc.Spec.Selector, map[string]string{"app": name})
		if p := svc.Spec.Ports; len(p) != 1 || p[0].Port != 9080 || p[0].Name != "http" {
			t.Errorf("Service %s ports = %+v, want 9080 named http", name, p)
		}
		sa := objs.serviceAccounts["bookinfo-"+name]
		if sa == nil {
			t.Errorf("no ServiceAccount bookinfo-%s", name)
			continue
		}
		assertLabels(t, "ServiceAccount "+sa.Name, sa.Labels, map[string]string{"account": name})
	}

	deployments := []struct{ app, version string }{
		{"details", "v1"}, {"ratings", "v1"}, {"reviews", "v1"}, {"reviews", "v2"}, {"reviews", "v3"}, {"productpage", "v1"},
	}
	if len(objs.deployments) != len(deployments) {
		t.Errorf("got %d deployments, want %d", len(objs.deployments), len(deployments))
	}
	for _, d := range deployments {
		name := d.app + "-" + d.version
		dep := objs.deployments[name]
		if dep == nil {
			t.Errorf("no Deployment %s", name)
			continue
		}
		labels := map[string]string{"app": d.app, "version": d.version}
		assertLabels(t, name, dep.Labels, labels)
		assertLabels(t, name+" selector", dep.Spec.Selector.MatchLabels, labels)
		assertLabels(t, name+" pod", dep.Spec.Template.Labels, labels)
		pod := dep.Spec.Template.Spec
		if pod.ServiceAccountName != "bookinfo-"+d.app {
			t.Errorf("%s serviceAccountName = %q", name, pod.ServiceAccountName)
		}
		if len(pod.Containers) != 1 {
			t.Fatalf("%s has %d containers", name, len(pod.Containers))
		}
		c := pod.Containers[0]
		if want := "docker.io/istio/examples-bookinfo-" + name + ":1.20.3"; c.Image != want {
			t.Errorf("%s image = %q, want %q", name, c.Image, want)
		}
		if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 9080 {
			t.Errorf("%s ports = %+v, want containerPort 9080", name, c.Ports)
		}
		if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/health" || p.HTTPGet.Port.IntValue() != 9080 {
			t.Errorf("%s readinessProbe = %+v, want GET /health on 9080", name, p)
		}
	}
}

func TestCurlManifest(t *testing.T) {
	objs := decodeManifest(t, curlYAML)
	if objs.serviceAccounts["curl"] == nil {
		t.Error("no ServiceAccount curl")
	}
	svc := objs.services["curl"]
	if svc == nil || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 80 || svc.Spec.Selector["app"] != "curl" {
		t.Errorf("Service curl = %+v, want port 80 selecting app=curl", svc)
	}
	dep := objs.deployments["curl"]
	if dep == nil {
		t.Fatal("no Deployment curl")
	}
	pod := dep.Spec.Template.Spec
	if pod.ServiceAccountName != "curl" || dep.Spec.Template.Labels["app"] != "curl" || len(pod.Containers) != 1 {
		t.Fatalf("Deployment curl pod = %+v", pod)
	}
	c := pod.Containers[0]
	if c.Image != "curlimages/curl" || !slices.Equal(c.Command, []string{"/bin/sleep", "infinity"}) {
		t.Errorf("curl container image %q command %q", c.Image, c.Command)
	}
}

type imageEntry struct {
	Image      string   `json:"image"`
	Entrypoint []string `json:"entrypoint"`
	Cmd        []string `json:"cmd"`
}

// imageKey normalises a reference the way the kubelet's image map matches it:
// without tag or digest, and without the optional docker.io/ and library/.
func imageKey(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	ref = strings.TrimPrefix(ref, "docker.io/")
	return strings.TrimPrefix(ref, "library/")
}

func TestImageMap(t *testing.T) {
	data, err := os.ReadFile(imagesYAML)
	if err != nil {
		t.Fatal(err)
	}
	var imageMap struct {
		Images []imageEntry `json:"images"`
	}
	if err := yaml.UnmarshalStrict(data, &imageMap); err != nil {
		t.Fatalf("%s: %v", imagesYAML, err)
	}
	entries := map[string]imageEntry{}
	for _, e := range imageMap.Images {
		if strings.Contains(e.Image, "@") || strings.Contains(path.Base(e.Image), ":") {
			t.Errorf("image map entry %q carries a tag or digest", e.Image)
		}
		if _, dup := entries[imageKey(e.Image)]; dup {
			t.Errorf("duplicate image map entry %q", e.Image)
		}
		entries[imageKey(e.Image)] = e
	}

	for _, file := range []string{bookinfoYAML, curlYAML} {
		for name, dep := range decodeManifest(t, file).deployments {
			for _, c := range dep.Spec.Template.Spec.Containers {
				e, ok := entries[imageKey(c.Image)]
				if !ok {
					t.Errorf("%s: %s image %q has no entry in %s", file, name, c.Image, imagesYAML)
					continue
				}
				if len(c.Command) == 0 && len(e.Entrypoint) == 0 {
					t.Errorf("%s: %s has neither command nor entrypoint", file, name)
				}
				if !slices.Equal(e.Entrypoint, []string{"${BIN}/bookinfo"}) {
					continue
				}
				// A bookinfo entry must start the service and version the Deployment is named after.
				cfg, err := app.ParseConfig(e.Cmd, func(string) string { return "" })
				if err != nil {
					t.Errorf("%s cmd %q: %v", e.Image, e.Cmd, err)
					continue
				}
				svc, version := dep.Labels["app"], dep.Labels["version"]
				if cfg.Service != svc || cfg.Version != version || cfg.Port != 9080 {
					t.Errorf("%s runs %s %s on %d, want %s %s on 9080", e.Image, cfg.Service, cfg.Version, cfg.Port, svc, version)
				}
				if path.Base(imageKey(c.Image)) != "examples-bookinfo-"+svc+"-"+version {
					t.Errorf("%s: image %q does not match app %s version %s", name, c.Image, svc, version)
				}
			}
		}
	}
}
