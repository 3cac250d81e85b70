package cluster

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestPlanAddressesDoNotOverlap(t *testing.T) {
	for _, idx := range []int{0, 9} {
		p := newPlan(idx, 3)
		if !p.fabric.Contains(p.gateway) || !p.fabric.Contains(p.apiAddr) {
			t.Fatalf("index %d: gateway/api outside fabric %s", idx, p.fabric)
		}
		seen := map[string]bool{p.gateway.String(): true, p.apiAddr.String(): true}
		for i, a := range p.nodeAddr {
			if seen[a.String()] || !p.fabric.Contains(a) {
				t.Errorf("index %d node %d: address %s reused or outside fabric", idx, i, a)
			}
			seen[a.String()] = true
			if !p.podCIDR.Contains(p.nodePods[i].Addr()) || p.nodePods[i].Bits() != 24 {
				t.Errorf("node %d pod CIDR %s not a /24 inside %s", i, p.nodePods[i], p.podCIDR)
			}
			if p.fabric.Overlaps(p.nodePods[i]) {
				t.Errorf("node %d pod CIDR overlaps the fabric", i)
			}
		}
	}
	for i := 0; i <= MaxIndex; i++ {
		a := newPlan(i, 8)
		if a.podCIDR.Addr().As4()[1] < 240 || !a.podCIDR.Contains(a.nodePods[7].Addr()) {
			t.Errorf("index %d: pod CIDR %s (node 7: %s)", i, a.podCIDR, a.nodePods[7])
		}
		for j := i + 1; j <= MaxIndex; j++ {
			if b := newPlan(j, 8); a.fabric.Overlaps(b.fabric) || a.podCIDR.Overlaps(b.podCIDR) {
				t.Errorf("indexes %d and %d share addresses: %+v %+v", i, j, a, b)
			}
		}
	}
}

