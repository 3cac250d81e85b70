package kubelet

import (
	"context"
	"io"
	"log/slog"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestRegisterNodeLabels: --node-labels land on the Node when it is
// created, and a restart with other values updates them (a node moved to
// another zone).
func TestRegisterNodeLabels(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	k := &Kubelet{client: client, log: slog.New(slog.NewTextHandler(io.Discard, nil)), cfg: Config{
		NodeName: "node-0", NodeIP: "10.0.0.10", RootDir: t.TempDir(),
		NodeLabels: map[string]string{"topology.kubernetes.io/zone": "zone-a"},
	}}
	zone := func() string {
		t.Helper()
		n, err := client.CoreV1().Nodes().Get(ctx, "node-0", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n.Labels["kubernetes.io/hostname"] != "node-0" {
			t.Errorf("labels %v lack the default hostname label", n.Labels)
		}
		return n.Labels["topology.kubernetes.io/zone"]
	}
	if err := k.tryRegisterNode(ctx); err != nil {
		t.Fatal(err)
	}
	if got := zone(); got != "zone-a" {
		t.Fatalf("zone %q after creation, want zone-a", got)
	}
	k.cfg.NodeLabels["topology.kubernetes.io/zone"] = "zone-b"
	if err := k.tryRegisterNode(ctx); err != nil {
		t.Fatal(err)
	}
	if got := zone(); got != "zone-b" {
		t.Fatalf("zone %q after re-registration, want zone-b", got)
	}
}

func TestValidateNodeLabels(t *testing.T) {
	c := Config{NodeName: "n", Kubeconfig: "k", NodeIP: "10.0.0.1", RootDir: "/r", CNIConfDir: "/c", CNIBinDir: "/b",
		NodeLabels: map[string]string{"topology.kubernetes.io/zone": "not a value"}}
	if err := c.validate(); err == nil {
		t.Fatal("an invalid label value was accepted")
	}
	c.NodeLabels["topology.kubernetes.io/zone"] = "zone-a"
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
}
