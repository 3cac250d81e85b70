package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/weft-mesh/weft/internal/await"
)

// drain stops accepting at once, keeps serving what is open, and returns
// when the last connection ends; at its deadline it closes the rest.
func TestConnSetDrain(t *testing.T) {
	for _, tc := range []struct {
		name              string
		clientClosesFirst bool
	}{{"open connections finish", true}, {"deadline closes the rest", false}} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var s connSet
			go s.serve(ln, slog.New(slog.DiscardHandler), func(c net.Conn) {
				io.Copy(c, c) // echo until the client closes
				c.Close()
			})
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			echoLine(t, c, "before")

			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.drain(ctx) }()
			await.True(t, "the drain to close the listener", func() bool {
				probe, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					return true
				}
				probe.Close()
				return false
			})
			echoLine(t, c, "during the drain")
			if tc.clientClosesFirst {
				c.Close()
				if err := <-done; err != nil {
					t.Fatalf("drain = %v, want nil once the connection ended", err)
				}
				return
			}
			if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("drain = %v, want the deadline", err)
			}
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Fatal("connection still open after the drain deadline")
			}
		})
	}
}

func echoLine(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo %q: %q %v", msg, got, err)
	}
}