func TestCNIConflistUsesNodeCIDRAndRoot(t *testing.T) {
	p := newPlan(0, 2)
	data, err := cniConflist("/nodes/node-1/root", p, 1)
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		CNIVersion string `json:"cniVersion"`
		Plugins    []struct {
			Type string `json:"type"`
			IPAM struct {
				Type    string                `json:"type"`
				Ranges  [][]map[string]string `json:"ranges"`
				DataDir string                `json:"dataDir"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &conf); err != nil {
		t.Fatal(err)
	}
	if len(conf.Plugins) == 0 || conf.Plugins[0].Type != "ptp" {
		t.Fatalf("first plugin should be ptp: %s", data)
	}
	ipam := conf.Plugins[0].IPAM
	if ipam.Type != "host-local" || ipam.Ranges[0][0]["subnet"] != p.nodePods[1].String() {
		t.Errorf("ipam %+v, want host-local on %s", ipam, p.nodePods[1])
	}
	if !strings.HasPrefix(ipam.DataDir, "/nodes/node-1/root/") {
		t.Errorf("IPAM state %q outside the node root: nodes would share allocations", ipam.DataDir)
	}
}

func TestCertificatesChainAndNames(t *testing.T) {
	dir := t.TempDir()
	ca, err := newCA()
	if err != nil {
		t.Fatal(err)
	}
	p := newPlan(0, 2)
	if err := ca.issueAll(dir, certSpecs(p)); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	load := func(name string) *x509.Certificate {
		data, err := os.ReadFile(filepath.Join(dir, name+".crt"))
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(data)
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	api := load("apiserver")
	for _, host := range []string{"kubernetes.default.svc", "127.0.0.1", kubernetesVIP, p.apiAddr.String()} {
		if _, err := api.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("apiserver cert for %s: %v", host, err)
		}
	}
	kubelet := load("kubelet-node-1")
	if kubelet.Subject.CommonName != "system:node:node-1" || !slices.Equal(kubelet.Subject.Organization, []string{"system:nodes"}) {
		t.Errorf("kubelet client identity %v: the Node authorizer needs system:node:<name> in system:nodes", kubelet.Subject)
	}
	if _, err := kubelet.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("kubelet client cert: %v", err)
	}
	serving := load("kubelet-serving-node-1")
	if _, err := serving.Verify(x509.VerifyOptions{Roots: roots, DNSName: p.nodeAddr[1].String()}); err != nil {
		t.Errorf("kubelet serving cert for the node IP: %v", err)
	}
	if info, err := os.Stat(filepath.Join(dir, "apiserver.key")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("private key must be owner-only: %v %v", info.Mode(), err)
	}
}

func TestServiceAccountKeyFormats(t *testing.T) {
	dir := t.TempDir()
	if err := writeServiceAccountKey(dir); err != nil {
		t.Fatal(err)
	}
	// kube-apiserver accepts ECDSA only as these PEM types.
	for file, typ := range map[string]string{"sa.key": "EC PRIVATE KEY", "sa.pub": "PUBLIC KEY"} {
		data, _ := os.ReadFile(filepath.Join(dir, file))
		if b, _ := pem.Decode(data); b == nil || b.Type != typ {
			t.Errorf("%s: want PEM %q", file, typ)
		}
	}
}

// fakeInstall makes assets and bin dirs that pass validation.
func fakeInstall(t *testing.T) (assets, bin string) {
	assets, bin = t.TempDir(), t.TempDir()
	for _, a := range requiredAssets {
		os.WriteFile(filepath.Join(assets, a), nil, 0o755)
	}
	for _, b := range requiredBins {
		os.WriteFile(filepath.Join(bin, b), nil, 0o755)
	}
	return assets, bin
}

func TestValidateExplainsEveryProblem(t *testing.T) {
	cfg := Config{Name: "Bad_Name", Nodes: 12, APIPort: 70000, Zones: []string{"zone a"}, AssetsDir: t.TempDir(), BinDir: t.TempDir(), ImageMaps: []string{"/nonexistent/images.yaml"}}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"cluster name", "nodes: 12", "api port", "kube-apiserver missing", "make kube-assets", "weft-kubelet missing", "make build", "image map", `zone "zone a"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
	assets, bin := fakeInstall(t)
	good := Config{Name: "ok1", Nodes: 2, AssetsDir: assets, BinDir: bin}
	if err := good.Validate(); err != nil {
		t.Errorf("valid config rejected: %v", err)
	}
}

func TestStartRefusesBusyPortWithoutLeavingAnything(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	assets, bin := fakeInstall(t)
	state := filepath.Join(t.TempDir(), "state")
	cfg := Config{Name: "portclash", Nodes: 1, StateDir: state, AssetsDir: assets, BinDir: bin, APIPort: ln.Addr().(*net.TCPAddr).Port}
	_, err = Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "--api-port") {
		t.Fatalf("want a port clash error naming --api-port, got %v", err)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("state dir created before the port check: %v", err)
	}
	if nss, _ := listNetns(nsPrefix("portclash")); len(nss) > 0 {
		t.Errorf("namespaces left behind: %v", nss)
	}
}

func TestStartRefusesSecondUp(t *testing.T) {
	assets, bin := fakeInstall(t)
	state := t.TempDir()
	st, _ := json.Marshal(State{Name: "twice", PID: os.Getpid(), Kubeconfig: "/k"})
	if err := os.WriteFile(layout{dir: state}.stateFile(), st, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Name: "twice", StateDir: state, AssetsDir: assets, BinDir: bin}
	_, err := Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "already up") || !strings.Contains(err.Error(), "down") {
		t.Fatalf("want 'already up ... down' error, got %v", err)
	}
}

func TestKubeletArgsScopeNodeState(t *testing.T) {
	l := layout{dir: "/s"}
	cfg := &Config{Name: "c1", BinDir: "/bin"}
	cfg.Defaults()
	args := kubeletArgs(l, cfg, newPlan(0, 2), 1, []string{"/m1.yaml", "/m2.yaml"})
	for _, want := range []string{
		"--node-labels=topology.kubernetes.io/region=region-1,topology.kubernetes.io/zone=zone-b",
		"--node-name=node-1", "--root-dir=/s/nodes/node-1/root", "--cni-conf-dir=/s/nodes/node-1/root/etc/cni/net.d",
		"--netns-prefix=weft-c1-node-1-", "--cgroup-parent=weft-c1/node-1/pods", "--image-map=/m1.yaml", "--image-map=/m2.yaml",
	} {
		if !slices.Contains(args, want) {
			t.Errorf("kubelet args lack %s: %v", want, args)
		}
	}
}
