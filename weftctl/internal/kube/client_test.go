package kube

import (
	"os"
	"path/filepath"
	"testing"
)

const kubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443"}
users:
- name: u
  user: {token: t}
contexts:
- name: one
  context: {cluster: c, user: u, namespace: apps}
- name: two
  context: {cluster: c, user: u}
current-context: one
`

func TestConnectNamespaceLikeKubectl(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		flags    Flags
		wantNS   string
		explicit bool
	}{
		{Flags{Kubeconfig: path}, "apps", false},                           // the context's namespace
		{Flags{Kubeconfig: path, Context: "two"}, "default", false},        // none: default
		{Flags{Kubeconfig: path, Namespace: "bookinfo"}, "bookinfo", true}, // -n wins
	} {
		c, err := Connect(tc.flags)
		if err != nil {
			t.Fatal(err)
		}
		if c.Namespace != tc.wantNS || c.NamespaceExplicit != tc.explicit || c.Config.Host != "https://127.0.0.1:6443" {
			t.Errorf("%+v: namespace %q explicit %v host %s", tc.flags, c.Namespace, c.NamespaceExplicit, c.Config.Host)
		}
	}
	t.Setenv("KUBECONFIG", path)
	if c, err := Connect(Flags{}); err != nil || c.Namespace != "apps" {
		t.Fatalf("KUBECONFIG: %v %+v", err, c)
	}
	if _, err := Connect(Flags{Kubeconfig: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Fatal("missing kubeconfig accepted")
	}
}
