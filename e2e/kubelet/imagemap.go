package kubelet

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// ImageMap stands in for a registry: it maps image repositories to
// binaries on the host (there is no container engine and no image store).
type ImageMap struct {
	files   []string
	entries map[string]ImageEntry // key: normalized repository
	binDir  string
}

// ImageEntry is one image: OCI-like ENTRYPOINT, CMD and ENV. Binaries are
// further host files the image contains (absolute paths, ${BIN} expanded),
// bound read-only at the same path in the container like the entrypoint.
// Files are host files the image has at another path (a Dockerfile's
// COPY: the command in PATH, the certificate at / its args name).
type ImageEntry struct {
	Image      string      `json:"image"`
	Entrypoint []string    `json:"entrypoint,omitempty"`
	Cmd        []string    `json:"cmd,omitempty"`
	Env        []string    `json:"env,omitempty"`
	Binaries   []string    `json:"binaries,omitempty"`
	Files      []ImageFile `json:"files,omitempty"`
}

// ImageFile is a host file (Source, ${BIN} expanded) the image has at Path.
type ImageFile struct {
	Path   string `json:"path"`
	Source string `json:"source"`
}

type imageMapFile struct {
	Images []ImageEntry `json:"images"`
}

// ImageNotFoundError means the image is not in any image map; the pod's
// container stays Waiting with ErrImagePull/ImagePullBackOff.
type ImageNotFoundError struct {
	Image string
	Files []string
	Known []string
}

func (e *ImageNotFoundError) Error() string {
	return fmt.Sprintf("image %q is not in the image map (%s); known images: %s",
		e.Image, strings.Join(e.Files, ", "), strings.Join(e.Known, ", "))
}

// BinaryMissingError means the image maps to a binary that was not built.
type BinaryMissingError struct {
	Image string
	Path  string
}

func (e *BinaryMissingError) Error() string {
	return fmt.Sprintf("image %q maps to %s which does not exist: run `make build` first", e.Image, e.Path)
}

// LoadImageMaps reads and merges image map files; later files win.
func LoadImageMaps(files []string, binDir string) (*ImageMap, error) {
	m := &ImageMap{files: files, entries: map[string]ImageEntry{}, binDir: binDir}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading image map: %w", err)
		}
		if err := m.add(f, data); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *ImageMap) add(name string, data []byte) error {
	var f imageMapFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return fmt.Errorf("parsing image map %s: %w", name, err)
	}
	for i, e := range f.Images {
		if e.Image == "" {
			return fmt.Errorf("image map %s: images[%d] has no image", name, i)
		}
		m.entries[normalizeRepo(e.Image)] = e
	}
	return nil
}

// normalizeRepo drops digest, tag and the optional docker.io prefixes so
// "istio/x:1.2", "docker.io/istio/x@sha256:.." and "docker.io/istio/x" match.
func normalizeRepo(image string) string {
	s := image
	if i := strings.Index(s, "@"); i >= 0 {
		s = s[:i]
	}
	// A ':' after the last '/' is a tag; before it, a registry port.
	if i := strings.LastIndex(s, ":"); i >= 0 && i > strings.LastIndex(s, "/") {
		s = s[:i]
	}
	s = strings.TrimPrefix(s, "docker.io/")
	s = strings.TrimPrefix(s, "library/")
	return s
}

// Known lists the repositories in the map (normalized), sorted.
func (m *ImageMap) Known() []string {
	var out []string
	for repo := range m.entries {
		out = append(out, repo)
	}
	sort.Strings(out)
	return out
}

// ResolvedImage is what a container runs.
type ResolvedImage struct {
	Argv []string
	Env  []string
	// Binaries are host files to bind at the same path in the rootfs (the
	// overlay only shows the root filesystem, not other mounts).
	Binaries []string
	// Files are host files to bind at their Path in the rootfs.
	Files   []ImageFile
	ImageID string
}

// Resolve merges the image's entrypoint/cmd with the container's
// command/args using Kubernetes rules.
func (m *ImageMap) Resolve(image string, command, args []string) (*ResolvedImage, error) {
	e, ok := m.entries[normalizeRepo(image)]
	if !ok {
		return nil, &ImageNotFoundError{Image: image, Files: m.files, Known: m.Known()}
	}
	expand := func(in []string) ([]string, error) {
		out := make([]string, len(in))
		for i, s := range in {
			if strings.Contains(s, "${BIN}") && m.binDir == "" {
				return nil, fmt.Errorf("image %q uses ${BIN} but WEFT_BIN_DIR/--bin-dir is not set", image)
			}
			out[i] = strings.ReplaceAll(s, "${BIN}", m.binDir)
		}
		return out, nil
	}
	entrypoint, err := expand(e.Entrypoint)
	if err != nil {
		return nil, err
	}
	cmd, err := expand(e.Cmd)
	if err != nil {
		return nil, err
	}
	env, err := expand(e.Env)
	if err != nil {
		return nil, err
	}
	binaries, err := expand(e.Binaries)
	if err != nil {
		return nil, err
	}
	var argv []string
	switch {
	case len(command) > 0:
		argv = append(append(argv, command...), args...)
	case len(args) > 0:
		argv = append(append(argv, entrypoint...), args...)
	default:
		argv = append(append(argv, entrypoint...), cmd...)
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("image %q has no entrypoint/cmd and the container sets no command", image)
	}
	r := &ResolvedImage{Argv: argv, Env: env, ImageID: "weft://" + normalizeRepo(image)}
	// argv[0] came from the image: it must have been built.
	if len(command) == 0 && filepath.IsAbs(argv[0]) {
		st, err := os.Stat(argv[0])
		if err != nil || st.IsDir() {
			return nil, &BinaryMissingError{Image: image, Path: argv[0]}
		}
		r.Binaries = append(r.Binaries, argv[0])
	}
	// The image's other files are part of it whatever the command is.
	for _, b := range binaries {
		b, err := imageFile(image, "binaries", b)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(r.Binaries, b) {
			r.Binaries = append(r.Binaries, b)
		}
	}
	for _, f := range e.Files {
		src, err := expand([]string{f.Source})
		if err != nil {
			return nil, err
		}
		if !filepath.IsAbs(f.Path) {
			return nil, fmt.Errorf("image %q: files path %q is not an absolute path", image, f.Path)
		}
		if f.Source, err = imageFile(image, "files source", src[0]); err != nil {
			return nil, err
		}
		r.Files = append(r.Files, f)
	}
	return r, nil
}

// imageFile checks that a host file of an image exists (it was built).
func imageFile(image, field, path string) (string, error) {
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("image %q: %s entry %q is not an absolute path", image, field, path)
	}
	path = filepath.Clean(path)
	if st, err := os.Stat(path); err != nil || st.IsDir() {
		return "", &BinaryMissingError{Image: image, Path: path}
	}
	return path, nil
}
