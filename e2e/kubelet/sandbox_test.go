package kubelet

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestRenderResolvConf(t *testing.T) {
	dns := []string{"10.96.0.10"}
	pod := func(mut func(p *v1.Pod)) *v1.Pod {
		p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop"}}
		mut(p)
		return p
	}
	nodeResolv := []byte("# node\nnameserver 10.250.0.1\nsearch node.local\noptions timeout:2\n")
	tests := []struct {
		name string
		pod  *v1.Pod
		node []byte
		want string
	}{
		{"cluster first", pod(func(p *v1.Pod) {}), nil,
			"search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"},
		{"hostNetwork falls back to node", pod(func(p *v1.Pod) { p.Spec.HostNetwork = true }), nodeResolv,
			"search node.local\nnameserver 10.250.0.1\noptions timeout:2\n"},
		{"hostNetwork without node resolv.conf uses cluster DNS", pod(func(p *v1.Pod) { p.Spec.HostNetwork = true }), nil,
			"nameserver 10.96.0.10\n"},
		{"cluster first with host net", pod(func(p *v1.Pod) {
			p.Spec.HostNetwork = true
			p.Spec.DNSPolicy = v1.DNSClusterFirstWithHostNet
		}), nodeResolv, "search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"},
		{"default", pod(func(p *v1.Pod) { p.Spec.DNSPolicy = v1.DNSDefault }), nodeResolv,
			"search node.local\nnameserver 10.250.0.1\noptions timeout:2\n"},
		{"none with dnsConfig", pod(func(p *v1.Pod) {
			p.Spec.DNSPolicy = v1.DNSNone
			p.Spec.DNSConfig = &v1.PodDNSConfig{Nameservers: []string{"1.2.3.4"}, Searches: []string{"a.b"},
				Options: []v1.PodDNSConfigOption{{Name: "ndots", Value: ptrTo("2")}, {Name: "edns0"}}}
		}), nil, "search a.b\nnameserver 1.2.3.4\noptions ndots:2 edns0\n"},
		{"dnsConfig merges", pod(func(p *v1.Pod) {
			p.Spec.DNSConfig = &v1.PodDNSConfig{Searches: []string{"extra.local"}, Options: []v1.PodDNSConfigOption{{Name: "ndots", Value: ptrTo("1")}}}
		}), nil, "search shop.svc.cluster.local svc.cluster.local cluster.local extra.local\nnameserver 10.96.0.10\noptions ndots:1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(renderResolvConf(tt.pod, dns, "cluster.local", tt.node)); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestRenderHosts(t *testing.T) {
	p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "shop"},
		Spec: v1.PodSpec{Hostname: "web", Subdomain: "web-svc", HostAliases: []v1.HostAlias{{IP: "1.2.3.4", Hostnames: []string{"foo", "bar"}}}}}
	got := string(renderHosts(p, []string{"10.244.0.5"}, "node-0", "10.250.0.10", "cluster.local"))
	for _, want := range []string{
		"127.0.0.1\tlocalhost\n",
		"10.244.0.5\tweb.web-svc.shop.svc.cluster.local\tweb\n",
		"# Entries added by HostAliases.\n1.2.3.4\tfoo\tbar\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("hosts lacks %q:\n%s", want, got)
		}
	}
	p2 := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "agent", Namespace: "kube-system"}, Spec: v1.PodSpec{HostNetwork: true}}
	got = string(renderHosts(p2, []string{"10.250.0.10"}, "node-0", "10.250.0.10", "cluster.local"))
	if !strings.Contains(got, "10.250.0.10\tnode-0\n") {
		t.Errorf("hostNetwork hosts:\n%s", got)
	}
	if h, fqdn := podHostname(&v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "plain"}}); h != "plain" || fqdn != "" {
		t.Errorf("podHostname = %q %q", h, fqdn)
	}
}
