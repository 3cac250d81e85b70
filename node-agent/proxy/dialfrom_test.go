package proxy

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/weft-mesh/weft/internal/benchkit"
	"github.com/weft-mesh/weft/pkg/netns"
)

// TestDialFromItselfNetns: a pod whose connection to a Service the agent
// sent back to the pod itself (source and destination the pod's address)
// is reached. Kept, that source makes the SYN a martian to the pod's
// kernel, which never answers (seen as MeshBasic failing on a namespace
// without a waypoint: every request balanced to the client's own pod
// timed out). The pod sees the node's address, as with kube-proxy's
// hairpin masquerade. Topology: a node netns and a pod netns joined by a
// veth, as a node and an enrolled pod.
func TestDialFromItselfNetns(t *testing.T) {
	benchkit.RequireRoot(t, "dial-from test (network namespaces)")
	node, pod := scratchNetns(t, "weft-dialself-node"), scratchNetns(t, "weft-dialself-pod")
	podIP, nodeIP := netip.MustParseAddr("10.250.0.5"), netip.MustParseAddr("10.250.0.1")
	for _, args := range [][]string{
		{"link", "add", "weft-ds0", "netns", "weft-dialself-node", "type", "veth", "peer", "name", "eth0", "netns", "weft-dialself-pod"},
		{"-n", "weft-dialself-node", "link", "set", "weft-ds0", "up"},
		{"-n", "weft-dialself-pod", "link", "set", "eth0", "up"},
		{"-n", "weft-dialself-node", "addr", "add", nodeIP.String() + "/32", "dev", "weft-ds0"},
		{"-n", "weft-dialself-pod", "addr", "add", podIP.String() + "/32", "dev", "eth0"},
		{"-n", "weft-dialself-node", "route", "add", podIP.String() + "/32", "dev", "weft-ds0"},
		{"-n", "weft-dialself-pod", "route", "add", nodeIP.String() + "/32", "dev", "eth0"},
		{"-n", "weft-dialself-pod", "route", "add", "default", "via", nodeIP.String(), "dev", "eth0"},
	} {
		ipCmd(t, args...)
	}
	var ln net.Listener
	if err := netns.Do(pod, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(podIP, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr())
			c.Close()
		}
	}()
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	// As admit dials: the context ends with the dial timeout.
	const timeout = 3 * time.Second
	var c *net.TCPConn
	var spoofed bool
	err := netns.Do(node, func() (err error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c, spoofed, err = dialFrom(ctx, slog.Default(), podIP, dst, timeout)
		return err
	})
	if err != nil {
		t.Fatalf("dialing the pod from its own address: %v", err)
	}
	defer c.Close()
	seen, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if spoofed || strings.TrimSpace(seen) != nodeIP.String() {
		t.Errorf("the pod saw %s (source kept: %v), want the node's address %s", strings.TrimSpace(seen), spoofed, nodeIP)
	}
}

// scratchNetns adds a network namespace removed at the end of the test.
func scratchNetns(t *testing.T, name string) string {
	t.Helper()
	_ = exec.Command("ip", "netns", "del", name).Run() // a leftover of an interrupted run
	ipCmd(t, "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	ipCmd(t, "-n", name, "link", "set", "lo", "up")
	return "/run/netns/" + name
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
