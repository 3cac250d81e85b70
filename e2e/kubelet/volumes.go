package kubelet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	authv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }

// realHostPrefixes are hostPath prefixes that mean the real host: kernel
// interfaces and the host's binaries, which nodes legitimately share. The
// netns dir is shared too: CNI hands plugins paths in it, and names carry
// the node prefix.
var realHostPrefixes = []string{"/proc", "/dev", "/lib/modules", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/sys", "/run/netns", "/var/run/netns"}

// resolveHostPath maps a hostPath volume path onto the node: under rootDir,
// except the real-host prefixes above (but /sys/fs/bpf is per node).
func resolveHostPath(rootDir, p string) string {
	clean := filepath.Clean("/" + p)
	if clean == "/sys/fs/bpf" || strings.HasPrefix(clean, "/sys/fs/bpf/") {
		return filepath.Join(rootDir, clean)
	}
	for _, pre := range realHostPrefixes {
		if clean == pre || strings.HasPrefix(clean, pre+"/") {
			if pre == "/var/run/netns" {
				return filepath.Join("/run/netns", strings.TrimPrefix(clean, pre))
			}
			return clean
		}
	}
	return filepath.Join(rootDir, clean)
}

// checkHostPathType enforces hostPath.type, creating what *OrCreate asks.
func checkHostPathType(path string, t *v1.HostPathType) error {
	typ := v1.HostPathUnset
	if t != nil {
		typ = *t
	}
	st, err := os.Stat(path)
	switch typ {
	case v1.HostPathUnset:
		return nil
	case v1.HostPathDirectoryOrCreate:
		if err != nil {
			return os.MkdirAll(path, 0o755)
		}
		if !st.IsDir() {
			return fmt.Errorf("hostPath type check failed: %s is not a directory", path)
		}
		return nil
	case v1.HostPathFileOrCreate:
		if err != nil {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			return f.Close()
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("hostPath type check failed: %s is not a file", path)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("hostPath type check failed: %s does not exist (type %s)", path, typ)
	}
	ok := false
	switch typ {
	case v1.HostPathDirectory:
		ok = st.IsDir()
	case v1.HostPathFile:
		ok = st.Mode().IsRegular()
	case v1.HostPathSocket:
		ok = st.Mode()&os.ModeSocket != 0
	case v1.HostPathCharDev:
		ok = st.Mode()&os.ModeCharDevice != 0
	case v1.HostPathBlockDev:
		ok = st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0
	default:
		return fmt.Errorf("unknown hostPath type %q", typ)
	}
	if !ok {
		return fmt.Errorf("hostPath type check failed: %s is not a %s", path, typ)
	}
	return nil
}

// podVolume is a volume prepared on the node, ready to bind.
type podVolume struct {
	Path string
	// ReadOnly is forced for API-projected volumes.
	ReadOnly bool
}

// fileContent is one file of an API-projected volume.
type fileContent struct {
	data []byte
	mode os.FileMode
}

// setupVolumes prepares every volume of the pod under podDir/volumes.
func (k *Kubelet) setupVolumes(ctx context.Context, pod *v1.Pod, podDir string, info podRuntimeInfo) (map[string]podVolume, error) {
	vols := map[string]podVolume{}
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		dir := filepath.Join(podDir, "volumes", v.Name)
		switch {
		case v.EmptyDir != nil:
			if err := os.MkdirAll(dir, 0o777); err != nil {
				return nil, err
			}
			_ = os.Chmod(dir, 0o777)
			if v.EmptyDir.Medium == v1.StorageMediumMemory && !isMountPoint(dir) {
				opts := "mode=1777"
				if v.EmptyDir.SizeLimit != nil && !v.EmptyDir.SizeLimit.IsZero() {
					opts += fmt.Sprintf(",size=%d", v.EmptyDir.SizeLimit.Value())
				}
				if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
					return nil, fmt.Errorf("volume %q: mounting tmpfs: %w", v.Name, err)
				}
			}
			vols[v.Name] = podVolume{Path: dir}
		case v.HostPath != nil:
			p := resolveHostPath(k.cfg.RootDir, v.HostPath.Path)
			if err := checkHostPathType(p, v.HostPath.Type); err != nil {
				return nil, fmt.Errorf("volume %q: %w", v.Name, err)
			}
			vols[v.Name] = podVolume{Path: p}
		case v.ConfigMap != nil, v.Secret != nil, v.DownwardAPI != nil, v.Projected != nil:
			files, err := k.projectedFiles(ctx, pod, v, info)
			if err != nil {
				return nil, fmt.Errorf("volume %q: %w", v.Name, err)
			}
			if err := writeAtomicDir(dir, files); err != nil {
				return nil, fmt.Errorf("volume %q: %w", v.Name, err)
			}
			vols[v.Name] = podVolume{Path: dir, ReadOnly: true}
		default:
			return nil, fmt.Errorf("volume %q: unsupported volume type (weft-kubelet supports emptyDir, hostPath, configMap, secret, downwardAPI, projected)", v.Name)
		}
	}
	return vols, nil
}

