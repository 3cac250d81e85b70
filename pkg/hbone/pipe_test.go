package hbone

import (
	"io"
	"net"
	"strings"
	"testing"
)

// tcpPair returns two connected loopback TCP sockets.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// TestPipeCountsEachDirection sends different amounts each way, so a swap
// of the two counters (which telemetry reports as received/sent) shows.
func TestPipeCountsEachDirection(t *testing.T) {
	client, a := tcpPair(t)
	b, server := tcpPair(t)
	type result struct{ aToB, bToA int64 }
	done := make(chan result, 1)
	go func() {
		x, y, _ := Pipe(a, b)
		done <- result{x, y}
	}()
	client.Write([]byte("request"))
	client.CloseWrite()
	if got, err := io.ReadAll(server); err != nil || string(got) != "request" {
		t.Fatalf("server read %q, %v", got, err)
	}
	server.Write([]byte(strings.Repeat("r", 100)))
	server.CloseWrite()
	if got, err := io.ReadAll(client); err != nil || len(got) != 100 {
		t.Fatalf("client read %d bytes, %v", len(got), err)
	}
	if r := <-done; r.aToB != 7 || r.bToA != 100 {
		t.Errorf("Pipe counted aToB=%d bToA=%d, want 7 and 100", r.aToB, r.bToA)
	}
}
