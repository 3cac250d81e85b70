package netns

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// scratch creates a network namespace with loopback up and removes it at
// the end of the test. It needs root and iproute2.
func scratch(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("WEFT_E2E_REQUIRE") == "1" {
			t.Fatal("needs root to create network namespaces")
		}
		t.Skip("needs root to create network namespaces")
	}
	name := fmt.Sprintf("weft-netns-test-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	return "/run/netns/" + name
}

func nsInode(t *testing.T, link string) string {
	t.Helper()
	v, err := os.Readlink(link)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestDoSwitchesOnlyTheCallback(t *testing.T) {
	path := scratch(t)
	host := nsInode(t, "/proc/thread-self/ns/net")
	var inside string
	if err := Do(path, func() error {
		inside = nsInode(t, "/proc/thread-self/ns/net")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if inside == host || inside != fmt.Sprintf("net:[%d]", st.Ino) {
		t.Fatalf("callback ran in %s, host is %s", inside, host)
	}
	if now := nsInode(t, "/proc/thread-self/ns/net"); now != host {
		t.Fatalf("caller left in %s", now)
	}
	if err := Do("/nonexistent/netns", func() error { return nil }); err == nil {
		t.Fatal("want an error for a missing namespace")
	}
}

func TestListenDialAndStartInside(t *testing.T) {
	path := scratch(t)
	var ln net.Listener
	if err := Do(path, func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	// The listener is in the scratch namespace: the host's loopback must not
	// reach it, a dial from inside must.
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("host dial reached a listener inside the namespace")
	}
	c, err := Dial(context.Background(), path, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q %v", buf, err)
	}
	c.Close()

	cmd := exec.Command("readlink", "/proc/self/ns/net")
	var out strings.Builder
	cmd.Stdout = &out
	if err := Start(cmd, path); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	var want string
	_ = Do(path, func() error { want = nsInode(t, "/proc/thread-self/ns/net"); return nil })
	if got := strings.TrimSpace(out.String()); got != want {
		t.Fatalf("child ran in %s, want %s", got, want)
	}
}
