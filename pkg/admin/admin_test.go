package admin

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/internal/await"
)

func TestHealth(t *testing.T) {
	why := "waiting for config"
	h := Health(func() string { return why })
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get("/healthz/ready"); code != 503 || !strings.Contains(body, why) {
		t.Fatalf("not ready: %d %q", code, body)
	}
	if code, _ := get("/healthz/live"); code != 200 {
		t.Fatalf("live: %d", code)
	}
	why = ""
	if code, _ := get("/healthz/ready"); code != 200 {
		t.Fatalf("ready: %d", code)
	}
}

func TestMetricsOnBothPaths(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_test_total", Help: "x"})
	reg.MustRegister(c)
	c.Inc()
	for _, p := range []string{"/metrics", "/stats/prometheus"} {
		rec := httptest.NewRecorder()
		Metrics(reg).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p, nil))
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), "weft_test_total 1") {
			t.Fatalf("%s: %d %q", p, rec.Code, rec.Body.String())
		}
	}
}

// TestServedPortCannotBeJoined attacks the port as a root hostNetwork
// process would: a socket with SO_REUSEPORT and SO_REUSEADDR cannot bind
// it while it is served (with SO_REUSEPORT on the served socket, it could,
// and would answer a share of probes and scrapes).
func TestServedPortCannotBeJoined(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := freeAddr(t)
	if err := Serve(ctx, addr, Health(func() string { return "" }), slog.Default()); err != nil {
		t.Fatal(err)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		})
	}}
	if ln, err := lc.Listen(ctx, "tcp", addr); !errors.Is(err, unix.EADDRINUSE) {
		if ln != nil {
			ln.Close()
		}
		t.Fatalf("a reuseport socket on the served port: %v, want EADDRINUSE", err)
	}
}

// TestServeWhenFreeWaitsForThePredecessor: a port held (by a rolling
// update's old agent) is served once it is released; Serve refuses it.
func TestServeWhenFreeWaitsForThePredecessor(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	holder, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := holder.Addr().String()
	if err := Serve(ctx, addr, Health(func() string { return "" }), slog.Default()); !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("Serve on a held port: %v, want EADDRINUSE", err)
	}
	if err := ServeWhenFree(ctx, addr, Health(func() string { return "" }), slog.Default()); err != nil {
		t.Fatalf("ServeWhenFree on a held port: %v, want it to wait", err)
	}
	holder.Close()
	await.True(t, "the port served once free", func() bool {
		resp, err := http.Get("http://" + addr + "/healthz/live")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
