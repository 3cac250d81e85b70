// Package admin holds the HTTP endpoints every Weft data-plane process
// serves the same way: Prometheus metrics, liveness and readiness, JSON
// dumps.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Serve serves h on addr until ctx ends. It returns once listening, so a
// port already in use is an error at start-up, not a log line later. The
// socket has no SO_REUSEPORT: no other process (a root hostNetwork one
// included) can join the port and answer probes or scrapes in its place.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	serve(ctx, ln, h, log)
	return nil
}

// ServeWhenFree is Serve for a host-network process whose predecessor may
// still hold addr (a rolling update's surge pod starts next to the old
// one): while the port is in use it retries in the background, every
// retryEvery, until it is bound or ctx ends. Other errors are returned.
func ServeWhenFree(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	err := Serve(ctx, addr, h, log)
	if !errors.Is(err, unix.EADDRINUSE) {
		return err
	}
	log.Info("port in use (by the process this one succeeds, or another): serving once it is free", "addr", addr)
	go func() {
		t := time.NewTicker(retryEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			err := Serve(ctx, addr, h, log)
			switch {
			case err == nil:
				log.Info("port free: serving", "addr", addr)
				return
			case !errors.Is(err, unix.EADDRINUSE):
				log.Error("serving once the port is free", "addr", addr, "err", err)
				return
			}
		}
	}()
	return nil
}

// retryEvery is how often ServeWhenFree tries a held port.
const retryEvery = 500 * time.Millisecond

func serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) {
	s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		s.Close()
	}()
	go func() {
		if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "addr", ln.Addr(), "err", err)
		}
	}()
}

// Metrics serves reg on /metrics and on Istio's /stats/prometheus, so
// existing scrape configurations keep working.
func Metrics(reg *prometheus.Registry) http.Handler {
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	mux.Handle("GET /stats/prometheus", h)
	return mux
}

// Health serves /healthz/live (always ok while the process serves) and
// /healthz/ready: ok when notReady returns "", else 503 with its reason.
func Health(notReady func() string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/live", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, _ *http.Request) {
		if why := notReady(); why != "" {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}

// WriteJSON writes v as indented JSON.
func WriteJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
