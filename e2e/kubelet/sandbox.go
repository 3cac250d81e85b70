package kubelet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"

	"github.com/weft-mesh/weft/pkg/atomicfile"
	"github.com/weft-mesh/weft/pkg/mountinfo"
)

// sandboxState is the pod-level state (<pod dir>/sandbox.json): the netns
// and what CNI gave it, needed to tear the pod down after a restart.
type sandboxState struct {
	ID          string   `json:"id"`
	UID         string   `json:"uid"`
	Namespace   string   `json:"namespace"`
	Name        string   `json:"name"`
	HostNetwork bool     `json:"hostNetwork"`
	Netns       string   `json:"netns,omitempty"`
	CNINetwork  string   `json:"cniNetwork,omitempty"`
	PodIPs      []string `json:"podIPs,omitempty"`
}

func loadSandbox(podDir string) (*sandboxState, error) {
	data, err := os.ReadFile(filepath.Join(podDir, "sandbox.json"))
	if err != nil {
		return nil, err
	}
	var sb sandboxState
	if err := json.Unmarshal(data, &sb); err != nil {
		return nil, err
	}
	return &sb, nil
}

func saveSandbox(podDir string, sb *sandboxState) error {
	data, _ := json.MarshalIndent(sb, "", "  ")
	return atomicfile.Write(filepath.Join(podDir, "sandbox.json"), data, 0o644)
}

// createNetns makes a named network namespace like `ip netns add`: an
// empty file in dir bind-mounted from a thread that unshared its netns.
// dir is made a shared mount so that unmounting propagates to the copies
// held by container mount namespaces.
// sysctls (name -> value, net.* only: the namespaced ones a pod's
// securityContext.sysctls may set, e.g. net.ipv4.ip_unprivileged_port_start)
// are written in the new netns, as the real kubelet's runtime does.
func createNetns(dir, name string, sysctls map[string]string) (string, error) {
	if err := ensureSharedMount(dir); err != nil {
		return "", err
	}
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return "", fmt.Errorf("creating netns file: %w", err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread is in the new netns and must die.
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare netns: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind-mounting netns: %w", err)
			return
		}
		if err := setLinkUp("lo"); err != nil {
			errc <- err
			return
		}
		errc <- writeNetSysctls(sysctls)
	}()
	if err := <-errc; err != nil {
		_ = deleteNetns(path)
		return "", err
	}
	return path, nil
}

// writeNetSysctls writes net.* sysctls in the calling thread's netns
// (/proc/sys/net is the opening thread's netns).
func writeNetSysctls(sysctls map[string]string) error {
	for k, v := range sysctls {
		if !strings.HasPrefix(k, "net.") {
			return fmt.Errorf("sysctl %s: only net.* sysctls are supported", k)
		}
		if err := os.WriteFile("/proc/sys/"+strings.ReplaceAll(k, ".", "/"), []byte(v), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
		}
	}
	return nil
}

// setLinkUp brings an interface up in the calling thread's netns.
func setLinkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("getting %s flags: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("setting %s up: %w", name, err)
	}
	return nil
}

func deleteNetns(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmounting netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// ensureSharedMount makes dir a mount point with shared propagation.
func ensureSharedMount(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		if isMountPoint(dir) {
			return nil
		}
	} else if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("making %s shared: %w", dir, err)
	}
	if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mounting %s on itself: %w", dir, err)
	}
	if err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("making %s shared: %w", dir, err)
	}
	return nil
}

func isMountPoint(dir string) bool {
	mps, err := mountinfo.MountPoints()
	if err != nil {
		return false
	}
	clean := filepath.Clean(dir)
	if real, err := filepath.EvalSymlinks(clean); err == nil {
		clean = real
	}
	for _, mp := range mps {
		if mp == clean {
			return true
		}
	}
	return false
}

// loadCNINetwork loads the first network configuration list in dir (sorted
// by name), as container runtimes do. It is re-read for every ADD so that
// plugins chained in later take effect. Only .conflist files count: the
// single-plugin .conf format is deprecated in CNI.
func loadCNINetwork(dir string) (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(dir, []string{".conflist"})
	if err != nil {
		return nil, fmt.Errorf("reading CNI config dir %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no CNI .conflist in %s (the CNI plugin's DaemonSet may not have written it yet)", dir)
	}
	sort.Strings(files)
	list, err := libcni.ConfListFromFile(files[0])
	if err != nil {
		return nil, fmt.Errorf("loading CNI config %s: %w", files[0], err)
	}
	return list, nil
}

