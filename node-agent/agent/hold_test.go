package agent

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/bpf"
	"github.com/weft-mesh/weft/node-agent/cni"
	"github.com/weft-mesh/weft/node-agent/config"
)

// TestCNIAddHoldsPodsOfEnrolledNamespaces: at CNI ADD, before any Workload
// describes the pod, a pod of a namespace the last snapshot calls enrolled
// is captured at once; other namespaces' pods, and every pod before the
// enrolled namespaces are known, wait for their Workload as before.
func TestCNIAddHoldsPodsOfEnrolledNamespaces(t *testing.T) {
	store := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)})
	c := newFakeCapture()
	e := newEnroller(c, routes{}, nil)
	handle := cniHandler(e, store.Snapshot, func() {}, slog.New(slog.DiscardHandler))
	add := func(ns, ip string, ifindex int) {
		t.Helper()
		ev := cni.Event{Op: cni.OpAdd, PodNamespace: ns, PodName: "p", IPs: []string{ip}, HostIfindex: ifindex}
		if err := handle(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}

	add("ambient", "10.244.0.10", 10) // enrolled namespaces not known yet
	if err := store.Handle(config.EnrolledNamespaceType, map[string]proto.Message{
		"ambient": &workloadv1.EnrolledNamespace{Name: "ambient"},
	}, nil); err != nil {
		t.Fatal(err)
	}
	add("ambient", "10.244.0.11", 11)
	add("plain", "10.244.0.12", 12)

	for ip, want := range map[string]bool{"10.244.0.10": false, "10.244.0.11": true, "10.244.0.12": false} {
		a := netip.MustParseAddr(ip)
		if got := c.ips[a] == bpf.FlagCapture && e.Held(a); got != want {
			t.Errorf("%s: captured and held %v, want %v (ips %v)", ip, got, want, c.ips)
		}
	}
}
