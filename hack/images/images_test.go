package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// TestImages builds the binaries, builds the images twice from them and reads
// the results back: docker archives, OCI layouts, configs, layer contents,
// references against the charts, and identical digests both times.
//
// It builds linux/amd64 (warm in the build cache after `make build`);
// WEFT_IMAGES_PLATFORMS=linux/amd64,linux/arm64 adds a cross-compiled arm64
// (as `make images` does) at the cost of a cold arm64 build.
func TestImages(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	spec := os.Getenv("WEFT_IMAGES_PLATFORMS")
	if spec == "" {
		spec = "linux/amd64"
	}
	plats, err := ParsePlatforms(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("platforms: %s", spec)

	tmp := t.TempDir()
	bins := map[string]string{}
	for _, p := range plats {
		dir := filepath.Join(tmp, "bin", p.OS+"_"+p.Arch)
		if err := BuildBinaries(root, dir, p); err != nil {
			t.Fatal(err)
		}
		bins[p.String()] = dir
	}
	chart, err := ReadChart(root, "control")
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	opts := func(out string) Options {
		if err := os.MkdirAll(out, 0o755); err != nil {
			t.Fatal(err)
		}
		return Options{
			Root: root, Out: out, BinDirs: bins, Platforms: plats,
			Hub: chart.Hub, Tag: chart.AppVersion,
			Revision: "0123456789abcdef0123456789abcdef01234567", Created: created,
		}
	}
	first, err := Build(opts(filepath.Join(tmp, "a")))
	if err != nil {
		t.Fatal(err)
	}
	second, err := Build(opts(filepath.Join(tmp, "b")))
	if err != nil {
		t.Fatal(err)
	}

	want := chartRefs(t, root)
	if len(first) != len(want) {
		t.Fatalf("built %d images, the charts reference %d", len(first), len(want))
	}
	for i, r := range first {
		c := r.Component
		t.Run(c.Name, func(t *testing.T) {
			if got := r.Ref.String(); got != want[c.Name] {
				t.Errorf("reference %s, the chart's is %s", got, want[c.Name])
			}
			// Reproducible: same digests, byte-identical archives.
			s := second[i]
			if s.Index != r.Index || !slices.Equal(s.Images, r.Images) {
				t.Errorf("two builds differ: index %s vs %s, images %v vs %v", r.Index, s.Index, r.Images, s.Images)
			}
			for j := range r.Tarballs {
				if a, b := fileSum(t, r.Tarballs[j]), fileSum(t, s.Tarballs[j]); a != b {
					t.Errorf("%s: two builds give different archives", filepath.Base(r.Tarballs[j]))
				}
			}
			configs := checkLayout(t, r, plats)
			for j, p := range plats {
				t.Run(p.Arch, func(t *testing.T) {
					checkTarball(t, r, j, p, bins[p.String()], created, configs[j])
				})
			}
		})
	}
}

// chartRefs are the image references the charts render with their defaults:
// <image.hub>/<component>:<appVersion>, the waypoint's from weft-control.
func chartRefs(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, x := range []struct{ chart, component string }{
		{"control", "control"}, {"node-agent", "node-agent"}, {"control", "waypoint"},
	} {
		c, err := ReadChart(root, x.chart)
		if err != nil {
			t.Fatal(err)
		}
		// The helpers must spell the component as the image names it.
		tpl, err := os.ReadFile(filepath.Join(root, "charts", x.chart, "templates", "_helpers.tpl"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(tpl), "/"+x.component+":{{") {
			t.Fatalf("charts/%s/templates/_helpers.tpl has no %q image", x.chart, "<hub>/"+x.component+":<tag>")
		}
		out[x.component] = c.Hub + "/" + x.component + ":" + c.AppVersion
	}
	return out
}

// checkLayout reads the component's OCI layout: one multi-arch index named
// after the tag and the reference, a manifest per platform. It returns each
// platform's config digest.
func checkLayout(t *testing.T, r Result, plats []Platform) []v1.Hash {
	t.Helper()
	top, err := layout.ImageIndexFromPath(r.Layout)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.Manifests) != 1 {
		t.Fatalf("layout index.json has %d entries, want 1", len(tm.Manifests))
	}
	d := tm.Manifests[0]
	if d.Digest != r.Index {
		t.Errorf("layout holds %s, built %s", d.Digest, r.Index)
	}
	if got := d.Annotations["io.containerd.image.name"]; got != r.Ref.String() {
		t.Errorf("io.containerd.image.name %q, want %q", got, r.Ref)
	}
	if got := d.Annotations["org.opencontainers.image.ref.name"]; got != r.Ref.TagStr() {
		t.Errorf("org.opencontainers.image.ref.name %q, want %q", got, r.Ref.TagStr())
	}
	idx, err := top.ImageIndex(d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	// Digests, sizes and diff IDs agree with the blobs, for every platform.
	if err := validate.Index(idx); err != nil {
		t.Errorf("OCI layout: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != len(plats) {
		t.Fatalf("index has %d manifests, want %d", len(im.Manifests), len(plats))
	}
	var configs []v1.Hash
	for j, p := range plats {
		m := im.Manifests[j]
		if m.Platform == nil || m.Platform.OS != p.OS || m.Platform.Architecture != p.Arch || m.Platform.Variant != p.Variant {
			t.Errorf("manifest %d: platform %+v, want %s", j, m.Platform, p)
		}
		if m.Digest != r.Images[j] {
			t.Errorf("%s: layout has %s, built %s", p, m.Digest, r.Images[j])
		}
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cn, err := img.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		configs = append(configs, cn)
	}
	return configs
}

// checkTarball loads the docker archive of one platform and checks its tag,
// config and files.
func checkTarball(t *testing.T, r Result, j int, p Platform, binDir string, created time.Time, config v1.Hash) {
	path := r.Tarballs[j]
	if want := TarballName(r.Component, r.Ref.TagStr(), j, p); filepath.Base(path) != want {
		t.Errorf("archive %s, want %s", filepath.Base(path), want)
	}
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(path) })
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || !slices.Equal(m[0].RepoTags, []string{r.Ref.String()}) {
		t.Fatalf("manifest.json %+v, want one image tagged %s", m, r.Ref)
	}
	img, err := tarball.ImageFromPath(path, &r.Ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Errorf("docker archive: %v", err)
	}
	if cn, err := img.ConfigName(); err != nil || cn != config {
		t.Errorf("config %s (%v), the OCI layout's is %s", cn, err, config)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := r.Component
	bins := c.Binaries()
	if cf.OS != p.OS || cf.Architecture != p.Arch || cf.Variant != p.Variant {
		t.Errorf("config platform %s/%s/%s, want %s", cf.OS, cf.Architecture, cf.Variant, p)
	}
	if want := []string{"/usr/local/bin/" + bins[0]}; !slices.Equal(cf.Config.Entrypoint, want) || cf.Config.Cmd != nil {
		t.Errorf("entrypoint %q cmd %q, want %q and none", cf.Config.Entrypoint, cf.Config.Cmd, want)
	}
	wantUser := "1337:1337"
	if c.Name == "node-agent" {
		wantUser = "0:0"
	}
	if cf.Config.User != wantUser {
		t.Errorf("user %q, want %q", cf.Config.User, wantUser)
	}
	if !cf.Created.Time.Equal(created) {
		t.Errorf("created %s, want %s", cf.Created.Time, created)
	}
	for k, v := range map[string]string{
		"org.opencontainers.image.source":   "https://github.com/weft-mesh/weft",
		"org.opencontainers.image.version":  r.Ref.TagStr(),
		"org.opencontainers.image.revision": "0123456789abcdef0123456789abcdef01234567",
		"org.opencontainers.image.created":  created.Format(time.RFC3339),
	} {
		if got := cf.Config.Labels[k]; got != v {
			t.Errorf("label %s=%q, want %q", k, got, v)
		}
	}

	files := layerFiles(t, img, created)
	for _, b := range bins {
		h, ok := files["usr/local/bin/"+b]
		if !ok {
			t.Errorf("no /usr/local/bin/%s", b)
			continue
		}
		if h.Typeflag != tar.TypeReg || h.Mode != 0o755 {
			t.Errorf("/usr/local/bin/%s: type %c mode %o, want a regular file 0755", b, h.Typeflag, h.Mode)
		}
		data, err := os.ReadFile(filepath.Join(binDir, b))
		if err != nil {
			t.Fatal(err)
		}
		if h.sum != sha256.Sum256(data) {
			t.Errorf("/usr/local/bin/%s differs from the built binary", b)
		}
	}
	for name := range files {
		if dir, base := filepath.Split(name); dir == "usr/local/bin/" && base != "" && !slices.Contains(bins, base) {
			t.Errorf("unexpected /%s", name)
		}
	}
	passwd := string(files["etc/passwd"].data)
	if !strings.Contains(passwd, "\nweft:x:1337:1337:") || !strings.HasPrefix(passwd, "root:x:0:0:") {
		t.Errorf("/etc/passwd lacks root or weft (1337):\n%s", passwd)
	}
	if !strings.Contains(string(files["etc/group"].data), "weft:x:1337:") {
		t.Errorf("/etc/group lacks weft (1337)")
	}
	if h := files["tmp/"]; h.Typeflag != tar.TypeDir || h.Mode != 0o1777 {
		t.Errorf("/tmp: type %c mode %o, want a 1777 directory", h.Typeflag, h.Mode)
	}
	roots, rest := 0, files["etc/ssl/certs/ca-certificates.crt"].data
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			t.Errorf("ca-certificates.crt: %v", err)
		}
		roots++
	}
	if roots < 100 || len(bytes.TrimSpace(rest)) > 0 {
		t.Errorf("/etc/ssl/certs/ca-certificates.crt: %d roots, %d bytes of trailing junk", roots, len(rest))
	}
}