func (k *Kubelet) cniRuntimeConf(sb *sandboxState, pod *v1.Pod) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{
		ContainerID: sb.ID,
		NetNS:       sb.Netns,
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", sb.Namespace},
			{"K8S_POD_NAME", sb.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", sb.ID},
			{"K8S_POD_UID", sb.UID},
		},
		CapabilityArgs: map[string]interface{}{},
	}
	if pod != nil {
		var pms []map[string]interface{}
		for _, c := range pod.Spec.Containers {
			for _, p := range c.Ports {
				if p.HostPort == 0 {
					continue
				}
				proto := strings.ToLower(string(p.Protocol))
				if proto == "" {
					proto = "tcp"
				}
				pm := map[string]interface{}{"hostPort": p.HostPort, "containerPort": p.ContainerPort, "protocol": proto}
				if p.HostIP != "" {
					pm["hostIP"] = p.HostIP
				}
				pms = append(pms, pm)
			}
		}
		if len(pms) > 0 {
			rt.CapabilityArgs["portMappings"] = pms
		}
		if len(pod.Annotations) > 0 {
			rt.CapabilityArgs["io.kubernetes.cri.pod-annotations"] = pod.Annotations
		}
	}
	return rt
}

// cniConfig runs plugins with the node's runtime directories (see
// nodeCNIExec): a plugin reaching a node agent at /var/run/<dir> finds the
// one whose hostPath is <RootDir>/var/run/<dir>.
func (k *Kubelet) cniConfig() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir([]string{k.cfg.CNIBinDir}, k.cfg.CNICacheDir,
		newNodeCNIExec(k.cfg.SelfBinary, k.cfg.RootDir))
}

