package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/x509roots/fallback/bundle"
	"sigs.k8s.io/yaml"
)

// Source is the org.opencontainers.image.source of every image.
const Source = "https://github.com/weft-mesh/weft"

// ProxyUID is the non-root user (and group) of the control plane and the
// waypoints: the charts and the waypoint controller run them as 1337.
const ProxyUID = 1337

// BinDir is where the binaries live inside the images.
const BinDir = "/usr/local/bin"

// Component is one image.
type Component struct {
	// Name is the repository under the hub, as the charts spell it.
	Name string
	// Cmd is the main package (relative to the repository root) of the
	// entrypoint; Extra are further main packages installed beside it.
	Cmd   string
	Extra []string
	// User of the image config ("uid:gid").
	User        string
	Description string
}

// Binaries are the file names of the component's binaries, entrypoint first.
func (c Component) Binaries() []string {
	var out []string
	for _, p := range append([]string{c.Cmd}, c.Extra...) {
		out = append(out, filepath.Base(p))
	}
	return out
}

// Components are Weft's images, named as in hack/local-images.yaml and the charts.
var Components = []Component{
	{
		Name: "control", Cmd: "./control/cmd/weft-control",
		User:        fmt.Sprintf("%d:%d", ProxyUID, ProxyUID),
		Description: "Weft control plane: Kubernetes discovery, xDS and the mesh certificate authority",
	},
	{
		// The agent installs weft-cni, found next to its own executable,
		// into the node's CNI bin dir; it needs root (eBPF, netns, nftables).
		Name: "node-agent", Cmd: "./node-agent/cmd/weft-node-agent",
		Extra:       []string{"./node-agent/cmd/weft-cni"},
		User:        "0:0",
		Description: "Weft node agent: CNI plugin, eBPF capture, HBONE mTLS tunnel and workload certificates",
	},
	{
		// Gateways run weft-gateway: the waypoint plus a Kubernetes client
		// for their certificates' Secrets, which waypoints do not load.
		Name: "waypoint", Cmd: "./waypoint/cmd/weft-waypoint",
		Extra:       []string{"./waypoint/cmd/weft-gateway"},
		User:        fmt.Sprintf("%d:%d", ProxyUID, ProxyUID),
		Description: "Weft waypoint and gateway: L7 proxies for ambient mesh traffic",
	},
}

// Platform is an os/arch[/variant] the images are built for.
type Platform struct{ OS, Arch, Variant string }

func (p Platform) String() string { return p.OS + "/" + p.Arch }

// ParsePlatforms reads "linux/amd64,linux/arm64" (commas or spaces).
func ParsePlatforms(s string) ([]Platform, error) {
	var out []Platform
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		goos, arch, ok := strings.Cut(f, "/")
		if !ok || goos != "linux" || arch == "" || strings.Contains(arch, "/") {
			return nil, fmt.Errorf("platform %q: want linux/<arch>", f)
		}
		p := Platform{OS: goos, Arch: arch}
		if arch == "arm64" {
			p.Variant = "v8" // what registries and runtimes expect for arm64
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no platforms")
	}
	return out, nil
}

// Options of a build.
type Options struct {
	// Root is the repository root (charts/, the main packages).
	Root string
	// Out receives <name>-<tag>.tar (first platform), <name>-<tag>-<arch>.tar
	// (the others) and oci/<name>/ (an OCI layout holding a multi-arch index).
	Out string
	// BinDirs holds each platform's binaries (Platform.String() -> dir).
	BinDirs map[string]string
	// Platforms, the first one being the docker archive without suffix.
	Platforms []Platform
	// Hub and Tag of the image references (<hub>/<name>:<tag>).
	Hub, Tag string
	// Revision (git commit) and Created (SOURCE_DATE_EPOCH) of the labels,
	// config and layer timestamps.
	Revision string
	Created  time.Time
}

// Result describes one built component.
type Result struct {
	Component Component
	Ref       name.Tag
	// Index is the digest of the multi-arch index in the OCI layout.
	Index v1.Hash
	// Images are the per-platform manifest digests, in Options.Platforms order.
	Images []v1.Hash
	// Tarballs are the docker archives, in Options.Platforms order.
	Tarballs []string
	Layout   string
}

// TarballName is the docker archive of a component for the i-th platform.
func TarballName(c Component, tag string, i int, p Platform) string {
	if i == 0 {
		return fmt.Sprintf("%s-%s.tar", c.Name, tag)
	}
	return fmt.Sprintf("%s-%s-%s.tar", c.Name, tag, p.Arch)
}

