package cluster

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"

	"sigs.k8s.io/gateway-api/conformance"

	"github.com/weft-mesh/weft/e2e/kubelet"
)

// TestAddonsImageMapRunsPrometheusAddon: the image of
// samples/addons/prometheus.yaml resolves, through the cluster's addons
// image map, to the Prometheus that hack/kube-assets.sh builds, and its tag
// is that build's version (module v0.3MM.P is Prometheus 3.MM.P).
func TestAddonsImageMapRunsPrometheusAddon(t *testing.T) {
	root := filepath.Join("..", "..")
	manifest, err := os.ReadFile(filepath.Join(root, "samples/addons/prometheus.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s+image: "?([^":\s]+):(v[0-9.]+)"?$`).FindSubmatch(manifest)
	if m == nil {
		t.Fatal("no image in samples/addons/prometheus.yaml")
	}
	image, tag := string(m[1]), string(m[2])
	gomod, err := os.ReadFile(filepath.Join(root, "hack/tools/prometheus/go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	v := regexp.MustCompile(`github.com/prometheus/prometheus v0\.3([0-9]{2})\.([0-9]+)`).FindSubmatch(gomod)
	if v == nil {
		t.Fatal("hack/tools/prometheus/go.mod pins no github.com/prometheus/prometheus v0.3MM.P")
	}
	minor, _ := strconv.Atoi(string(v[1]))
	if want := "v3." + strconv.Itoa(minor) + "." + string(v[2]); tag != want {
		t.Errorf("addon image tag %s, but hack/tools/prometheus builds %s", tag, want)
	}

	assets, im := addonsImages(t, "coredns", "prometheus")
	r, err := im.Resolve(image+":"+tag, nil, []string{"--config.file=/etc/config/prometheus.yml"})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(assets, "prometheus"); r.Argv[0] != want {
		t.Errorf("%s runs %v, want %s", image, r.Argv, want)
	}
}

// TestAddonsImageMapRunsJaegerAddon: the image of
// samples/addons/jaeger.yaml resolves to the jaeger binary that
// hack/kube-assets.sh builds (which also checks the tag against the
// version it builds), with the manifest's arguments.
func TestAddonsImageMapRunsJaegerAddon(t *testing.T) {
	manifest, err := os.ReadFile(filepath.Join("..", "..", "samples/addons/jaeger.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s+image: "([^"]+)"$`).FindSubmatch(manifest)
	if m == nil {
		t.Fatal("no image in samples/addons/jaeger.yaml")
	}
	assets, im := addonsImages(t, "coredns", "jaeger")
	args := []string{"--config", "/jaeger-configuration/config.yaml"}
	r, err := im.Resolve(string(m[1]), nil, args)
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]string{filepath.Join(assets, "jaeger")}, args...); !slices.Equal(r.Argv, want) {
		t.Errorf("%s runs %v, want %v", m[1], r.Argv, want)
	}
}

// TestAddonsImageMapRunsIstioSamples: the images of Istio's ext-authz and
// httpbin samples (samples/extauthz, samples/httpbin, Istio's manifests)
// resolve to the binaries hack/kube-assets.sh builds from hack/tools/testapps.
func TestAddonsImageMapRunsIstioSamples(t *testing.T) {
	root := filepath.Join("..", "..")
	assets, im := addonsImages(t, "extauthz", "go-httpbin")
	for manifest, binary := range map[string]string{
		"samples/extauthz/ext-authz.yaml": "extauthz",
		"samples/httpbin/httpbin.yaml":    "go-httpbin",
	} {
		data, err := os.ReadFile(filepath.Join(root, manifest))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^\s+- image: (\S+)$`).FindSubmatch(data)
		if m == nil {
			t.Fatalf("no image in %s", manifest)
		}
		r, err := im.Resolve(string(m[1]), nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", manifest, err)
		}
		if want := filepath.Join(assets, binary); r.Argv[0] != want {
			t.Errorf("%s runs %v, want %s", m[1], r.Argv, want)
		}
	}
}

// addonsImages is the addons image map over an assets directory holding
// (empty) binaries of the given names.
func addonsImages(t *testing.T, binaries ...string) (string, *kubelet.ImageMap) {
	t.Helper()
	assets := t.TempDir()
	for _, b := range binaries {
		if err := os.WriteFile(filepath.Join(assets, b), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mapFile := filepath.Join(t.TempDir(), "addons-images.yaml")
	if err := os.WriteFile(mapFile, addonsImageMap(assets), 0o644); err != nil {
		t.Fatal(err)
	}
	im, err := kubelet.LoadImageMaps([]string{mapFile}, "")
	if err != nil {
		t.Fatal(err)
	}
	return assets, im
}

// TestAddonsImageMapRunsMeshEcho: the echo app of the Gateway API
// conformance suite's mesh manifests (Istio's app image) runs Istio's echo
// server with the args the manifests give it, and has the client the mesh
// tests exec in PATH and the certificate those args name at the paths
// Istio's image has them.
func TestAddonsImageMapRunsMeshEcho(t *testing.T) {
	data, err := fs.ReadFile(conformance.Manifests, "mesh/manifests.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s+image: (\S+)$`).FindSubmatch(data)
	if m == nil {
		t.Fatal("no image in the conformance suite's mesh/manifests.yaml")
	}
	files := []string{"echo-server", "echo-client", "echo-advanced-cert.crt", "echo-advanced-cert.key"}
	assets, im := addonsImages(t, files...)
	args := []string{"--port=8443", "--tls=8443", "--crt=/cert.crt", "--key=/cert.key"}
	r, err := im.Resolve(string(m[1]), nil, args)
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]string{filepath.Join(assets, "echo-server")}, args...); !slices.Equal(r.Argv, want) {
		t.Errorf("%s runs %v, want %v", m[1], r.Argv, want)
	}
	want := []kubelet.ImageFile{
		{Path: "/usr/local/bin/client", Source: filepath.Join(assets, "echo-client")},
		{Path: "/cert.crt", Source: filepath.Join(assets, "echo-advanced-cert.crt")},
		{Path: "/cert.key", Source: filepath.Join(assets, "echo-advanced-cert.key")},
	}
	if !slices.Equal(r.Files, want) {
		t.Errorf("%s has files %v, want %v", m[1], r.Files, want)
	}
}
