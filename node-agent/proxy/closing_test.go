package proxy

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// closingServer listens on ip and runs serve on every connection.
func closingServer(t *testing.T, ip string, serve func(*net.TCPConn)) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serve(c.(*net.TCPConn))
		}
	}()
	return addrPort(l.Addr())
}

// The paths a connection from pod A can take, by destination pod.
var closingPaths = []struct{ name, ip string }{
	{"remote over HBONE", podB.ip},
	{"same node", podC.ip},
	{"passthrough to a non-mesh pod", podD.ip},
}

// TestServerClosesFirst: a server that answers and closes without waiting
// for the client (HTTP/1.0, Connection: close) must reach the client as
// data then EOF, while the client has not half-closed. The agent's capped
// listener once hid CloseWrite, so the FIN never came and such clients hung.
func TestServerClosesFirst(t *testing.T) {
	m := newMesh(t)
	for _, p := range closingPaths {
		t.Run(p.name, func(t *testing.T) {
			dst := closingServer(t, p.ip, func(c *net.TCPConn) {
				buf := make([]byte, 7)
				io.ReadFull(c, buf)
				c.Write([]byte("bye"))
				c.Close()
			})
			c := m.fromA(t, dst)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte("request")); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "bye" {
				t.Fatalf("read to EOF = %q, %v; want \"bye\" then EOF (the server's FIN)", got, err)
			}
		})
	}
}

// TestServerResetArrivesAsReset: a server's RST reaches the client as a
// reset, not as a FIN that would pass a truncated stream off as complete.
func TestServerResetArrivesAsReset(t *testing.T) {
	m := newMesh(t)
	for _, p := range closingPaths {
		t.Run(p.name, func(t *testing.T) {
			dst := closingServer(t, p.ip, func(c *net.TCPConn) {
				buf := make([]byte, 7)
				io.ReadFull(c, buf)
				c.Write([]byte("partial"))
				c.SetLinger(0)
				c.Close()
			})
			c := m.fromA(t, dst)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte("request")); err != nil {
				t.Fatal(err)
			}
			_, err := io.ReadAll(c)
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("read after the server's RST: %v, want ECONNRESET", err)
			}
		})
	}
}

// TestClientResetArrivesAsReset: the other direction.
func TestClientResetArrivesAsReset(t *testing.T) {
	m := newMesh(t)
	for _, p := range closingPaths {
		t.Run(p.name, func(t *testing.T) {
			got := make(chan error, 1)
			dst := closingServer(t, p.ip, func(c *net.TCPConn) {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				c.Write([]byte("hello"))
				_, err := io.ReadAll(c)
				got <- err
			})
			c := m.fromA(t, dst)
			if _, err := io.ReadFull(c, make([]byte, 5)); err != nil {
				t.Fatal(err)
			}
			c.SetLinger(0)
			c.Close()
			if err := <-got; !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("server read after the client's RST: %v, want ECONNRESET", err)
			}
		})
	}
}

// TestServerHalfClosesFirst: a server that sends a greeting and half-closes
// (shutdown(SHUT_WR)) and then reads what the client still sends gets all
// of it and the client's FIN, on every path: across HBONE too, where each
// direction of the tunnel stream ends on its own.
func TestServerHalfClosesFirst(t *testing.T) {
	m := newMesh(t)
	payload := bytes.Repeat([]byte("after the greeting "), 1<<20/19)
	want := sha256.Sum256(payload)
	for _, p := range closingPaths {
		t.Run(p.name, func(t *testing.T) {
			got := make(chan [32]byte, 1)
			dst := closingServer(t, p.ip, func(c *net.TCPConn) {
				defer c.Close()
				c.Write([]byte("greeting"))
				c.CloseWrite()
				h := sha256.New()
				if _, err := io.Copy(h, c); err != nil {
					t.Errorf("server reading after its half-close: %v", err)
				}
				got <- [32]byte(h.Sum(nil))
			})
			c := m.fromA(t, dst)
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			greeting, err := io.ReadAll(c)
			if err != nil || string(greeting) != "greeting" {
				t.Fatalf("client read %q, %v; want the greeting then EOF", greeting, err)
			}
			if _, err := c.Write(payload); err != nil {
				t.Fatalf("client writing after the server's half-close: %v", err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if sum := <-got; sum != want {
				t.Fatal("the server did not read exactly what the client sent after its half-close")
			}
		})
	}
}
