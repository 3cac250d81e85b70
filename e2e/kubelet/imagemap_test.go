package kubelet

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func writeImageMap(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNormalizeRepo(t *testing.T) {
	for in, want := range map[string]string{
		"docker.io/istio/examples-bookinfo-reviews-v2:1.20.3": "istio/examples-bookinfo-reviews-v2",
		"istio/examples-bookinfo-reviews-v2":                  "istio/examples-bookinfo-reviews-v2",
		"docker.io/library/busybox:1.36":                      "busybox",
		"library/busybox":                                     "busybox",
		"busybox@sha256:abcd":                                 "busybox",
		"busybox:1.2@sha256:abcd":                             "busybox",
		"localhost:5000/weft/agent:dev":                       "localhost:5000/weft/agent",
		"ghcr.io/weft-mesh/weft-agent":                        "ghcr.io/weft-mesh/weft-agent",
	} {
		if got := normalizeRepo(in); got != want {
			t.Errorf("normalizeRepo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestImageMapResolve(t *testing.T) {
	dir := t.TempDir()
	binDir := filepath.Join(dir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	bookinfo := filepath.Join(binDir, "bookinfo")
	if err := os.WriteFile(bookinfo, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	f1 := writeImageMap(t, dir, "a.yaml", `
images:
- image: docker.io/istio/examples-bookinfo-reviews-v2
  entrypoint: ["${BIN}/bookinfo"]
  cmd: ["--service=reviews", "--version=v2"]
  env: ["FOO=bar", "BIN=${BIN}"]
- image: busybox
  cmd: ["sh"]
- image: weft/missing
  entrypoint: ["${BIN}/not-built"]
`)
	f2 := writeImageMap(t, dir, "b.yaml", `
images:
- image: docker.io/library/busybox:latest
  entrypoint: ["/bin/sh", "-c"]
  cmd: ["echo override"]
`)
	m, err := LoadImageMaps([]string{f1, f2}, binDir)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		image         string
		command, args []string
		want          []string
		wantBinaries  []string
	}{
		{"image defaults", "istio/examples-bookinfo-reviews-v2:1.2", nil, nil,
			[]string{bookinfo, "--service=reviews", "--version=v2"}, []string{bookinfo}},
		{"args replace cmd", "docker.io/istio/examples-bookinfo-reviews-v2", nil, []string{"--service=x"},
			[]string{bookinfo, "--service=x"}, []string{bookinfo}},
		{"command drops cmd", "istio/examples-bookinfo-reviews-v2", []string{"sleep", "1"}, nil,
			[]string{"sleep", "1"}, nil},
		{"command and args", "istio/examples-bookinfo-reviews-v2", []string{"sh", "-c"}, []string{"echo hi"},
			[]string{"sh", "-c", "echo hi"}, nil},
		{"later file wins", "busybox", nil, nil, []string{"/bin/sh", "-c", "echo override"}, []string{"/bin/sh"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := m.Resolve(tt.image, tt.command, tt.args)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(r.Argv, tt.want) {
				t.Errorf("argv = %q, want %q", r.Argv, tt.want)
			}
			if !reflect.DeepEqual(r.Binaries, tt.wantBinaries) {
				t.Errorf("binaries = %q, want %q", r.Binaries, tt.wantBinaries)
			}
		})
	}
	r, _ := m.Resolve("istio/examples-bookinfo-reviews-v2", nil, nil)
	if !reflect.DeepEqual(r.Env, []string{"FOO=bar", "BIN=" + binDir}) {
		t.Errorf("env = %q", r.Env)
	}

	_, err = m.Resolve("nginx:1.25", nil, nil)
	var nf *ImageNotFoundError
	if !errors.As(err, &nf) {
		t.Fatalf("unknown image: got %v", err)
	}
	for _, want := range []string{`image "nginx:1.25" is not in the image map`, f1, f2, "known images: busybox, istio/examples-bookinfo-reviews-v2, weft/missing"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}

	_, err = m.Resolve("weft/missing:dev", nil, nil)
	var bm *BinaryMissingError
	if !errors.As(err, &bm) || !strings.Contains(err.Error(), filepath.Join(binDir, "not-built")) || !strings.Contains(err.Error(), "make build") {
		t.Fatalf("missing binary: got %v", err)
	}
	// A pod command bypasses the image entrypoint, built or not.
	if _, err := m.Resolve("weft/missing", []string{"sleep"}, nil); err != nil {
		t.Errorf("command override of an unbuilt image: %v", err)
	}
}

func TestImageMapErrors(t *testing.T) {
	dir := t.TempDir()
	bad := writeImageMap(t, dir, "bad.yaml", "images:\n- image: x\n  entrypont: [a]\n")
	if _, err := LoadImageMaps([]string{bad}, ""); err == nil || !strings.Contains(err.Error(), "bad.yaml") {
		t.Errorf("unknown field: got %v", err)
	}
	noBin := writeImageMap(t, dir, "nobin.yaml", "images:\n- image: x\n  entrypoint: [\"${BIN}/x\"]\n")
	m, err := LoadImageMaps([]string{noBin}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Resolve("x", nil, nil); err == nil || !strings.Contains(err.Error(), "WEFT_BIN_DIR") {
		t.Errorf("${BIN} without bin dir: got %v", err)
	}
	if _, err := LoadImageMaps([]string{filepath.Join(dir, "absent.yaml")}, ""); err == nil {
		t.Error("missing file: no error")
	}
}

func TestImageMapBinaries(t *testing.T) {
	dir := t.TempDir()
	binDir := filepath.Join(dir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	agent, cni := filepath.Join(binDir, "weft-node-agent"), filepath.Join(binDir, "weft-cni")
	for _, p := range []string{agent, cni} {
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f := writeImageMap(t, dir, "a.yaml", `
images:
- image: ghcr.io/weft-mesh/node-agent
  entrypoint: ["${BIN}/weft-node-agent"]
  binaries: ["${BIN}/weft-cni", "${BIN}/weft-node-agent"]
- image: weft/cni-missing
  entrypoint: ["${BIN}/weft-node-agent"]
  binaries: ["${BIN}/weft-cni-not-built"]
- image: weft/relative
  binaries: ["weft-cni"]
  cmd: ["sh"]
`)
	m, err := LoadImageMaps([]string{f}, binDir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := m.Resolve("ghcr.io/weft-mesh/node-agent:v1", nil, []string{"--v=2"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r.Argv, []string{agent, "--v=2"}) {
		t.Errorf("argv = %q", r.Argv)
	}
	// The entrypoint first, then the extra binaries, each once.
	if want := []string{agent, cni}; !reflect.DeepEqual(r.Binaries, want) {
		t.Errorf("binaries = %q, want %q", r.Binaries, want)
	}
	// A command override still runs in the image: its files are bound.
	r, err = m.Resolve("ghcr.io/weft-mesh/node-agent", []string{"sleep", "1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{cni, agent}; !reflect.DeepEqual(r.Binaries, want) {
		t.Errorf("binaries with a command = %q, want %q", r.Binaries, want)
	}

	for _, cmd := range [][]string{nil, {"sleep", "1"}} {
		_, err = m.Resolve("weft/cni-missing", cmd, nil)
		var bm *BinaryMissingError
		if !errors.As(err, &bm) || bm.Path != filepath.Join(binDir, "weft-cni-not-built") || !strings.Contains(err.Error(), "make build") {
			t.Errorf("missing extra binary (command %q): got %v", cmd, err)
		}
	}
	if _, err := m.Resolve("weft/relative", nil, nil); err == nil || !strings.Contains(err.Error(), "not an absolute path") {
		t.Errorf("relative binaries entry: got %v", err)
	}

	noBin := writeImageMap(t, dir, "nobin.yaml", "images:\n- image: x\n  cmd: [sh]\n  binaries: [\"${BIN}/x\"]\n")
	m, err = LoadImageMaps([]string{noBin}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Resolve("x", nil, nil); err == nil || !strings.Contains(err.Error(), "WEFT_BIN_DIR") {
		t.Errorf("${BIN} in binaries without bin dir: got %v", err)
	}
}

// TestImageMapFiles: an image's files are bound at their path in the
// container (not the host's), and must exist like its binaries.
func TestImageMapFiles(t *testing.T) {
	dir := t.TempDir()
	server, client := filepath.Join(dir, "echo-server"), filepath.Join(dir, "echo-client")
	for _, p := range []string{server, client} {
		if err := os.WriteFile(p, nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f := writeImageMap(t, dir, "a.yaml", `
images:
- image: echo
  entrypoint: ["${BIN}/echo-server"]
  files: [{path: /usr/local/bin/client, source: "${BIN}/echo-client"}]
- image: echo-missing
  entrypoint: ["${BIN}/echo-server"]
  files: [{path: /cert.crt, source: "${BIN}/cert-not-built"}]
- image: echo-relative
  entrypoint: ["${BIN}/echo-server"]
  files: [{path: cert.crt, source: "${BIN}/echo-client"}]
`)
	m, err := LoadImageMaps([]string{f}, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{nil, {"sleep", "1"}} {
		r, err := m.Resolve("echo", cmd, nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := []ImageFile{{Path: "/usr/local/bin/client", Source: client}}; !reflect.DeepEqual(r.Files, want) {
			t.Errorf("files (command %q) = %v, want %v", cmd, r.Files, want)
		}
	}
	var bm *BinaryMissingError
	if _, err := m.Resolve("echo-missing", nil, nil); !errors.As(err, &bm) || bm.Path != filepath.Join(dir, "cert-not-built") {
		t.Errorf("missing file: got %v", err)
	}
	if _, err := m.Resolve("echo-relative", nil, nil); err == nil || !strings.Contains(err.Error(), "not an absolute path") {
		t.Errorf("relative files path: got %v", err)
	}
}

// TestLocalImageMap checks that hack/local-images.yaml parses.
func TestLocalImageMap(t *testing.T) {
	m, err := LoadImageMaps([]string{"../../hack/local-images.yaml"}, "/nonexistent-bin")
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Resolve("ghcr.io/weft-mesh/node-agent:dev", nil, nil)
	var bm *BinaryMissingError
	if !errors.As(err, &bm) || !strings.HasPrefix(bm.Path, "/nonexistent-bin/") {
		t.Errorf("node-agent image: got %v, want a missing binary under the bin dir", err)
	}
}