// Build writes every component's images.
func Build(o Options) ([]Result, error) {
	base, err := baseLayer(o.Created)
	if err != nil {
		return nil, err
	}
	var out []Result
	for _, c := range Components {
		r, err := buildComponent(o, c, base)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Name, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func buildComponent(o Options, c Component, base v1.Layer) (Result, error) {
	ref, err := name.NewTag(fmt.Sprintf("%s/%s:%s", o.Hub, c.Name, o.Tag), name.StrictValidation)
	if err != nil {
		return Result{}, err
	}
	res := Result{Component: c, Ref: ref}
	labels := map[string]string{
		"org.opencontainers.image.title":       "weft-" + c.Name,
		"org.opencontainers.image.description": c.Description,
		"org.opencontainers.image.source":      Source,
		"org.opencontainers.image.url":         Source,
		"org.opencontainers.image.version":     o.Tag,
		"org.opencontainers.image.revision":    o.Revision,
		"org.opencontainers.image.created":     o.Created.UTC().Format(time.RFC3339),
		"org.opencontainers.image.ref.name":    ref.String(),
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for i, p := range o.Platforms {
		dir := o.BinDirs[p.String()]
		if dir == "" {
			return res, fmt.Errorf("no binaries for %s", p)
		}
		img, err := image(o, c, p, dir, base, labels)
		if err != nil {
			return res, fmt.Errorf("%s: %w", p, err)
		}
		d, err := img.Digest()
		if err != nil {
			return res, err
		}
		res.Images = append(res.Images, d)
		tb := filepath.Join(o.Out, TarballName(c, o.Tag, i, p))
		if err := tarball.WriteToFile(tb, ref, img); err != nil {
			return res, fmt.Errorf("docker archive: %w", err)
		}
		res.Tarballs = append(res.Tarballs, tb)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add: img,
			Descriptor: v1.Descriptor{
				Platform: &v1.Platform{OS: p.OS, Architecture: p.Arch, Variant: p.Variant},
			},
		})
	}
	idx = mutate.Annotations(idx, labels).(v1.ImageIndex)
	if res.Index, err = idx.Digest(); err != nil {
		return res, err
	}
	// A fresh layout each time: no blobs of earlier builds left behind.
	res.Layout = filepath.Join(o.Out, "oci", c.Name)
	if err := os.RemoveAll(res.Layout); err != nil {
		return res, err
	}
	lp, err := layout.Write(res.Layout, empty.Index)
	if err != nil {
		return res, err
	}
	// ref.name is the tag (what skopeo's oci:DIR:TAG and crane read);
	// io.containerd.image.name the full reference (what ctr import uses).
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": o.Tag,
		"io.containerd.image.name":          ref.String(),
	})); err != nil {
		return res, fmt.Errorf("OCI layout: %w", err)
	}
	return res, nil
}

// image is one platform's image: the shared base layer, then the binaries.
func image(o Options, c Component, p Platform, binDir string, base v1.Layer, labels map[string]string) (v1.Image, error) {
	var files []file
	for _, dir := range []string{"usr/", "usr/local/", "usr/local/bin/"} {
		files = append(files, file{name: dir, mode: 0o755, dir: true})
	}
	for _, b := range c.Binaries() {
		data, err := os.ReadFile(filepath.Join(binDir, b))
		if err != nil {
			return nil, err
		}
		if err := checkELF(b, data, p); err != nil {
			return nil, err
		}
		files = append(files, file{name: strings.TrimPrefix(BinDir, "/") + "/" + b, mode: 0o755, data: data})
	}
	bins, err := layer(files, o.Created)
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: o.Created}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, History: v1.History{
			Created: created, CreatedBy: "hack/images: /etc (passwd, group, nsswitch.conf, CA certificates), /tmp",
		}},
		mutate.Addendum{Layer: bins, History: v1.History{
			Created: created, CreatedBy: "hack/images: " + strings.Join(c.Binaries(), ", ") + " in " + BinDir,
		}},
	)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Arch, p.Variant
	cf.Created = created
	cf.Author = ""
	cf.Config = v1.Config{
		Entrypoint: []string{BinDir + "/" + c.Binaries()[0]},
		User:       c.User,
		WorkingDir: "/",
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		Labels:     labels,
	}
	return mutate.ConfigFile(img, cf)
}

// baseLayer is what every image shares: users, name service config, the CA
// bundle and /tmp. Like distroless/static, minus what static Go binaries never read.
func baseLayer(created time.Time) (v1.Layer, error) {
	certs, err := caBundle()
	if err != nil {
		return nil, err
	}
	uid := strconv.Itoa(ProxyUID)
	passwd := "root:x:0:0:root:/root:/sbin/nologin\n" +
		"weft:x:" + uid + ":" + uid + ":weft:/nonexistent:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
	group := "root:x:0:\nweft:x:" + uid + ":\nnobody:x:65534:\n"
	return layer([]file{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: "etc/nsswitch.conf", mode: 0o644, data: []byte("hosts: files dns\n")},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "etc/ssl/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: certs},
		{name: "tmp/", mode: 0o1777, dir: true},
	}, created)
}

