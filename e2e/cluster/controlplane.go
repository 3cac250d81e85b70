package cluster

import (
	"fmt"
	"net"
	"path/filepath"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// layout names every file of a cluster's state directory.
type layout struct{ dir string }

func (l layout) pki(name string) string { return filepath.Join(l.dir, "pki", name) }
func (l layout) logs() string           { return filepath.Join(l.dir, "logs") }
func (l layout) etcdData() string       { return filepath.Join(l.dir, "etcd") }
func (l layout) kubeconfig(user string) string {
	return filepath.Join(l.dir, "kubeconfigs", user+".kubeconfig")
}
func (l layout) adminKubeconfig() string { return filepath.Join(l.dir, "kubeconfig") }
func (l layout) nodeRoot(node string) string {
	return filepath.Join(l.dir, "nodes", node, "root")
}
func (l layout) nodeDir(node string) string { return filepath.Join(l.dir, "nodes", node) }
func (l layout) stateFile() string          { return filepath.Join(l.dir, "state.json") }
func (l layout) addonsImageMap() string     { return filepath.Join(l.dir, "addons-images.yaml") }

// certSpecs lists the certificates the cluster needs. Component identities
// are the ones Kubernetes' default RBAC and Node authorizer expect.
func certSpecs(p plan) []certSpec {
	specs := []certSpec{
		{name: "apiserver", cn: "kube-apiserver", server: true,
			dns: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + clusterDomain, "localhost"},
			ips: []net.IP{net.ParseIP("127.0.0.1"), net.IP(p.apiAddr.AsSlice()), net.ParseIP(kubernetesVIP)}},
		{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true},
		{name: "admin", cn: "weft-admin", orgs: []string{"system:masters"}, client: true},
		{name: "controller-manager", cn: "system:kube-controller-manager", client: true},
		{name: "scheduler", cn: "system:kube-scheduler", client: true},
		{name: "kube-proxy", cn: "system:kube-proxy", client: true},
	}
	for i, addr := range p.nodeAddr {
		n := nodeName(i)
		specs = append(specs,
			certSpec{name: "kubelet-" + n, cn: "system:node:" + n, orgs: []string{"system:nodes"}, client: true},
			certSpec{name: "kubelet-serving-" + n, cn: "system:node:" + n, orgs: []string{"system:nodes"}, server: true,
				dns: []string{n}, ips: []net.IP{net.IP(addr.AsSlice())}})
	}
	return specs
}

// writeKubeconfig writes a kubeconfig for user (cert/key under pki/) that
// talks to server.
func writeKubeconfig(l layout, path, server, user string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["weft"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: l.pki("ca.crt")}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificate: l.pki(user + ".crt"), ClientKey: l.pki(user + ".key")}
	cfg.Contexts["weft"] = &clientcmdapi.Context{Cluster: "weft", AuthInfo: user}
	cfg.CurrentContext = "weft"
	return clientcmd.WriteToFile(*cfg, path)
}

func etcdArgs(l layout) []string {
	return []string{
		"--name=weft", "--data-dir=" + l.etcdData(),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=weft=http://127.0.0.1:2380",
		"--log-level=warn", "--quota-backend-bytes=2147483648",
		// A throwaway cluster: trade durability for speed.
		"--unsafe-no-fsync",
	}
}

func apiserverArgs(l layout, p plan) []string {
	return []string{
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=0.0.0.0", fmt.Sprintf("--secure-port=%d", apiPort),
		"--advertise-address=" + p.apiAddr.String(),
		// The default lease reconciler refuses private/loopback-only setups;
		// the harness publishes the kubernetes Service's endpoints itself.
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range=" + serviceCIDR,
		"--tls-cert-file=" + l.pki("apiserver.crt"), "--tls-private-key-file=" + l.pki("apiserver.key"),
		"--client-ca-file=" + l.pki("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc." + clusterDomain,
		"--service-account-key-file=" + l.pki("sa.pub"),
		"--service-account-signing-key-file=" + l.pki("sa.key"),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--kubelet-client-certificate=" + l.pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + l.pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority=" + l.pki("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--profiling=false",
	}
}

func controllerManagerArgs(l layout, p plan) []string {
	kc := l.kubeconfig("controller-manager")
	return []string{
		"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
		"--bind-address=127.0.0.1",
		"--leader-elect=false",
		// Defaults plus the token cleaner (off by default upstream).
		"--controllers=*,tokencleaner",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + l.pki("sa.key"),
		"--root-ca-file=" + l.pki("ca.crt"),
		"--cluster-signing-cert-file=" + l.pki("ca.crt"), "--cluster-signing-key-file=" + l.pki("ca.key"),
		"--service-cluster-ip-range=" + serviceCIDR,
		"--cluster-cidr=" + p.podCIDR.String(),
		// Nodes bring their own podCIDR (the harness assigns it).
		"--allocate-node-cidrs=false",
		"--profiling=false",
	}
}

func schedulerArgs(l layout) []string {
	kc := l.kubeconfig("scheduler")
	return []string{
		"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
		"--bind-address=127.0.0.1", "--leader-elect=false", "--profiling=false",
	}
}

// kubeProxyConfig renders kube-proxy's configuration file for a node.
// Conntrack sizing is left alone: nf_conntrack_max is global to the machine.
func kubeProxyConfig(l layout, p plan, node string) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %s
hostnameOverride: %s
clusterCIDR: %s
mode: iptables
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, l.kubeconfig("kube-proxy"), node, p.podCIDR)
}
