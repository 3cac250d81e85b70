package kubelet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
)

// TestKubeletSyncCNIPod runs a pod with its own netns wired by the CNI
// reference plugins. The bridge it creates must not touch the machine's own
// namespace, so the test re-runs itself inside a scratch netns (`ip netns
// exec`), with WEFT_TEST_CNI_BIN pointing at the plugins (make kube-assets
// builds them; `make test` passes WEFT_KUBE_ASSETS).
func TestKubeletSyncCNIPod(t *testing.T) {
	requirePrivileged(t)
	cniBin := os.Getenv("WEFT_TEST_CNI_BIN")
	if cniBin == "" {
		runInScratchNetns(t)
		return
	}
	self, _ := os.Executable()
	root := t.TempDir()
	id := newID()[:8]
	confDir := filepath.Join(root, "etc/cni/net.d")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"weft-test","plugins":[
 {"type":"bridge","bridge":"wt%s","isGateway":true,"ipMasq":false,
  "ipam":{"type":"host-local","ranges":[[{"subnet":"10.99.0.0/24"}]],"dataDir":"%s/var/lib/cni/networks"}}]}`, id[:6], root)
	if err := os.WriteFile(filepath.Join(confDir, "10-test.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// A node runtime dir (a node agent's hostPath) makes the plugins run
	// through cni-exec, in a mount namespace with it over /run/weft.
	if err := os.MkdirAll(filepath.Join(root, "var/run/weft"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat("/run/weft"); errors.Is(err, os.ErrNotExist) {
		t.Cleanup(func() { _ = os.Remove("/run/weft") })
	}
	mapFile := filepath.Join(root, "images.yaml")
	_ = os.WriteFile(mapFile, []byte("images:\n- image: busybox\n  entrypoint: [\"/bin/sh\"]\n"), 0o644)
	images, _ := LoadImageMaps([]string{mapFile}, "")
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg := Config{NodeName: "node-t", NodeIP: "10.250.0.10", RootDir: root, StateDir: filepath.Join(root, "state"),
		CNIConfDir: confDir, CNIBinDir: cniBin, CNICacheDir: filepath.Join(root, "var/lib/cni/cache"),
		ClusterDNS: []string{"10.96.0.10"}, ClusterDomain: "cluster.local", CgroupParent: "weft-kubelet-test-" + id,
		NetnsDir: "/run/netns", NetnsPrefix: "weft-test-" + id + "-", SelfBinary: self, Logger: log}
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "net", Namespace: "shop", UID: types.UID("uid-" + id)},
		Spec: v1.PodSpec{NodeName: "node-t", TerminationGracePeriodSeconds: ptrTo[int64](2),
			Containers: []v1.Container{{Name: "main", Image: "busybox", Args: []string{"-c", "exec sleep 1000"}}}},
	}
	client := fake.NewClientset(pod)
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	_ = indexer.Add(pod)
	k := &Kubelet{cfg: cfg, log: log, client: client, images: images,
		rt:       &Runtime{SelfBinary: self, CgroupRoot: DetectCgroupRoot(), CgroupParent: cfg.CgroupParent, Log: log},
		recorder: record.NewFakeRecorder(1000), pods: map[types.UID]*podState{},
		podLister: corelisters.NewPodLister(indexer)}
	k.tokens = &tokenManager{k: k, cache: map[string]*cachedToken{}}
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
	})
	var p *v1.Pod
	waitFor(t, "pod running with an IP", 30*time.Second, func() (bool, string) {
		_, _ = k.syncKey(ctx, "shop/net")
		p, _ = client.CoreV1().Pods("shop").Get(ctx, "net", metav1.GetOptions{})
		_ = indexer.Update(p)
		return p.Status.Phase == v1.PodRunning && strings.HasPrefix(p.Status.PodIP, "10.99.0."), fmt.Sprintf("%+v", p.Status)
	})
	ps := k.lookupPod(pod.UID)
	ps.mu.Lock()
	ctr := ps.containers["main"].cur
	netns := ps.sandbox.Netns
	ps.mu.Unlock()
	var out bytes.Buffer
	if err := k.rt.Exec(ctx, &ctr.State, []string{"cat", "/sys/class/net/eth0/address", "/etc/resolv.conf"}, ExecIO{Stdout: &out, Stderr: &out}); err != nil {
		t.Fatalf("exec: %v %s", err, out.String())
	}
	if !strings.Contains(out.String(), "nameserver 10.96.0.10") {
		t.Errorf("resolv.conf in pod: %s", out.String())
	}
	// The kubelet (node netns) reaches the pod IP.
	if err := tcpProbe(ctx, p.Status.PodIP, 1); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("connect to the pod IP: %v (want connection refused)", err)
	}
	now := metav1.Now()
	p.DeletionTimestamp, p.DeletionGracePeriodSeconds = &now, ptrTo[int64](2)
	_ = indexer.Update(p)
	_, _ = k.syncKey(ctx, "shop/net")
	waitFor(t, "pod gone", 30*time.Second, func() (bool, string) { return k.lookupPod(pod.UID) == nil, "" })
	if _, err := os.Stat(netns); !os.IsNotExist(err) {
		t.Errorf("netns %s left behind: %v", netns, err)
	}
	if ips, _ := filepath.Glob(filepath.Join(root, "var/lib/cni/networks/weft-test/10.*")); len(ips) != 0 {
		t.Errorf("IP not released by CNI DEL: %v", ips)
	}
}

// runInScratchNetns re-runs the calling test inside a new network namespace
// with WEFT_TEST_CNI_BIN set to the kube-assets CNI plugins.
func runInScratchNetns(t *testing.T) {
	assets := os.Getenv("WEFT_KUBE_ASSETS")
	if assets == "" {
		skipOrFail(t, "needs the CNI reference plugins: set WEFT_KUBE_ASSETS to _output/kube-assets/bin (make kube-assets)")
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(assets, p)); err != nil {
			skipOrFail(t, fmt.Sprintf("CNI plugin %s missing in %s (make kube-assets)", p, assets))
		}
	}
	ns := "weft-kubelet-test-" + newID()[:6]
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "delete", ns).Run()
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "WEFT_TEST_CNI_BIN="+assets)
	out, err := cmd.CombinedOutput()
	t.Logf("inside netns %s:\n%s", ns, out)
	if err != nil {
		t.Fatalf("test inside the scratch netns failed: %v", err)
	}
	if !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatal("test inside the scratch netns did not pass")
	}
}