// cniAdd wires the netns and returns the pod IPs.
func (k *Kubelet) cniAdd(ctx context.Context, sb *sandboxState, pod *v1.Pod) ([]string, error) {
	list, err := loadCNINetwork(k.cfg.CNIConfDir)
	if err != nil {
		return nil, err
	}
	sb.CNINetwork = list.Name
	res, err := k.cniConfig().AddNetworkList(ctx, list, k.cniRuntimeConf(sb, pod))
	if err != nil {
		return nil, fmt.Errorf("CNI ADD (%s): %w", list.Name, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("CNI result: %w", err)
	}
	var ips []string
	for _, ip := range r.IPs {
		// Prefer addresses on interfaces inside the pod's netns.
		if ip.Interface != nil && *ip.Interface < len(r.Interfaces) && r.Interfaces[*ip.Interface].Sandbox == "" {
			continue
		}
		ips = append(ips, ip.Address.IP.String())
	}
	if len(ips) == 0 {
		for _, ip := range r.IPs {
			ips = append(ips, ip.Address.IP.String())
		}
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("CNI network %s returned no IP address", list.Name)
	}
	// IPv4 first, as the real kubelet reports the primary family first.
	sort.SliceStable(ips, func(i, j int) bool { return !strings.Contains(ips[i], ":") && strings.Contains(ips[j], ":") })
	return ips, nil
}

// cniDel runs DEL with the config cached at ADD time (the conf dir may have
// changed since), falling back to the current config.
func (k *Kubelet) cniDel(ctx context.Context, sb *sandboxState) error {
	cfg := k.cniConfig()
	rt := k.cniRuntimeConf(sb, nil)
	var list *libcni.NetworkConfigList
	if sb.CNINetwork != "" {
		if data, cachedRt, err := cfg.GetNetworkListCachedConfig(&libcni.NetworkConfigList{Name: sb.CNINetwork}, rt); err == nil && data != nil {
			if l, err := libcni.ConfListFromBytes(data); err == nil {
				list = l
				if cachedRt != nil {
					rt = cachedRt
				}
			}
		}
	}
	if list == nil {
		l, err := loadCNINetwork(k.cfg.CNIConfDir)
		if err != nil {
			return err
		}
		list = l
	}
	if err := cfg.DelNetworkList(ctx, list, rt); err != nil {
		return fmt.Errorf("CNI DEL (%s): %w", list.Name, err)
	}
	return nil
}

// Pod /etc files.

func podHostname(pod *v1.Pod) (hostname, fqdn string) {
	hostname = pod.Name
	if pod.Spec.Hostname != "" {
		hostname = pod.Spec.Hostname
	}
	if len(hostname) > 63 {
		hostname = strings.TrimRight(hostname[:63], "-.")
	}
	if pod.Spec.Subdomain != "" {
		fqdn = fmt.Sprintf("%s.%s.%s.svc", hostname, pod.Spec.Subdomain, pod.Namespace)
	}
	return hostname, fqdn
}

// renderHosts renders /etc/hosts like the kubelet's managed hosts file.
func renderHosts(pod *v1.Pod, podIPs []string, nodeName, nodeIP, clusterDomain string) []byte {
	var b strings.Builder
	b.WriteString("# Kubernetes-managed hosts file.\n")
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
	if pod.Spec.HostNetwork {
		fmt.Fprintf(&b, "%s\t%s\n", nodeIP, nodeName)
	} else {
		hostname, fqdn := podHostname(pod)
		for _, ip := range podIPs {
			if fqdn != "" {
				fmt.Fprintf(&b, "%s\t%s.%s\t%s\n", ip, fqdn, clusterDomain, hostname)
			} else {
				fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
			}
		}
	}
	if len(pod.Spec.HostAliases) > 0 {
		b.WriteString("\n# Entries added by HostAliases.\n")
		for _, ha := range pod.Spec.HostAliases {
			fmt.Fprintf(&b, "%s\t%s\n", ha.IP, strings.Join(ha.Hostnames, "\t"))
		}
	}
	return []byte(b.String())
}

// renderResolvConf implements dnsPolicy/dnsConfig. nodeResolv is the
// node's own resolv.conf (<root-dir>/etc/resolv.conf) if any; without it,
// pods using the node's DNS get the cluster DNS without search paths.
func renderResolvConf(pod *v1.Pod, clusterDNS []string, clusterDomain string, nodeResolv []byte) []byte {
	var servers, searches []string
	options := map[string]string{}
	var optOrder []string
	setOpt := func(name, value string) {
		if _, ok := options[name]; !ok {
			optOrder = append(optOrder, name)
		}
		options[name] = value
	}
	policy := pod.Spec.DNSPolicy
	if policy == "" {
		policy = v1.DNSClusterFirst
	}
	clusterFirst := (policy == v1.DNSClusterFirst && !pod.Spec.HostNetwork) || policy == v1.DNSClusterFirstWithHostNet
	switch {
	case policy == v1.DNSNone:
	case clusterFirst && len(clusterDNS) > 0:
		servers = append(servers, clusterDNS...)
		searches = []string{pod.Namespace + ".svc." + clusterDomain, "svc." + clusterDomain, clusterDomain}
		setOpt("ndots", "5")
	default:
		if len(nodeResolv) > 0 {
			for _, line := range strings.Split(string(nodeResolv), "\n") {
				f := strings.Fields(line)
				if len(f) < 2 {
					continue
				}
				switch f[0] {
				case "nameserver":
					servers = append(servers, f[1])
				case "search":
					searches = append(searches, f[1:]...)
				case "options":
					for _, o := range f[1:] {
						n, v, _ := strings.Cut(o, ":")
						setOpt(n, v)
					}
				}
			}
		} else {
			servers = append(servers, clusterDNS...)
		}
	}
	if dc := pod.Spec.DNSConfig; dc != nil {
		servers = append(servers, dc.Nameservers...)
		searches = append(searches, dc.Searches...)
		for _, o := range dc.Options {
			v := ""
			if o.Value != nil {
				v = *o.Value
			}
			setOpt(o.Name, v)
		}
	}
	var b strings.Builder
	if len(searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(dedupe(searches), " "))
	}
	for _, s := range dedupe(servers) {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(optOrder) > 0 {
		var opts []string
		for _, n := range optOrder {
			if options[n] != "" {
				opts = append(opts, n+":"+options[n])
			} else {
				opts = append(opts, n)
			}
		}
		fmt.Fprintf(&b, "options %s\n", strings.Join(opts, " "))
	}
	return []byte(b.String())
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