// teardownVolumes unmounts tmpfs emptyDirs; the caller removes the dir.
func teardownVolumes(podDir string) {
	entries, _ := os.ReadDir(filepath.Join(podDir, "volumes"))
	for _, e := range entries {
		d := filepath.Join(podDir, "volumes", e.Name())
		if isMountPoint(d) {
			_ = unix.Unmount(d, unix.MNT_DETACH)
		}
	}
}

func modeOr(m *int32, def os.FileMode) os.FileMode {
	if m != nil {
		return os.FileMode(*m) & 0o777
	}
	return def
}

// projectedFiles computes the files of a configMap/secret/downwardAPI/
// projected volume.
func (k *Kubelet) projectedFiles(ctx context.Context, pod *v1.Pod, v *v1.Volume, info podRuntimeInfo) (map[string]fileContent, error) {
	files := map[string]fileContent{}
	switch {
	case v.ConfigMap != nil:
		return files, k.addConfigMapFiles(files, pod, &v.ConfigMap.LocalObjectReference, v.ConfigMap.Items, v.ConfigMap.Optional, modeOr(v.ConfigMap.DefaultMode, 0o644))
	case v.Secret != nil:
		return files, k.addSecretFiles(files, pod, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional, modeOr(v.Secret.DefaultMode, 0o644))
	case v.DownwardAPI != nil:
		return files, addDownwardFiles(files, pod, v.DownwardAPI.Items, modeOr(v.DownwardAPI.DefaultMode, 0o644), info)
	}
	def := modeOr(v.Projected.DefaultMode, 0o644)
	for _, src := range v.Projected.Sources {
		var err error
		switch {
		case src.ConfigMap != nil:
			err = k.addConfigMapFiles(files, pod, &src.ConfigMap.LocalObjectReference, src.ConfigMap.Items, src.ConfigMap.Optional, def)
		case src.Secret != nil:
			err = k.addSecretFiles(files, pod, src.Secret.Name, src.Secret.Items, src.Secret.Optional, def)
		case src.DownwardAPI != nil:
			err = addDownwardFiles(files, pod, src.DownwardAPI.Items, def, info)
		case src.ServiceAccountToken != nil:
			var tok string
			tok, err = k.tokens.get(ctx, pod, src.ServiceAccountToken)
			if err == nil {
				files[src.ServiceAccountToken.Path] = fileContent{data: []byte(tok), mode: def}
			}
		case src.ClusterTrustBundle != nil, src.PodCertificate != nil:
			err = errors.New("clusterTrustBundle/podCertificate projections are not supported by weft-kubelet")
		}
		if err != nil {
			return nil, err
		}
	}
	return files, nil
}

func (k *Kubelet) addConfigMapFiles(files map[string]fileContent, pod *v1.Pod, ref *v1.LocalObjectReference, items []v1.KeyToPath, optional *bool, def os.FileMode) error {
	cm, err := k.getConfigMap(pod.Namespace, ref.Name)
	if err != nil {
		if isNotFound(err) && isOptional(optional) {
			return nil
		}
		return fmt.Errorf("configmap %q: %w", ref.Name, err)
	}
	data := map[string][]byte{}
	for key, val := range cm.Data {
		data[key] = []byte(val)
	}
	for key, val := range cm.BinaryData {
		data[key] = val
	}
	return addKeyFiles(files, "configmap", cm.Name, data, items, optional, def)
}

