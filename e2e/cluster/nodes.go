package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/pkg/atomicfile"
)

// cniPlugins are copied into every node's CNI bin dir; the mesh's DaemonSet
// later adds weft-cni beside them, as on a real node.
var cniPlugins = []string{"ptp", "bridge", "host-local", "loopback", "portmap"}

// cniConflist renders node i's CNI configuration: ptp veths (one host-side
// veth per pod, which is where the mesh attaches its capture programs) with
// host-local IPAM from the node's pod CIDR, state kept in the node's root.
func cniConflist(root string, p plan, i int) ([]byte, error) {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "weft-pod-network",
		"plugins": []any{
			map[string]any{
				"type":   "ptp",
				"mtu":    1500,
				"ipMasq": false,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": p.nodePods[i].String()}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": filepath.Join(root, "var/lib/cni/networks"),
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// nodeRootDirs exist on every node root: what a kubelet host would have.
var nodeRootDirs = []string{"etc/cni/net.d", "opt/cni/bin", "var/lib/kubelet", "var/lib/cni", "var/log/pods", "var/run/weft", "sys/fs/bpf"}

// prepareNodeRoot creates node i's host root: CNI config and plugins and a
// bpffs instance of its own, mounted in the host mount namespace so it
// outlives every process (a bpffs mounted in a private mount namespace
// vanishes with it, and the node agent's pins with it) and two nodes never
// see each other's pins.
func prepareNodeRoot(l layout, assets string, p plan, i int) error {
	root := l.nodeRoot(nodeName(i))
	for _, d := range nodeRootDirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	conf, err := cniConflist(root, p, i)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "etc/cni/net.d/10-weft.conflist"), conf, 0o644); err != nil {
		return err
	}
	for _, plugin := range cniPlugins {
		if err := installPlugin(filepath.Join(assets, plugin), filepath.Join(root, "opt/cni/bin", plugin)); err != nil {
			return fmt.Errorf("install CNI plugin %s: %w", plugin, err)
		}
	}
	bpffs := filepath.Join(root, "sys/fs/bpf")
	if err := unix.Mount("bpf", bpffs, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", bpffs, err)
	}
	return nil
}

func installPlugin(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return atomicfile.Copy(dst, in, 0o755)
}

// kubeletArgs is the weft-kubelet command line for node i.
func kubeletArgs(l layout, c *Config, p plan, i int, imageMaps []string) []string {
	n := nodeName(i)
	root := l.nodeRoot(n)
	args := []string{
		"--node-name=" + n,
		"--kubeconfig=" + l.kubeconfig("kubelet-"+n),
		"--node-ip=" + p.nodeAddr[i].String(),
		"--pod-cidr=" + p.nodePods[i].String(),
		"--root-dir=" + root,
		"--state-dir=" + filepath.Join(root, "var/lib/kubelet"),
		"--cni-conf-dir=" + filepath.Join(root, "etc/cni/net.d"),
		"--cni-bin-dir=" + filepath.Join(root, "opt/cni/bin"),
		"--cni-cache-dir=" + filepath.Join(root, "var/lib/cni/cache"),
		"--cluster-dns=" + clusterDNS,
		"--cluster-domain=" + clusterDomain,
		"--tls-cert-file=" + l.pki("kubelet-serving-"+n+".crt"),
		"--tls-private-key-file=" + l.pki("kubelet-serving-"+n+".key"),
		"--client-ca-file=" + l.pki("ca.crt"),
		"--port=10250",
		"--netns-prefix=" + podNSPrefix(c.Name, i),
		"--cgroup-parent=" + filepath.Join(clusterCgroupPath(c.Name), n, "pods"),
		"--bin-dir=" + c.BinDir,
	}
	if l := c.nodeLabels(i); l != "" {
		args = append(args, "--node-labels="+l)
	}
	for _, m := range imageMaps {
		args = append(args, "--image-map="+m)
	}
	return args
}
