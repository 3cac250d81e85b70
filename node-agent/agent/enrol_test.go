package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/weft-mesh/weft/bpf"
)

// fakeCapture records the enrolment maps like the pinned BPF maps hold them.
type fakeCapture struct {
	ifs      map[int]uint32
	ips      map[netip.Addr]uint32
	attached map[int]bool
}

func newFakeCapture() *fakeCapture {
	return &fakeCapture{ifs: map[int]uint32{}, ips: map[netip.Addr]uint32{}, attached: map[int]bool{}}
}

func (f *fakeCapture) AttachOutbound(i int) error { f.attached[i] = true; return nil }
func (f *fakeCapture) DetachOutbound(i int) error { delete(f.attached, i); return nil }
func (f *fakeCapture) set(i int, ip netip.Addr, fl uint32) error {
	if i > 0 {
		f.ifs[i] = fl
	}
	if ip.IsValid() {
		f.ips[ip] = fl
	}
	return nil
}
func (f *fakeCapture) Enroll(i int, ip netip.Addr) error { return f.set(i, ip, bpf.FlagCapture) }
func (f *fakeCapture) Drain(i int, ip netip.Addr) error  { return f.set(i, ip, bpf.FlagDraining) }
func (f *fakeCapture) Unenroll(i int, ip netip.Addr) error {
	delete(f.ifs, i)
	delete(f.ips, ip)
	return nil
}
func (f *fakeCapture) Enrolled() (map[int]uint32, map[netip.Addr]uint32, error) {
	ifs, ips := map[int]uint32{}, map[netip.Addr]uint32{}
	for k, v := range f.ifs {
		ifs[k] = v
	}
	for k, v := range f.ips {
		ips[k] = v
	}
	return ifs, ips, nil
}

var (
	ipA = netip.MustParseAddr("10.244.0.5")
	ipB = netip.MustParseAddr("10.244.0.6")
)

// routes stands in for the node's routing table.
type routes map[netip.Addr]int

func (r routes) resolve(ip netip.Addr) (int, error) {
	if i, ok := r[ip]; ok {
		return i, nil
	}
	return 0, fmt.Errorf("%s: %w", ip, ErrNotLocal)
}

func newEnroller(c Capturer, r routes, open map[netip.Addr]int) *Enroller {
	return &Enroller{Capture: c, Resolve: r.resolve, OpenConns: func(ip netip.Addr) int { return open[ip] },
		DrainTimeout: time.Minute, Log: slog.New(slog.DiscardHandler)}
}

// The drain timeout runs on synctest's fake clock.
func TestEnrolDrainUnenrol(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newFakeCapture()
		open := map[netip.Addr]int{}
		e := newEnroller(c, routes{ipA: 7}, open)

		// B is wanted but not wired here yet: no error, retried later.
		if err := e.Reconcile(map[netip.Addr]bool{ipA: true, ipB: true}); err != nil {
			t.Fatal(err)
		}
		if c.ifs[7] != bpf.FlagCapture || c.ips[ipA] != bpf.FlagCapture || !c.attached[7] || len(c.ips) != 1 {
			t.Fatalf("after enrol: ifs %v ips %v attached %v", c.ifs, c.ips, c.attached)
		}
		// A relabel while draining enrols again at once.
		open[ipA] = 1
		e.Reconcile(map[netip.Addr]bool{ipB: true})
		if c.ips[ipA] != bpf.FlagDraining {
			t.Fatalf("A should drain: %v", c.ips)
		}
		e.Reconcile(map[netip.Addr]bool{ipA: true, ipB: true})
		if c.ips[ipA] != bpf.FlagCapture {
			t.Fatalf("A should capture again: %v", c.ips)
		}
		open[ipA] = 0
		// B's CNI ADD arrives with its veth: enrolled on the next pass.
		e.PodAdded([]netip.Addr{ipB}, 9)
		e.Reconcile(map[netip.Addr]bool{ipA: true, ipB: true})
		if c.ips[ipB] != bpf.FlagCapture || c.ifs[9] != bpf.FlagCapture {
			t.Fatalf("B not enrolled from its CNI event: %v %v", c.ifs, c.ips)
		}

		// The namespace is unlabelled with a connection of A still open: drain.
		open[ipA] = 1
		e.Reconcile(map[netip.Addr]bool{ipB: true})
		if c.ips[ipA] != bpf.FlagDraining || c.ifs[7] != bpf.FlagDraining || !c.attached[7] {
			t.Fatalf("A should be draining: ifs %v ips %v", c.ifs, c.ips)
		}
		if got := e.Enrolled(); len(got) != 1 || got[0] != ipB {
			t.Errorf("Enrolled() = %v, want only B", got)
		}
		// The connection ends: the next pass removes A entirely.
		open[ipA] = 0
		e.Reconcile(map[netip.Addr]bool{ipB: true})
		if _, ok := c.ips[ipA]; ok || c.attached[7] {
			t.Fatalf("A should be gone: ips %v attached %v", c.ips, c.attached)
		}

		// Still on the node but no longer enrolled: unenrolled, the program
		// stays (it polices plaintext to enrolled neighbours).
		e.Reconcile(map[netip.Addr]bool{ipB: false})
		if _, ok := c.ips[ipB]; ok || !c.attached[9] {
			t.Fatalf("B should be unenrolled but attached: ips %v attached %v", c.ips, c.attached)
		}
		// Enrolled again, then a drain that never ends is cut at DrainTimeout.
		e.Reconcile(map[netip.Addr]bool{ipB: true})
		if c.ips[ipB] != bpf.FlagCapture {
			t.Fatalf("B should be enrolled again: %v", c.ips)
		}
		open[ipB] = 3
		e.Reconcile(nil)
		if c.ips[ipB] != bpf.FlagDraining {
			t.Fatalf("B should drain: %v", c.ips)
		}
		time.Sleep(2 * time.Minute) // synctest: the fake clock passes the drain timeout
		e.Reconcile(nil)
		if len(c.ips) != 0 || len(c.ifs) != 0 || len(c.attached) != 0 {
			t.Fatalf("everything should be unenrolled after the drain timeout: %v %v %v", c.ifs, c.ips, c.attached)
		}
	})
}

