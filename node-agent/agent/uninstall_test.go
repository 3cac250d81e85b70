package agent

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/bpf"
	"github.com/weft-mesh/weft/node-agent/cni"
	"github.com/weft-mesh/weft/pkg/netns"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	msg := "needs root (network namespaces, bpffs, eBPF)"
	if os.Getenv("WEFT_E2E_REQUIRE") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// TestUninstallLeavesNothing sets a node up the way a running agent does
// (programs attached and pinned, policy routing, notrack table, weft-cni in
// the conflist), stops the agent, and checks Uninstall removes all of it.
func TestUninstallLeavesNothing(t *testing.T) {
	requireRoot(t)
	name := "wuninst" + strings.ReplaceAll(t.Name(), "/", "")[:4] + "-" + string(rune('a'+os.Getpid()%26))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ns := "/run/netns/" + name
	for _, args := range [][]string{
		{"link", "add", "veth-pod", "type", "veth", "peer", "name", "uplink0"},
		{"link", "set", "veth-pod", "up"}, {"link", "set", "uplink0", "up"}, {"link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}

	bpffs := filepath.Join(t.TempDir(), "bpffs")
	if err := os.Mkdir(bpffs, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", bpffs, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(bpffs, unix.MNT_DETACH) })
	root := t.TempDir()
	cfg := Config{BPFDir: filepath.Join(bpffs, "weft"), CNIBinDir: filepath.Join(root, "bin"), CNIConfDir: filepath.Join(root, "net.d"),
		RunDir: filepath.Join(root, "run")}
	for _, d := range []string{cfg.BPFDir, cfg.CNIBinDir, cfg.CNIConfDir, cfg.spoolDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := newSuccession(cfg.lease(), time.Second).beat(); err != nil {
		t.Fatal(err)
	}
	conflist := filepath.Join(cfg.CNIConfDir, "10-net.conflist")
	original := `{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"ptp"}]}`
	os.WriteFile(conflist, []byte(original), 0o644)
	plugin := filepath.Join(root, "weft-cni")
	os.WriteFile(plugin, []byte("#!/bin/sh\n"), 0o755)
	if err := cni.Install(cni.InstallOptions{BinDir: cfg.CNIBinDir, ConfDir: cfg.CNIConfDir, PluginSource: plugin}); err != nil {
		t.Fatal(err)
	}

	var veth, uplink int
	err := netns.Do(ns, func() error {
		v, _ := net.InterfaceByName("veth-pod")
		u, _ := net.InterfaceByName("uplink0")
		veth, uplink = v.Index, u.Index
		c, err := bpf.Load(cfg.BPFDir)
		if err != nil {
			return err
		}
		defer c.Close() // the agent exits: pins remain
		if err := c.AttachOutbound(veth); err != nil {
			return err
		}
		if err := c.AttachInbound(uplink); err != nil {
			return err
		}
		if err := bpf.DefaultPolicyRouting().Install(); err != nil {
			return err
		}
		if err := c.SteerNAT(bpf.DefaultNATSteering(), 15007); err != nil {
			return err
		}
		return bpf.DefaultNotrack().Install()
	})
	if err != nil {
		t.Fatal(err)
	}
	programs := func() int {
		n := 0
		netns.Do(ns, func() error {
			for _, i := range []int{veth, uplink} {
				if r, err := link.QueryPrograms(link.QueryOptions{Target: i, Attach: 46 /* BPF_TCX_INGRESS */}); err == nil {
					n += len(r.Programs)
				}
			}
			return nil
		})
		return n
	}
	if programs() != 2 {
		t.Fatalf("setup: %d programs attached, want 2", programs())
	}

	if err := netns.Do(ns, func() error { return Uninstall(cfg) }); err != nil {
		t.Fatalf("Uninstall: %v", err)
	}
	if err := netns.Do(ns, func() error { return Uninstall(cfg) }); err != nil {
		t.Fatalf("Uninstall again (idempotent): %v", err)
	}

	if n := programs(); n != 0 {
		t.Errorf("%d capture programs still attached", n)
	}
	if _, err := os.Stat(cfg.BPFDir); !os.IsNotExist(err) {
		t.Errorf("pin directory still there: %v", err)
	}
	if _, err := os.Stat(cfg.RunDir); !os.IsNotExist(err) {
		t.Errorf("run directory (spool, lease) still there: %v", err)
	}
	if data, _ := os.ReadFile(conflist); string(data) != original {
		t.Errorf("conflist not restored:\n%s", data)
	}
	if _, err := os.Stat(filepath.Join(cfg.CNIBinDir, cni.PluginType)); !os.IsNotExist(err) {
		t.Errorf("weft-cni binary still installed: %v", err)
	}
	netns.Do(ns, func() error {
		rules, _ := netlink.RuleList(netlink.FAMILY_V4)
		for _, r := range rules {
			if r.Table == bpf.DefaultPolicyRouting().Table {
				t.Errorf("policy routing rule left: %v", r)
			}
		}
		routes, _ := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: bpf.DefaultPolicyRouting().Table}, netlink.RT_FILTER_TABLE)
		if len(routes) != 0 {
			t.Errorf("routes left in table %d: %v", bpf.DefaultPolicyRouting().Table, routes)
		}
		if ok, err := bpf.DefaultNotrack().Installed(); err != nil || ok {
			t.Errorf("nftables table %s left (%v)", bpf.NotrackTable, err)
		}
		if ok, err := bpf.DefaultNATSteering().Installed(); err != nil || ok {
			t.Errorf("nftables table %s left (%v)", bpf.NATTable, err)
		}
		return nil
	})
}
