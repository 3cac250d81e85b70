package kubelet

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
)

func TestResolveHostPath(t *testing.T) {
	root := "/srv/nodes/node-0"
	for in, want := range map[string]string{
		"/etc/cni/net.d":         root + "/etc/cni/net.d",
		"/var/lib/weft":          root + "/var/lib/weft",
		"/opt/cni/bin/":          root + "/opt/cni/bin",
		"/sys/fs/bpf":            root + "/sys/fs/bpf",
		"/sys/fs/bpf/weft":       root + "/sys/fs/bpf/weft",
		"/sys":                   "/sys",
		"/sys/kernel/debug":      "/sys/kernel/debug",
		"/proc":                  "/proc",
		"/dev/net/tun":           "/dev/net/tun",
		"/lib/modules":           "/lib/modules",
		"/usr/bin":               "/usr/bin",
		"/bin":                   "/bin",
		"/sbin":                  "/sbin",
		"/lib64":                 "/lib64",
		"/run/netns":             "/run/netns",
		"/var/run/netns":         "/run/netns",
		"/libexec":               root + "/libexec",
		"/usrlocal":              root + "/usrlocal",
		"/":                      root,
		"/etc/../../etc/passwd":  root + "/etc/passwd",
		"relative/path":          root + "/relative/path",
		"/var/log/../run/x.sock": root + "/var/run/x.sock",
	} {
		if got := resolveHostPath(root, in); got != want {
			t.Errorf("resolveHostPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckHostPathType(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	typ := func(t v1.HostPathType) *v1.HostPathType { return &t }
	tests := []struct {
		name    string
		path    string
		typ     *v1.HostPathType
		wantErr string
	}{
		{"unset missing", filepath.Join(dir, "nothing"), nil, ""},
		{"dir or create", filepath.Join(dir, "a/b/c"), typ(v1.HostPathDirectoryOrCreate), ""},
		{"file or create", filepath.Join(dir, "x/y.sock"), typ(v1.HostPathFileOrCreate), ""},
		{"directory ok", dir, typ(v1.HostPathDirectory), ""},
		{"directory missing", filepath.Join(dir, "missing"), typ(v1.HostPathDirectory), "does not exist"},
		{"directory is file", file, typ(v1.HostPathDirectory), "is not a Directory"},
		{"file ok", file, typ(v1.HostPathFile), ""},
		{"file is dir", dir, typ(v1.HostPathFile), "is not a File"},
		{"socket", file, typ(v1.HostPathSocket), "is not a Socket"},
		{"dir-or-create on file", file, typ(v1.HostPathDirectoryOrCreate), "is not a directory"},
		{"chardev", "/dev/null", typ(v1.HostPathCharDev), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkHostPathType(tt.path, tt.typ)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
	if st, err := os.Stat(filepath.Join(dir, "a/b/c")); err != nil || !st.IsDir() {
		t.Errorf("DirectoryOrCreate did not create: %v", err)
	}
	if st, err := os.Stat(filepath.Join(dir, "x/y.sock")); err != nil || !st.Mode().IsRegular() {
		t.Errorf("FileOrCreate did not create: %v", err)
	}
}

func TestWriteAtomicDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}
	if err := writeAtomicDir(dir, map[string]fileContent{
		"token":      {data: []byte("t1"), mode: 0o600},
		"sub/ca.crt": {data: []byte("ca"), mode: 0o644},
		"old":        {data: []byte("x"), mode: 0o644},
	}); err != nil {
		t.Fatal(err)
	}
	if read("token") != "t1" || read("sub/ca.crt") != "ca" {
		t.Fatalf("first write: token=%q ca=%q", read("token"), read("sub/ca.crt"))
	}
	if target, err := os.Readlink(filepath.Join(dir, "token")); err != nil || target != "..data/token" {
		t.Errorf("token link = %q, %v", target, err)
	}
	first, _ := os.Readlink(filepath.Join(dir, "..data"))
	// Unchanged content keeps the same generation.
	if err := writeAtomicDir(dir, map[string]fileContent{
		"token": {data: []byte("t1"), mode: 0o600}, "sub/ca.crt": {data: []byte("ca"), mode: 0o644}, "old": {data: []byte("x"), mode: 0o644},
	}); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.Readlink(filepath.Join(dir, "..data")); again != first {
		t.Errorf("unchanged payload rewrote the volume (%s -> %s)", first, again)
	}
	if err := writeAtomicDir(dir, map[string]fileContent{
		"token": {data: []byte("t2"), mode: 0o600}, "sub/ca.crt": {data: []byte("ca"), mode: 0o644},
	}); err != nil {
		t.Fatal(err)
	}
	if read("token") != "t2" {
		t.Errorf("token after update = %q", read("token"))
	}
	if _, err := os.Lstat(filepath.Join(dir, "old")); !os.IsNotExist(err) {
		t.Errorf("removed key still present: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, first)); !os.IsNotExist(err) {
		t.Errorf("old generation %s not cleaned up", first)
	}
	if st, _ := os.Stat(filepath.Join(dir, "token")); st.Mode().Perm() != 0o600 {
		t.Errorf("token mode %v", st.Mode())
	}
	if err := writeAtomicDir(dir, map[string]fileContent{"../escape": {data: nil, mode: 0o644}}); err == nil {
		t.Error("path escaping the volume accepted")
	}
}

func TestVolumeMountsFor(t *testing.T) {
	root := t.TempDir()
	vols := map[string]podVolume{
		"data": {Path: filepath.Join(root, "data")},
		"cfg":  {Path: filepath.Join(root, "cfg"), ReadOnly: true},
	}
	bidi := v1.MountPropagationBidirectional
	c := &v1.Container{VolumeMounts: []v1.VolumeMount{
		{Name: "data", MountPath: "/data", SubPath: "logs", MountPropagation: &bidi},
		{Name: "cfg", MountPath: "/etc/app"},
		{Name: "data", MountPath: "/per-pod", SubPathExpr: "$(POD_NAME)"},
	}}
	mounts, err := volumeMountsFor(c, vols, mappingFor(map[string]string{"POD_NAME": "web-0"}))
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{
		{Source: filepath.Join(root, "data/logs"), Destination: "/data", Propagation: "Bidirectional"},
		{Source: filepath.Join(root, "cfg"), Destination: "/etc/app", ReadOnly: true},
		{Source: filepath.Join(root, "data/web-0"), Destination: "/per-pod"},
	}
	for i := range want {
		if mounts[i] != want[i] {
			t.Errorf("mount %d = %+v, want %+v", i, mounts[i], want[i])
		}
	}
	if st, err := os.Stat(filepath.Join(root, "data/logs")); err != nil || !st.IsDir() {
		t.Errorf("subPath not created: %v", err)
	}
	_, err = volumeMountsFor(&v1.Container{VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/x", SubPath: "../../etc"}}}, vols, mappingFor(nil))
	if err == nil {
		t.Error("escaping subPath accepted")
	}
	_, err = volumeMountsFor(&v1.Container{VolumeMounts: []v1.VolumeMount{{Name: "nope", MountPath: "/x"}}}, vols, mappingFor(nil))
	if err == nil {
		t.Error("unknown volume accepted")
	}
}