// An uninstall's agent (ReleasePods) recovers the enrolment from the pins
// and drains every pod, and never takes the second step: the connections
// still steered belong to the previous agent, which it cannot count.
func TestReleasePodsStopsAtTheFirstStep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newFakeCapture()
		c.ifs[7], c.ips[ipA], c.attached[7] = bpf.FlagCapture, bpf.FlagCapture, true
		e := newEnroller(c, routes{ipA: 7}, nil)
		e.ReleasePods = true
		if err := e.Recover(); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if err := e.Reconcile(nil); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Minute) // synctest: past DrainTimeout, nothing open here
		}
		if c.ips[ipA] != bpf.FlagDraining || c.ifs[7] != bpf.FlagDraining || !c.attached[7] {
			t.Fatalf("A should stay draining: ifs %v ips %v attached %v", c.ifs, c.ips, c.attached)
		}
		if got := e.Enrolled(); len(got) != 0 {
			t.Errorf("Enrolled() = %v, want none", got)
		}
	})
}

func TestRecoverAfterRestart(t *testing.T) {
	c := newFakeCapture()
	first := newEnroller(c, routes{ipA: 7, ipB: 9}, nil)
	first.Reconcile(map[netip.Addr]bool{ipA: true, ipB: true})
	// A stale veth entry whose pod vanished while no agent ran.
	c.ifs[42], c.attached[42] = bpf.FlagCapture, true

	// The next agent: B's pod was deleted meanwhile (no route any more).
	second := newEnroller(c, routes{ipA: 7}, nil)
	if err := second.Recover(); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.ips[ipB]; ok {
		t.Errorf("B's pinned enrolment should be removed: %v", c.ips)
	}
	if _, ok := c.ifs[42]; ok || c.attached[42] {
		t.Errorf("stale veth 42 should be unenrolled and detached: %v %v", c.ifs, c.attached)
	}
	if got := second.Enrolled(); len(got) != 1 || got[0] != ipA {
		t.Fatalf("recovered %v, want A", got)
	}
	// Reconciling the same wanted set changes nothing that works.
	attachCalls := len(c.attached)
	if err := second.Reconcile(map[netip.Addr]bool{ipA: true}); err != nil {
		t.Fatal(err)
	}
	if c.ips[ipA] != bpf.FlagCapture || len(c.attached) != attachCalls {
		t.Errorf("after reconcile: %v %v", c.ips, c.attached)
	}
}

func TestPodDeletedForgetsAtOnce(t *testing.T) {
	c := newFakeCapture()
	e := newEnroller(c, routes{}, map[netip.Addr]int{ipA: 5})
	e.PodAdded([]netip.Addr{ipA}, 11)
	e.Reconcile(map[netip.Addr]bool{ipA: true})
	if c.ips[ipA] != bpf.FlagCapture {
		t.Fatal("not enrolled")
	}
	// DEL does not wait for open connections: the veth is going away.
	if err := e.PodDeleted([]netip.Addr{ipA}); err != nil {
		t.Fatal(err)
	}
	if len(c.ips) != 0 || len(c.ifs) != 0 || c.attached[11] {
		t.Fatalf("after DEL: %v %v %v", c.ifs, c.ips, c.attached)
	}
	// Without the CNI record and without a route it is not re-enrolled.
	e.Reconcile(map[netip.Addr]bool{ipA: true})
	if len(c.ips) != 0 {
		t.Fatalf("re-enrolled a deleted pod: %v", c.ips)
	}
}

