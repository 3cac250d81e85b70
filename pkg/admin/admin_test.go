package admin

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
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
