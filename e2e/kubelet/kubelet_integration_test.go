package kubelet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/tools/remotecommand"
	utilexecclient "k8s.io/client-go/util/exec"
)

// TestKubeletSyncHostNetworkPod drives the reconcile loop against a fake
// clientset with real containers (hostNetwork, so no CNI is needed).
func TestKubeletSyncHostNetworkPod(t *testing.T) {
	requirePrivileged(t)
	self, _ := os.Executable()
	root := t.TempDir()
	id := newID()[:8]
	mapFile := filepath.Join(root, "images.yaml")
	if err := os.WriteFile(mapFile, []byte("images:\n- image: busybox\n  entrypoint: [\"/bin/sh\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	images, err := LoadImageMaps([]string{mapFile}, "")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{NodeName: "node-t", NodeIP: "127.0.0.1", RootDir: root, StateDir: filepath.Join(root, "state"),
		ClusterDNS: []string{"10.96.0.10"}, ClusterDomain: "cluster.local", CgroupParent: "weft-kubelet-test-" + id,
		NetnsDir: "/run/netns", NetnsPrefix: "weft-test-" + id + "-", SelfBinary: self}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg.Logger = log

	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: types.UID("uid-" + id)},
		Spec: v1.PodSpec{
			NodeName: "node-t", HostNetwork: true, RestartPolicy: v1.RestartPolicyAlways,
			TerminationGracePeriodSeconds: ptrTo[int64](5),
			Volumes: []v1.Volume{
				{Name: "cfg", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}}}},
				{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}},
				{Name: "node-state", VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: "/var/lib/weft", Type: ptrTo(v1.HostPathDirectoryOrCreate)}}},
			},
			Containers: []v1.Container{
				{
					Name: "main", Image: "docker.io/library/busybox:1.36",
					Args: []string{"-c", "echo pod=$MY_POD; cat /cfg/key; echo; touch /node/written; exec sleep 1000"},
					Env:  []v1.EnvVar{{Name: "MY_POD", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
					VolumeMounts: []v1.VolumeMount{
						{Name: "cfg", MountPath: "/cfg"}, {Name: "scratch", MountPath: "/scratch"}, {Name: "node-state", MountPath: "/node"},
					},
					ReadinessProbe: &v1.Probe{ProbeHandler: v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"cat", "/scratch/ready"}}}, PeriodSeconds: 1},
				},
				{Name: "crasher", Image: "busybox", Args: []string{"-c", "echo crashing; exit 2"}},
				{Name: "unknown", Image: "nginx:1.25"},
			},
		},
	}
	cm := &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "shop"}, Data: map[string]string{"key": "value-from-cm"}}
	client := fake.NewClientset(pod, cm)
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	if err := indexer.Add(pod); err != nil {
		t.Fatal(err)
	}
	k := &Kubelet{
		cfg: cfg, log: log, client: client, images: images,
		rt:       &Runtime{SelfBinary: self, CgroupRoot: DetectCgroupRoot(), CgroupParent: cfg.CgroupParent, Log: log},
		recorder: record.NewFakeRecorder(1000),
		pods:     map[types.UID]*podState{},
	}
	k.tokens = &tokenManager{k: k, cache: map[string]*cachedToken{}}
	k.podLister = corelisters.NewPodLister(indexer)
	ctx := context.Background()
	t.Cleanup(func() {
		if ps := k.lookupPod(pod.UID); ps != nil {
			for _, cs := range ps.containers {
				if cs.cur != nil {
					k.rt.Stop(cs.cur, 0)
				}
			}
			k.teardownPod(ctx, ps)
		}
		if k.rt.CgroupRoot != "" {
			_ = os.Remove(filepath.Join(k.rt.CgroupRoot, cfg.CgroupParent))
		}
	})

	// sync runs one reconcile and feeds the posted status back to the lister.
	sync := func() *v1.Pod {
		if _, err := k.syncKey(ctx, "shop/web"); err != nil {
			t.Logf("sync: %v", err)
		}
		p, err := client.CoreV1().Pods("shop").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return nil
		}
		_ = indexer.Update(p)
		return p
	}
	status := func(p *v1.Pod, name string) v1.ContainerStatus {
		for _, s := range p.Status.ContainerStatuses {
			if s.Name == name {
				return s
			}
		}
		return v1.ContainerStatus{}
	}
	waitFor(t, "main running, crasher restarted, unknown image reported", 30*time.Second, func() (bool, string) {
		p := sync()
		m, c, u := status(p, "main"), status(p, "crasher"), status(p, "unknown")
		ok := m.State.Running != nil && c.RestartCount >= 1 && c.State.Waiting != nil && c.State.Waiting.Reason == "CrashLoopBackOff" &&
			u.State.Waiting != nil && strings.Contains(u.State.Waiting.Message, `image "nginx:1.25" is not in the image map`)
		return ok, fmt.Sprintf("phase=%s main=%+v crasher=%+v unknown=%+v", p.Status.Phase, m.State, c.State, u.State)
	})
	p := sync()
	if p.Status.Phase != v1.PodPending {
		// The unknown image keeps a container waiting: Pending, like the kubelet.
		t.Errorf("phase %s, want Pending", p.Status.Phase)
	}
	if p.Status.PodIP != "127.0.0.1" || p.Status.HostIP != "127.0.0.1" || p.Status.StartTime == nil {
		t.Errorf("ips/startTime: %+v", p.Status)
	}
	m := status(p, "main")
	if !strings.HasPrefix(m.ContainerID, "weft://") || m.Ready {
		t.Errorf("main status: %+v", m)
	}
	if c := status(p, "crasher"); c.LastTerminationState.Terminated == nil || c.LastTerminationState.Terminated.ExitCode != 2 {
		t.Errorf("crasher last state: %+v", c.LastTerminationState)
	}

	ps := k.lookupPod(pod.UID)
	logDir, _, err := k.logSource("shop", "web", "main")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "main log", 10*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(filepath.Join(logDir, "0.log"))
		return bytes.Contains(b, []byte("stdout F pod=web")) && bytes.Contains(b, []byte("stdout F value-from-cm")), string(b)
	})
	if _, err := os.Stat(filepath.Join(root, "var/lib/weft/written")); err != nil {
		t.Errorf("hostPath write not under the node root: %v", err)
	}

	// Readiness follows the exec probe.
	ps.mu.Lock()
	mainCtr := ps.containers["main"].cur
	ps.mu.Unlock()
	var out bytes.Buffer
	if err := k.rt.Exec(ctx, &mainCtr.State, []string{"touch", "/scratch/ready"}, ExecIO{Stdout: &out, Stderr: &out}); err != nil {
		t.Fatalf("exec: %v %s", err, out.String())
	}
	waitFor(t, "main ready", 20*time.Second, func() (bool, string) {
		p := sync()
		return status(p, "main").Ready, fmt.Sprintf("%+v", status(p, "main"))
	})

	// exec over SPDY through the kubelet API, as the apiserver does it.
	srv := httptest.NewServer(newHandler(k, k.logSource))
	defer srv.Close()
	execIn := func(cmd ...string) (string, error) {
		q := url.Values{"output": {"1"}, "error": {"1"}, "command": cmd}
		u, _ := url.Parse(srv.URL + "/exec/shop/web/main?" + q.Encode())
		ex, err := remotecommand.NewSPDYExecutor(&rest.Config{Host: srv.URL}, "POST", u)
		if err != nil {
			return "", err
		}
		var so, se bytes.Buffer
		ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		err = ex.StreamWithContext(ectx, remotecommand.StreamOptions{Stdout: &so, Stderr: &se})
		return so.String() + se.String(), err
	}
	if out, err := execIn("cat", "/cfg/key"); err != nil || out != "value-from-cm" {
		t.Errorf("SPDY exec cat = %q, %v", out, err)
	}
	_, err = execIn("sh", "-c", "exit 3")
	var ce utilexecclient.CodeExitError
	if !errors.As(err, &ce) || ce.Code != 3 {
		t.Errorf("SPDY exec exit 3: got %#v", err)
	}
	if _, err := execIn("no-such-binary"); err == nil || !strings.Contains(err.Error(), "executable file not found") {
		t.Errorf("SPDY exec of a missing command: got %v", err)
	}

	// A restarted kubelet adopts the running container instead of
	// restarting it.
	k2 := &Kubelet{cfg: cfg, log: log, client: client, images: images, rt: k.rt, recorder: record.NewFakeRecorder(1000),
		pods: map[types.UID]*podState{}, podLister: k.podLister}
	k2.tokens = &tokenManager{k: k2, cache: map[string]*cachedToken{}}
	k2.recoverPods(ctx)
	ps2 := k2.lookupPod(pod.UID)
	if ps2 == nil {
		t.Fatal("restarted kubelet did not recover the pod")
	}
	ps2.mu.Lock()
	adopted := ps2.containers["main"].cur
	restarts := ps2.containers["crasher"].restartCount
	for _, cs := range ps2.containers {
		if cs.cancelProbes != nil {
			cs.cancelProbes()
		}
	}
	ps2.mu.Unlock()
	if adopted == nil || adopted.State.PID != mainCtr.State.PID {
		t.Errorf("main not adopted: %+v", adopted)
	}
	if restarts < 1 {
		t.Errorf("crasher restartCount lost across restart: %d", restarts)
	}

	// Graceful deletion: containers stopped, pod dir removed, pod deleted.
	now := metav1.Now()
	p = sync()
	p.DeletionTimestamp, p.DeletionGracePeriodSeconds = &now, ptrTo[int64](5)
	_ = indexer.Update(p)
	if _, err := k.syncKey(ctx, "shop/web"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pod deleted from the API", 30*time.Second, func() (bool, string) {
		_, err := client.CoreV1().Pods("shop").Get(ctx, "web", metav1.GetOptions{})
		return err != nil, fmt.Sprint(err)
	})
	waitFor(t, "pod state forgotten", 10*time.Second, func() (bool, string) { return k.lookupPod(pod.UID) == nil, "" })
	if sameProcess(mainCtr.State.PID, mainCtr.State.PIDStart) {
		t.Errorf("main container still running")
	}
	if _, err := os.Stat(ps.dir); !os.IsNotExist(err) {
		t.Errorf("pod dir %s not removed: %v", ps.dir, err)
	}
}