func TestResolveErrorsOtherThanNotLocalAreReported(t *testing.T) {
	e := newEnroller(newFakeCapture(), nil, nil)
	e.Resolve = func(netip.Addr) (int, error) { return 0, errors.New("netlink: permission denied") }
	if err := e.Reconcile(map[netip.Addr]bool{ipA: true}); err == nil {
		t.Fatal("a failing route lookup must be reported")
	}
}

func TestLocalPodOutsideMeshIsAttachedNotEnrolled(t *testing.T) {
	c := newFakeCapture()
	e := newEnroller(c, routes{ipA: 7}, nil)
	if err := e.Reconcile(map[netip.Addr]bool{ipA: false}); err != nil {
		t.Fatal(err)
	}
	if !c.attached[7] || len(c.ips) != 0 || len(c.ifs) != 0 || len(e.Enrolled()) != 0 {
		t.Fatalf("attached %v ifs %v ips %v", c.attached, c.ifs, c.ips)
	}
	// Gone from the node: detached.
	e.Reconcile(nil)
	if c.attached[7] {
		t.Fatal("still attached after the pod left")
	}
}

func TestConfigValidateNamesEveryMissingFlag(t *testing.T) {
	err := (&Config{InstallCNI: true}).validate()
	if err == nil {
		t.Fatal("empty config accepted")
	}
	for _, want := range []string{"--node-name", "--control-address", "--ca-root-cert", "--token-file", "--bpf-dir", "--cni-bin-dir", "--cni-conf-dir", "--run-dir", "ports"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	// Without installing the plugin (the install-cni container does), the
	// agent needs no CNI directory.
	if err := (&Config{}).validate(); strings.Contains(err.Error(), "--cni-") {
		t.Errorf("error %q names the CNI directories though the agent does not install", err)
	}
}

// TestHoldKeepsANewPodCapturedUntilDescribed: a pod held at CNI ADD (its
// namespace is enrolled, the control plane has not described it) stays
// captured through reconciles that do not know it, and the snapshot
// decides once it does: kept when enrolled, released when it opted out.
func TestHoldKeepsANewPodCapturedUntilDescribed(t *testing.T) {
	c := newFakeCapture()
	e := newEnroller(c, routes{}, map[netip.Addr]int{})
	if err := e.Hold([]netip.Addr{ipA, netip.MustParseAddr("fd00::5")}, 7); err != nil {
		t.Fatal(err)
	}
	if c.ips[ipA] != bpf.FlagCapture || c.ifs[7] != bpf.FlagCapture || !e.Held(ipA) {
		t.Fatalf("after Hold: ips %v ifs %v held %v, want A captured on veth 7", c.ips, c.ifs, e.Held(ipA))
	}
	// Snapshots that do not describe A (the control plane is away).
	for range 3 {
		if err := e.Reconcile(map[netip.Addr]bool{}); err != nil {
			t.Fatal(err)
		}
	}
	if c.ips[ipA] != bpf.FlagCapture || !e.Held(ipA) {
		t.Fatalf("an undescribed held pod was released: ips %v held %v", c.ips, e.Held(ipA))
	}
	// Described as enrolled: captured, no longer held.
	if err := e.Reconcile(map[netip.Addr]bool{ipA: true}); err != nil {
		t.Fatal(err)
	}
	if c.ips[ipA] != bpf.FlagCapture || e.Held(ipA) {
		t.Fatalf("described and enrolled: ips %v held %v, want captured and not held", c.ips, e.Held(ipA))
	}

	// B is held, then described as opted out: released like any pod.
	if err := e.Hold([]netip.Addr{ipB}, 8); err != nil {
		t.Fatal(err)
	}
	if err := e.Reconcile(map[netip.Addr]bool{ipA: true, ipB: false}); err != nil {
		t.Fatal(err)
	}
	if c.ips[ipB] == bpf.FlagCapture || e.Held(ipB) {
		t.Fatalf("described as opted out: ips %v held %v, want released", c.ips, e.Held(ipB))
	}

	// CNI DEL of a held pod forgets it.
	ipC := netip.MustParseAddr("10.244.0.7")
	if err := e.Hold([]netip.Addr{ipC}, 9); err != nil {
		t.Fatal(err)
	}
	if err := e.PodDeleted([]netip.Addr{ipC}); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.ips[ipC]; ok || e.Held(ipC) {
		t.Fatalf("after DEL: ips %v held %v, want C gone", c.ips, e.Held(ipC))
	}
}

// TestHoldWithoutAVethFails: a pod whose veth the agent cannot find is not
// captured, so the ADD must fail (the kubelet retries) instead of letting
// the pod start outside the mesh with its connections refused by nothing.
func TestHoldWithoutAVethFails(t *testing.T) {
	c := newFakeCapture()
	e := newEnroller(c, routes{}, nil)
	if err := e.Hold([]netip.Addr{ipA}, 0); err == nil {
		t.Fatal("Hold without a veth succeeded")
	}
	if e.Held(ipA) || len(c.ips) != 0 {
		t.Fatalf("held %v, ips %v; want nothing held or captured", e.Held(ipA), c.ips)
	}
}
