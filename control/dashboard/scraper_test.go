package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
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

// TestGraphWindows runs the scraper for 20 minutes of fake time against a
// node agent whose edge opens 1 connection/s for 5 minutes and 3/s after:
// each window's rate is the counter's growth over the window the graph
// reports, that window is the one asked for (a minute more at most where
// rounds are thinned), and the rounds kept stay bounded.
func TestGraphWindows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		opened := func(at time.Time) float64 {
			s := at.Sub(start).Seconds()
			return min(s, 300) + 3*max(s-300, 0)
		}
		s := &Scraper{
			Targets: func() []Target {
				return []Target{{Kind: KindNodeAgent, Namespace: "weft-system", Pod: "a", URL: "http://agent/metrics"}}
			},
			Interval: 5 * time.Second, Idle: time.Hour,
			Client: &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				body := fmt.Sprintf("# TYPE istio_tcp_connections_opened_total counter\n"+
					"istio_tcp_connections_opened_total{reporter=\"destination\",source_workload=\"a\",source_workload_namespace=\"ns\","+
					"destination_workload=\"b\",destination_workload_namespace=\"ns\",connection_security_policy=\"mutual_tls\"} %v\n", opened(time.Now()))
				return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
			})},
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go s.Run(ctx)
		s.Graph(ctx, time.Second, 0) // wakes the scraper

		time.Sleep(10 * time.Minute)
		synctest.Wait()
		now := time.Now()
		for _, c := range []struct{ ask, min, max time.Duration }{
			{0, 5 * time.Second, 5 * time.Second},
			{time.Minute, time.Minute, time.Minute},
			{8 * time.Minute, 8 * time.Minute, 9 * time.Minute},
			{MaxWindow, 10 * time.Minute, 10 * time.Minute}, // all there is
		} {
			g := s.Graph(ctx, time.Second, c.ask)
			w := time.Duration(g.WindowSeconds * float64(time.Second))
			if w < c.min || w > c.max {
				t.Errorf("window %s: the graph's window is %s, want %s to %s", c.ask, w, c.min, c.max)
			}
			want := (opened(now) - opened(now.Add(-w))) / g.WindowSeconds
			if len(g.Edges) != 1 || math.Abs(g.Edges[0].ConnectionsPerSecond-want) > 1e-9 {
				t.Errorf("window %s (%s): edges %+v, want one at %v conn/s", c.ask, w, g.Edges, want)
			}
		}

		time.Sleep(20 * time.Minute)
		synctest.Wait()
		s.mu.Lock()
		kept := len(s.rounds)
		s.mu.Unlock()
		if most := int(RecentWindow/s.Interval) + int((MaxWindow-RecentWindow)/time.Minute) + 2; kept > most {
			t.Errorf("%d rounds kept after 30 minutes, want at most %d", kept, most)
		}
		if g := s.Graph(ctx, time.Second, MaxWindow); g.WindowSeconds < MaxWindow.Seconds() || g.WindowSeconds > (MaxWindow+time.Minute).Seconds() {
			t.Errorf("window %s after 30 minutes: %v s", MaxWindow, g.WindowSeconds)
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestGraphWindowParameter: the API refuses windows it cannot serve.
func TestGraphWindowParameter(t *testing.T) {
	for v, ok := range map[string]bool{"": true, "0s": true, "5m": true, "15m": true, "16m": false, "-1m": false, "five": false} {
		_, err := parseWindow(v)
		if (err == nil) != ok {
			t.Errorf("window %q: error %v, want ok=%v", v, err, ok)
		}
	}
}
