package dashboard

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/weft-mesh/weft/control/server/access"
)

//go:embed index.html
var page []byte

// Register adds GET /dashboard (the page) and GET /dashboard/api/graph
// (the graph as JSON) to mux. The graph is cut to the reader's
// access.Scope (from the request's context; none: an empty graph), so mux
// belongs behind an access.Guard.
func Register(mux *http.ServeMux, s *Scraper) {
	mux.HandleFunc("GET /dashboard", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		// Everything is inline; nothing may be loaded from elsewhere.
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Write(page)
	})
	mux.HandleFunc("GET /dashboard/api/graph", func(w http.ResponseWriter, r *http.Request) {
		window, err := parseWindow(r.URL.Query().Get("window"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		g := s.Graph(r.Context(), 3*time.Second, window).For(access.FromContext(r.Context()))
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(g)
	})
}

// parseWindow reads the graph's window parameter: a Go duration up to
// MaxWindow; empty is 0, the last scrape interval.
func parseWindow(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > MaxWindow {
		return 0, fmt.Errorf("window %q: want a duration from 0s to %s, e.g. 5m", v, MaxWindow)
	}
	return d, nil
}
