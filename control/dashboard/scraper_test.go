package dashboard

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-mesh/weft/control/server/access"
	"github.com/weft-mesh/weft/internal/await"
)

// TestScraperServesGraph scrapes a fake node agent serving a fixture,
// through the HTTP handler, and stops once nobody asks any more.
func TestScraperServesGraph(t *testing.T) {
	body, err := os.ReadFile("testdata/agent-a-2.prom")
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int32
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != MetricsPath {
			http.NotFound(w, r)
			return
		}
		hits.Add(1)
		w.Write(body)
	}))
	defer agent.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("not { metrics")) }))
	defer broken.Close()

	stopped := await.NewLogLine("stopped scraping")
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := &Scraper{
		Targets: func() []Target {
			return []Target{{Kind: KindNodeAgent, Namespace: "weft-system", Pod: "a", URL: agent.URL + MetricsPath},
				{Kind: KindNodeAgent, Namespace: "weft-system", Pod: "b", URL: broken.URL + MetricsPath}}
		},
		Interval: 20 * time.Millisecond, Idle: time.Minute, Now: clock,
		Log: slog.New(slog.NewTextHandler(stopped, nil)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	mux := http.NewServeMux()
	Register(mux, s)
	// As behind access.Guard for a reader who sees everything.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r.WithContext(access.NewContext(r.Context(), access.Everything())))
	}))
	defer srv.Close()
	unguarded := httptest.NewServer(mux)
	defer unguarded.Close()

	if hits.Load() != 0 {
		t.Fatal("scraped before anyone asked")
	}
	var g Graph
	getJSON(t, srv.URL+"/dashboard/api/graph", &g)
	if len(g.Targets) != 2 || !g.Targets[0].OK || g.Targets[1].OK || !strings.Contains(g.Targets[1].Error, "parse metrics") {
		t.Fatalf("targets %+v: want a scraped and a failed one", g.Targets)
	}
	var found bool
	for _, e := range g.Edges {
		found = found || (e.ID == "default/productpage-v1->default/details-v1" && e.Connections == 20 && e.MTLS == MTLS)
	}
	if !found {
		t.Fatalf("the first answer lacks the fixture's edge: %+v", g.Edges)
	}

	var none Graph
	getJSON(t, unguarded.URL+"/dashboard/api/graph", &none)
	if len(none.Edges)+len(none.Nodes)+len(none.Targets) != 0 {
		t.Fatalf("a request that did not pass access.Guard sees %+v; want nothing", none)
	}

	page := get(t, srv.URL+"/dashboard")
	if !strings.Contains(page, "<svg") || strings.Contains(page, "<script src") || strings.Contains(page, "<link") {
		t.Fatal("the page is not the self-contained dashboard")
	}

	// Nobody asks for longer than Idle: the scraper stops.
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	stopped.Wait(t)
	cancel()
	<-done
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return string(b)
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(get(t, url)), v); err != nil {
		t.Fatal(err)
	}
}