func (k *Kubelet) addSecretFiles(files map[string]fileContent, pod *v1.Pod, name string, items []v1.KeyToPath, optional *bool, def os.FileMode) error {
	s, err := k.getSecret(pod.Namespace, name)
	if err != nil {
		if isNotFound(err) && isOptional(optional) {
			return nil
		}
		return fmt.Errorf("secret %q: %w", name, err)
	}
	return addKeyFiles(files, "secret", s.Name, s.Data, items, optional, def)
}

func addKeyFiles(files map[string]fileContent, kind, name string, data map[string][]byte, items []v1.KeyToPath, optional *bool, def os.FileMode) error {
	if len(items) == 0 {
		for key, val := range data {
			files[key] = fileContent{data: val, mode: def}
		}
		return nil
	}
	for _, it := range items {
		val, ok := data[it.Key]
		if !ok {
			if isOptional(optional) {
				continue
			}
			return fmt.Errorf("%s %q has no key %q", kind, name, it.Key)
		}
		files[it.Path] = fileContent{data: val, mode: modeOr(it.Mode, def)}
	}
	return nil
}

func addDownwardFiles(files map[string]fileContent, pod *v1.Pod, items []v1.DownwardAPIVolumeFile, def os.FileMode, info podRuntimeInfo) error {
	for _, it := range items {
		var val string
		var err error
		switch {
		case it.FieldRef != nil:
			val, err = podFieldValue(pod, it.FieldRef.FieldPath, info)
		case it.ResourceFieldRef != nil:
			c := findContainer(pod, it.ResourceFieldRef.ContainerName)
			if c == nil {
				return fmt.Errorf("downwardAPI %s: no container %q", it.Path, it.ResourceFieldRef.ContainerName)
			}
			val, err = resourceFieldValue(c, it.ResourceFieldRef, info)
		}
		if err != nil {
			return fmt.Errorf("downwardAPI %s: %w", it.Path, err)
		}
		files[it.Path] = fileContent{data: []byte(val), mode: modeOr(it.Mode, def)}
	}
	return nil
}

// writeAtomicDir publishes files the way the kubelet's AtomicWriter does:
// a timestamped dir, a "..data" symlink swapped with rename(2), and
// top-level symlinks through ..data, so a reader (or a running container
// with the dir bind-mounted) sees either the old or the new set.
func writeAtomicDir(dir string, files map[string]fileContent) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for p := range files {
		if strings.HasPrefix(p, "..") || filepath.IsAbs(p) || strings.Contains(p, "/../") {
			return fmt.Errorf("invalid file path %q", p)
		}
	}
	dataLink := filepath.Join(dir, "..data")
	if cur, err := os.Readlink(dataLink); err == nil && sameFiles(filepath.Join(dir, cur), files) {
		return nil
	}
	tsDir, err := os.MkdirTemp(dir, ".."+time.Now().UTC().Format("2006_01_02_15_04_05."))
	if err != nil {
		return err
	}
	_ = os.Chmod(tsDir, 0o755)
	for p, fc := range files {
		full := filepath.Join(tsDir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, fc.data, fc.mode); err != nil {
			return err
		}
		_ = os.Chmod(full, fc.mode)
	}
	old, _ := os.Readlink(dataLink)
	tmpLink := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmpLink)
	if err := os.Symlink(filepath.Base(tsDir), tmpLink); err != nil {
		return err
	}
	if err := os.Rename(tmpLink, dataLink); err != nil {
		return err
	}
	// Top-level entries point through ..data.
	want := map[string]bool{}
	for p := range files {
		top := strings.SplitN(filepath.Clean(p), "/", 2)[0]
		want[top] = true
	}
	for top := range want {
		link := filepath.Join(dir, top)
		if target, err := os.Readlink(link); err == nil && target == filepath.Join("..data", top) {
			continue
		}
		_ = os.RemoveAll(link)
		if err := os.Symlink(filepath.Join("..data", top), link); err != nil {
			return err
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, "..") || want[n] {
			continue
		}
		_ = os.RemoveAll(filepath.Join(dir, n))
	}
	if old != "" && old != filepath.Base(tsDir) {
		_ = os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}

func sameFiles(dir string, files map[string]fileContent) bool {
	n := 0
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		fc, ok := files[rel]
		if !ok || info.Mode().Perm() != fc.mode {
			return errors.New("differs")
		}
		data, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(data, fc.data) {
			return errors.New("differs")
		}
		n++
		return nil
	})
	return err == nil && n == len(files)
}

