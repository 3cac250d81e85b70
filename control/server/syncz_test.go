package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weft-mesh/weft/control/server/access"
	"github.com/weft-mesh/weft/control/xds"
)

func TestSynczServesConnectedClients(t *testing.T) {
	s := &syncz{pod: "weft-control-0"}
	h := monitoringServer(":0", prometheus.NewRegistry(), &readiness{}, s, access.NewGuard(nil, "weft-system", openPaths, nil)).Handler
	get := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, loopback(httptest.NewRequest(http.MethodGet, "/debug/syncz", nil)))
		return rec
	}
	if rec := get(); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("before the xDS server exists: %d", rec.Code)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.setClients(xds.New(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry()))
	rec := get()
	var body Syncz
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("%d %v: %s", rec.Code, err, rec.Body)
	}
	if body.Pod != "weft-control-0" || body.Clients == nil || len(body.Clients) != 0 {
		t.Fatalf("body %+v", body)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, loopback(httptest.NewRequest(http.MethodPost, "/debug/syncz", nil)))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d (read-only)", rec.Code)
	}
}

// loopback makes r come from 127.0.0.1, as a port-forward's requests do.
func loopback(r *http.Request) *http.Request {
	r.RemoteAddr = "127.0.0.1:40000"
	return r
}