type entry struct {
	*tar.Header
	sum  [32]byte
	data []byte // small files only
}

// layerFiles flattens the image's layers (later ones win) and checks every
// entry's owner and timestamp.
func layerFiles(t *testing.T, img v1.Image, created time.Time) map[string]entry {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 2 {
		t.Errorf("%d layers, want 2 (base, binaries)", len(layers))
	}
	out := map[string]entry{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(created) {
				t.Errorf("%s: owner %d:%d mtime %s, want 0:0 %s", h.Name, h.Uid, h.Gid, h.ModTime, created)
			}
			e := entry{Header: h, sum: sha256.Sum256(data)}
			if len(data) < 1<<20 {
				e.data = data
			}
			out[h.Name] = e
		}
		rc.Close()
	}
	return out
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestParsePlatforms(t *testing.T) {
	ps, err := ParsePlatforms("linux/amd64, linux/arm64")
	if err != nil || len(ps) != 2 || ps[0] != (Platform{"linux", "amd64", ""}) || ps[1] != (Platform{"linux", "arm64", "v8"}) {
		t.Errorf("got %+v, %v", ps, err)
	}
	for _, bad := range []string{"", "amd64", "windows/amd64", "linux/arm/v7"} {
		if _, err := ParsePlatforms(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestCheckELF: an image refuses binaries of another architecture.
func TestCheckELF(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	other := Platform{OS: "linux", Arch: "arm64"}
	if runtime.GOARCH == "arm64" {
		other.Arch = "amd64"
	}
	if err := checkELF("self", data, other); err == nil || !strings.Contains(err.Error(), "ELF machine") {
		t.Errorf("test binary accepted as %s: %v", other, err)
	}
}
