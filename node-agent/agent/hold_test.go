package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	workloadv1 "github.com/weft-mesh/weft/api/workload/v1"
	"github.com/weft-mesh/weft/bpf"
	"github.com/weft-mesh/weft/node-agent/cni"
	"github.com/weft-mesh/weft/node-agent/config"
	"github.com/weft-mesh/weft/pkg/mesh"
)

// TestCNIAddHoldsPodsOfEnrolledNamespaces: at CNI ADD, before any Workload
// describes the pod, a pod of a namespace the last snapshot calls enrolled
// is captured at once; other namespaces' pods, and every pod before the
// enrolled namespaces are known, wait for their Workload as before.
func TestCNIAddHoldsPodsOfEnrolledNamespaces(t *testing.T) {
	store := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)})
	c := newFakeCapture()
	e := newEnroller(c, routes{}, nil)
	nss := loadEnrolledNamespaces(filepath.Join(t.TempDir(), "enrolled-namespaces.json"), store.Snapshot, slog.New(slog.DiscardHandler))
	handle := cniHandler(e, nss.podEnrolled, func() {}, slog.New(slog.DiscardHandler))
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

// TestRestartedAgentHoldsFromRememberedNamespaces: an agent that starts
// while the control plane is away holds new pods of the namespaces the
// previous agent last heard were enrolled; once the control plane sends a
// set, that set decides. An unreadable file remembers nothing.
func TestRestartedAgentHoldsFromRememberedNamespaces(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	path := filepath.Join(t.TempDir(), "enrolled-namespaces.json")
	setEnrolled := func(store *config.Store, names ...string) {
		t.Helper()
		res := map[string]proto.Message{}
		for _, n := range names {
			res[n] = &workloadv1.EnrolledNamespace{Name: n}
		}
		if err := store.Handle(config.EnrolledNamespaceType, res, nil); err != nil {
			t.Fatal(err)
		}
	}
	before := config.NewStore(config.Options{Logger: log})
	setEnrolled(before, "ambient", "shop")
	if err := loadEnrolledNamespaces(path, before.Snapshot, log).save(before.Snapshot()); err != nil {
		t.Fatal(err)
	}

	// The restarted agent: nothing from the control plane yet.
	store := config.NewStore(config.Options{Logger: log})
	c := newFakeCapture()
	e := newEnroller(c, routes{}, nil)
	handle := cniHandler(e, loadEnrolledNamespaces(path, store.Snapshot, log).podEnrolled, func() {}, log)
	add := func(ns, ip string, ifindex int) bool {
		t.Helper()
		if err := handle(context.Background(), cni.Event{Op: cni.OpAdd, PodNamespace: ns, PodName: "p", IPs: []string{ip}, HostIfindex: ifindex}); err != nil {
			t.Fatal(err)
		}
		a := netip.MustParseAddr(ip)
		return c.ips[a] == bpf.FlagCapture && e.Held(a)
	}
	if !add("shop", "10.244.0.20", 20) {
		t.Error("a new pod of a remembered enrolled namespace is not held")
	}
	if add("plain", "10.244.0.21", 21) {
		t.Error("a new pod of a namespace not remembered as enrolled is held")
	}
	setEnrolled(store, "ambient") // shop was unenrolled meanwhile
	if add("shop", "10.244.0.22", 22) {
		t.Error("the remembered set wins over the control plane's")
	}

	if err := os.WriteFile(path, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadEnrolledNamespaces(path, config.NewStore(config.Options{Logger: log}).Snapshot, log).enrolled(context.Background(), "shop"); !errors.Is(err, errNoSource) {
		t.Errorf("an unreadable file counts as a remembered set (%v)", err)
	}
}

// TestNewNodeAgentHoldsFromTheAPIServer: the first agent of a new node,
// while the control plane is unreachable, has no set from it and none
// remembered. It reads the pod's namespace from the API server: a pod of
// an enrolled namespace is held, another starts; when the API server
// cannot tell, the ADD fails (the kubelet retries) and the pod does not
// start. Once the control plane has spoken, the API server is not asked.
func TestNewNodeAgentHoldsFromTheAPIServer(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	store := config.NewStore(config.Options{Logger: log})
	nss := loadEnrolledNamespaces(filepath.Join(t.TempDir(), "enrolled-namespaces.json"), store.Snapshot, log)
	asked := 0
	nss.labels = func(ctx context.Context, name string) (map[string]string, error) {
		asked++
		if _, ok := ctx.Deadline(); !ok {
			t.Error("the API server is asked without a deadline")
		}
		switch name {
		case "shop":
			return map[string]string{mesh.LabelDataplaneMode: mesh.DataplaneAmbient}, nil
		case "plain":
			return map[string]string{"team": "a"}, nil
		}
		return nil, errors.New("connection refused")
	}
	c := newFakeCapture()
	e := newEnroller(c, routes{}, nil)
	handle := cniHandler(e, nss.podEnrolled, func() {}, log)
	add := func(ns, ip string, ifindex int) (held bool, err error) {
		t.Helper()
		err = handle(context.Background(), cni.Event{Op: cni.OpAdd, PodNamespace: ns, PodName: "p", IPs: []string{ip}, HostIfindex: ifindex})
		a := netip.MustParseAddr(ip)
		return c.ips[a] == bpf.FlagCapture && e.Held(a), err
	}
	if held, err := add("shop", "10.244.0.30", 30); !held || err != nil {
		t.Errorf("a new pod of a namespace the API server calls enrolled: held %v, err %v", held, err)
	}
	if held, err := add("plain", "10.244.0.31", 31); held || err != nil {
		t.Errorf("a new pod of a namespace that is not enrolled: held %v, err %v", held, err)
	}
	if held, err := add("unknown", "10.244.0.32", 32); held || !errors.Is(err, cni.ErrNotCaptured) {
		t.Errorf("API server unreachable: held %v, err %v; want the ADD to fail with ErrNotCaptured", held, err)
	}
	if err := store.Handle(config.EnrolledNamespaceType, map[string]proto.Message{
		"plain": &workloadv1.EnrolledNamespace{Name: "plain"},
	}, nil); err != nil {
		t.Fatal(err)
	}
	asked = 0
	if held, err := add("plain", "10.244.0.33", 33); !held || err != nil || asked != 0 {
		t.Errorf("after the control plane spoke: held %v, err %v, API server asked %d times", held, err, asked)
	}
}

// TestPodLabelDecidesAtCNIAdd: a pod's own istio.io/dataplane-mode label,
// read from the API server at CNI ADD, decides before its namespace's: a
// pod opting in is held in a namespace that is not enrolled, a pod opting
// out is not held in one that is. A pod whose labels cannot be read, or
// whose UID is not the event's, is left to its namespace.
func TestPodLabelDecidesAtCNIAdd(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	store := config.NewStore(config.Options{Logger: log})
	if err := store.Handle(config.EnrolledNamespaceType, map[string]proto.Message{
		"shop": &workloadv1.EnrolledNamespace{Name: "shop"},
	}, nil); err != nil {
		t.Fatal(err)
	}
	nss := loadEnrolledNamespaces(filepath.Join(t.TempDir(), "enrolled-namespaces.json"), store.Snapshot, log)
	mode := func(m string) map[string]string { return map[string]string{mesh.LabelDataplaneMode: m, "app": "x"} }
	nss.podLabels = func(ctx context.Context, ns, name string) (map[string]string, string, error) {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("the API server is asked without a deadline")
		}
		switch name {
		case "opt-out", "recreated":
			return mode(mesh.DataplaneNone), "uid-" + name, nil
		case "opt-in":
			return mode(mesh.DataplaneAmbient), "uid-" + name, nil
		case "no-label":
			return map[string]string{"app": "x"}, "uid-" + name, nil
		case "odd-label":
			return mode("sidecar"), "uid-" + name, nil
		}
		return nil, "", errors.New("connection refused")
	}
	c := newFakeCapture()
	e := newEnroller(c, routes{}, nil)
	handle := cniHandler(e, nss.podEnrolled, func() {}, log)
	ifindex := 40
	for _, tc := range []struct {
		ns, pod string
		want    bool
	}{
		{"shop", "opt-out", false},
		{"plain", "opt-in", true},
		{"shop", "no-label", true},
		{"plain", "no-label", false},
		{"shop", "odd-label", true},
		{"shop", "unreadable", true},
		{"plain", "unreadable", false},
		{"shop", "recreated", true}, // the event's UID is another pod's: the namespace decides
	} {
		ifindex++
		ip := netip.AddrFrom4([4]byte{10, 244, 1, byte(ifindex)})
		uid := "uid-" + tc.pod
		if tc.pod == "recreated" {
			uid = "uid-newer"
		}
		ev := cni.Event{Op: cni.OpAdd, PodNamespace: tc.ns, PodName: tc.pod, PodUID: uid, IPs: []string{ip.String()}, HostIfindex: ifindex}
		if err := handle(context.Background(), ev); err != nil {
			t.Fatalf("%s/%s: %v", tc.ns, tc.pod, err)
		}
		if got := c.ips[ip] == bpf.FlagCapture && e.Held(ip); got != tc.want {
			t.Errorf("%s/%s: held %v, want %v", tc.ns, tc.pod, got, tc.want)
		}
	}
}