// volumeMountsFor turns a container's volumeMounts into init-mode mounts.
func volumeMountsFor(c *v1.Container, vols map[string]podVolume, mapping func(string) string) ([]Mount, error) {
	var out []Mount
	for _, vm := range c.VolumeMounts {
		vol, ok := vols[vm.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %q refers to an unknown volume", vm.Name)
		}
		src := vol.Path
		sub := vm.SubPath
		if vm.SubPathExpr != "" {
			sub = expandVars(vm.SubPathExpr, mapping)
		}
		if sub != "" {
			if filepath.IsAbs(sub) || strings.Contains("/"+filepath.ToSlash(sub)+"/", "/../") {
				return nil, fmt.Errorf("volumeMount %q: invalid subPath %q", vm.Name, sub)
			}
			src = filepath.Join(src, sub)
			if _, err := os.Lstat(src); errors.Is(err, os.ErrNotExist) {
				if err := os.MkdirAll(src, 0o755); err != nil {
					return nil, fmt.Errorf("volumeMount %q: creating subPath: %w", vm.Name, err)
				}
			}
		}
		m := Mount{Source: src, Destination: vm.MountPath, ReadOnly: vm.ReadOnly || vol.ReadOnly}
		if vm.MountPropagation != nil {
			switch *vm.MountPropagation {
			case v1.MountPropagationBidirectional:
				m.Propagation = "Bidirectional"
			case v1.MountPropagationHostToContainer:
				m.Propagation = "HostToContainer"
			}
		}
		out = append(out, m)
	}
	return out, nil
}

// tokenManager requests and caches projected service account tokens and
// refreshes them at 80% of their lifetime.
type tokenManager struct {
	k     *Kubelet
	mu    sync.Mutex
	cache map[string]*cachedToken
}

type cachedToken struct {
	token   string
	refresh time.Time
}

func (tm *tokenManager) get(ctx context.Context, pod *v1.Pod, src *v1.ServiceAccountTokenProjection) (string, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	key := fmt.Sprintf("%s/%s/%s/%d", pod.UID, sa, src.Audience, ptrDeref(src.ExpirationSeconds, 3600))
	tm.mu.Lock()
	ct := tm.cache[key]
	tm.mu.Unlock()
	now := time.Now()
	if ct != nil && now.Before(ct.refresh) {
		return ct.token, nil
	}
	tr := &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
		ExpirationSeconds: src.ExpirationSeconds,
		BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if src.Audience != "" {
		tr.Spec.Audiences = []string{src.Audience}
	}
	res, err := tm.k.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
	if err != nil {
		if ct != nil && now.Before(ct.refresh.Add(5*time.Minute)) {
			return ct.token, nil // keep the old one for a while
		}
		return "", fmt.Errorf("requesting token for service account %s/%s: %w", pod.Namespace, sa, err)
	}
	ttl := res.Status.ExpirationTimestamp.Sub(now)
	if ttl <= 0 {
		ttl = time.Duration(ptrDeref(src.ExpirationSeconds, 3600)) * time.Second
	}
	refresh := now.Add(ttl * 8 / 10)
	if refresh.Sub(now) > 24*time.Hour {
		refresh = now.Add(24 * time.Hour)
	}
	tm.mu.Lock()
	tm.cache[key] = &cachedToken{token: res.Status.Token, refresh: refresh}
	tm.mu.Unlock()
	tm.k.scheduleResync(pod, refresh.Sub(now)+time.Second)
	return res.Status.Token, nil
}

func (tm *tokenManager) forget(uid string) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	for k := range tm.cache {
		if strings.HasPrefix(k, uid+"/") {
			delete(tm.cache, k)
		}
	}
}

func ptrDeref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// getConfigMap and getSecret read the object when a pod or container
// starts, as the kubelet's Watch change-detection strategy does: never a
// copy older than the object (a restarted pod must see a patched
// ConfigMap). The node authorizer lets a node GET only objects its pods
// reference, so no informers.
func (k *Kubelet) getConfigMap(ns, name string) (*v1.ConfigMap, error) {
	return k.client.CoreV1().ConfigMaps(ns).Get(context.TODO(), name, metav1.GetOptions{})
}

func (k *Kubelet) getSecret(ns, name string) (*v1.Secret, error) {
	return k.client.CoreV1().Secrets(ns).Get(context.TODO(), name, metav1.GetOptions{})
}
