// Package netns runs code, starts processes and opens sockets inside Linux
// network namespaces from a Go program. Go spreads goroutines over OS
// threads while setns(2) switches one thread, so every switch here happens
// on a locked thread that is switched back (or discarded) afterwards.
package netns

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread that has joined the network namespace at path
// (for example /run/netns/NAME). Sockets and processes fn creates stay in
// that namespace. If switching back fails the thread stays locked, so the
// runtime discards it when the goroutine ends instead of reusing it.
func Do(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", path, err)
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		ferr := fn()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// Start starts cmd inside the network namespace at path: the child is
// forked from a thread in that namespace, so all of its threads live there
// from the first instruction. An empty path starts it where we are.
func Start(cmd *exec.Cmd, path string) error {
	if path == "" {
		return cmd.Start()
	}
	return Do(path, cmd.Start)
}

// Dial opens a TCP connection from inside the namespace at path (empty:
// where we are). A socket keeps the namespace it was created in, so the
// connection can be used from any goroutine.
func Dial(ctx context.Context, path, addr string) (net.Conn, error) {
	var d net.Dialer
	if path == "" {
		return d.DialContext(ctx, "tcp", addr)
	}
	var conn net.Conn
	err := Do(path, func() error {
		var err error
		conn, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return conn, err
}