// caBundle is Mozilla's root store as pinned in go.sum
// (golang.org/x/crypto/x509roots/fallback/bundle), so that it is the same
// on every machine. Roots with a distrust-after constraint, which a PEM
// file cannot express, are left out.
func caBundle() ([]byte, error) {
	var b bytes.Buffer
	for r := range bundle.Roots() {
		if r.Constraint != nil {
			continue
		}
		if err := pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: r.Certificate}); err != nil {
			return nil, err
		}
	}
	if b.Len() == 0 {
		return nil, fmt.Errorf("empty CA bundle")
	}
	return b.Bytes(), nil
}

// elfMachines are the ELF machines of the GOARCHes images are built for.
var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "386": elf.EM_386, "arm": elf.EM_ARM,
	"ppc64le": elf.EM_PPC64, "s390x": elf.EM_S390, "riscv64": elf.EM_RISCV, "loong64": elf.EM_LOONGARCH,
}

// checkELF refuses a binary built for another platform, or linked
// dynamically: the images have no libc and no loader.
func checkELF(name string, data []byte, p Platform) error {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer f.Close()
	if want, ok := elfMachines[p.Arch]; !ok || f.Machine != want {
		return fmt.Errorf("%s: ELF machine %s, want %s binaries", name, f.Machine, p)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s: dynamically linked (build with CGO_ENABLED=0)", name)
		}
	}
	return nil
}

type file struct {
	name string
	mode int64
	dir  bool
	data []byte
}

// layer is a gzipped tar of files owned by root, all stamped with created:
// the same files give the same bytes.
func layer(files []file, created time.Time) (v1.Layer, error) {
	var raw bytes.Buffer
	zw, err := gzip.NewWriterLevel(&raw, gzip.DefaultCompression) // BestCompression: 0.4% smaller, twice the time
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	for _, f := range files {
		h := &tar.Header{
			Name:     f.name,
			Mode:     f.mode,
			ModTime:  created.UTC().Truncate(time.Second),
			Typeflag: tar.TypeReg,
			Size:     int64(len(f.data)),
			Uname:    "root",
			Gname:    "root",
			Format:   tar.FormatPAX,
		}
		if f.dir {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	gz := raw.Bytes()
	// Handed over compressed, the layer is compressed once, here, not on
	// every read.
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// BuildBinaries builds the components' main packages for p into dir, static
// and path-independent as `make build` does.
func BuildBinaries(root, dir string, p Platform) error {
	args := []string{"build", "-trimpath", "-buildvcs=false", "-o", dir + string(filepath.Separator)}
	for _, c := range Components {
		args = append(args, c.Cmd)
		args = append(args, c.Extra...)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Arch)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build (%s): %w", p, err)
	}
	return nil
}

// Chart is what Build needs from a chart: its appVersion and image hub.
type Chart struct {
	AppVersion string
	Hub        string
}

// ReadChart reads charts/<name>/Chart.yaml and values.yaml.
func ReadChart(root, chart string) (Chart, error) {
	var meta struct {
		AppVersion string `json:"appVersion"`
	}
	var values struct {
		Image struct {
			Hub string `json:"hub"`
		} `json:"image"`
	}
	dir := filepath.Join(root, "charts", chart)
	for f, v := range map[string]any{"Chart.yaml": &meta, "values.yaml": &values} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return Chart{}, err
		}
		if err := yaml.Unmarshal(b, v); err != nil {
			return Chart{}, fmt.Errorf("%s: %w", filepath.Join(dir, f), err)
		}
	}
	if meta.AppVersion == "" || values.Image.Hub == "" {
		return Chart{}, fmt.Errorf("%s: no appVersion or image.hub", dir)
	}
	return Chart{AppVersion: meta.AppVersion, Hub: values.Image.Hub}, nil
}

// GitInfo is the revision and commit time (Unix seconds) of HEAD, and
// whether the work tree has uncommitted changes.
func GitInfo(root string) (rev string, epoch int64, dirty bool, err error) {
	out, err := exec.Command("git", "-C", root, "log", "-1", "--format=%H %ct").Output()
	if err != nil {
		return "", 0, false, fmt.Errorf("git log: %w", err)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return "", 0, false, fmt.Errorf("git log: unexpected %q", out)
	}
	if epoch, err = strconv.ParseInt(f[1], 10, 64); err != nil {
		return "", 0, false, err
	}
	st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output()
	if err != nil {
		return "", 0, false, fmt.Errorf("git status: %w", err)
	}
	return f[0], epoch, len(bytes.TrimSpace(st)) > 0, nil
}
