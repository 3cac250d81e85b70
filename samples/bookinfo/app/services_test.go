package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// serve starts cfg's service on a loopback test server.
func serve(t *testing.T, cfg Config) *httptest.Server {
	t.Helper()
	h, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// closedURL is the address of a server that is gone: connections are refused.
func closedURL() string {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	return srv.URL
}

// do sends a request and returns status, Content-Type and body.
func do(t *testing.T, method, url string, body string, hdr http.Header) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

// assertJSON checks status and that body is JSON equal to want (itself JSON).
func assertJSON(t *testing.T, status int, body string, wantStatus int, want string) {
	t.Helper()
	if status != wantStatus {
		t.Errorf("status = %d, want %d (body %s)", status, wantStatus, body)
	}
	var got, exp any
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("body %q is not JSON: %v", body, err)
	}
	if err := json.Unmarshal([]byte(want), &exp); err != nil {
		t.Fatalf("bad expectation %q: %v", want, err)
	}
	if !reflect.DeepEqual(got, exp) {
		t.Errorf("body =\n%s\nwant\n%s", body, want)
	}
}

const (
	review1 = `"reviewer":"Reviewer1","text":"An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"`
	review2 = `"reviewer":"Reviewer2","text":"Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."`
)

func TestServicesJSON(t *testing.T) {
	ratings := serve(t, Config{Service: "ratings"})
	tests := []struct {
		name       string
		cfg        Config
		method     string
		path       string
		body       string
		wantStatus int
		want       string
	}{
		{"details", Config{Service: "details"}, "GET", "/details/0", "", 200,
			`{"id":0,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,"publisher":"PublisherA","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}`},
		{"details other id", Config{Service: "details"}, "GET", "/details/7", "", 200,
			`{"id":7,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,"publisher":"PublisherA","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}`},
		{"details bad id", Config{Service: "details"}, "GET", "/details/x", "", 400,
			`{"error":"please provide numeric product ID"}`},
		{"details health", Config{Service: "details"}, "GET", "/health", "", 200, `{"status":"Details is healthy"}`},
		{"ratings", Config{Service: "ratings"}, "GET", "/ratings/0", "", 200,
			`{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}`},
		{"ratings post", Config{Service: "ratings"}, "POST", "/ratings/1", `{"Reviewer1":1}`, 200,
			`{"id":1,"ratings":{"Reviewer1":1}}`},
		{"ratings post invalid", Config{Service: "ratings"}, "POST", "/ratings/1", `{`, 400,
			`{"error":"please provide valid ratings JSON"}`},
		{"ratings health", Config{Service: "ratings"}, "GET", "/health", "", 200, `{"status":"Ratings is healthy"}`},
		{"reviews v1", Config{Service: "reviews", Version: "v1", PodName: "reviews-v1-x", ClusterName: "null"}, "GET", "/reviews/0", "", 200,
			`{"id":"0","podname":"reviews-v1-x","clustername":"null","version":"v1","reviews":[{` + review1 + `},{` + review2 + `}]}`},
		{"reviews v2", Config{Service: "reviews", Version: "v2", PodName: "reviews-v2-x", ClusterName: "c1", RatingsURL: ratings.URL}, "GET", "/reviews/0", "", 200,
			`{"id":"0","podname":"reviews-v2-x","clustername":"c1","version":"v2","reviews":[` +
				`{` + review1 + `,"rating":{"stars":5,"color":"black"}},{` + review2 + `,"rating":{"stars":4,"color":"black"}}]}`},
		{"reviews v3", Config{Service: "reviews", Version: "v3", PodName: "reviews-v3-x", ClusterName: "null", RatingsURL: ratings.URL}, "GET", "/reviews/0", "", 200,
			`{"id":"0","podname":"reviews-v3-x","clustername":"null","version":"v3","reviews":[` +
				`{` + review1 + `,"rating":{"stars":5,"color":"red"}},{` + review2 + `,"rating":{"stars":4,"color":"red"}}]}`},
		{"reviews v3 ratings down", Config{Service: "reviews", Version: "v3", PodName: "p", ClusterName: "null", RatingsURL: closedURL()}, "GET", "/reviews/0", "", 200,
			`{"id":"0","podname":"p","clustername":"null","version":"v3","reviews":[` +
				`{` + review1 + `,"rating":{"error":"Ratings service is currently unavailable"}},{` + review2 + `,"rating":{"error":"Ratings service is currently unavailable"}}]}`},
		{"reviews bad id", Config{Service: "reviews", Version: "v1"}, "GET", "/reviews/x", "", 400,
			`{"error":"please provide numeric product ID"}`},
		{"reviews health", Config{Service: "reviews", Version: "v2"}, "GET", "/health", "", 200, `{"status":"Reviews is healthy"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := serve(t, tt.cfg)
			status, ctype, body := do(t, tt.method, srv.URL+tt.path, tt.body, nil)
			if ctype != "application/json" {
				t.Errorf("Content-Type = %q", ctype)
			}
			assertJSON(t, status, body, tt.wantStatus, tt.want)
		})
	}
}

func TestRatingsPostThenGet(t *testing.T) {
	srv := serve(t, Config{Service: "ratings"})
	do(t, "POST", srv.URL+"/ratings/3", `{"Reviewer1":2,"Reviewer2":1}`, nil)
	status, _, body := do(t, "GET", srv.URL+"/ratings/3", "", nil)
	assertJSON(t, status, body, 200, `{"id":3,"ratings":{"Reviewer1":2,"Reviewer2":1}}`)
	status, _, body = do(t, "GET", srv.URL+"/ratings/0", "", nil)
	assertJSON(t, status, body, 200, `{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}`)
}

func TestReviewsRatingsFailures(t *testing.T) {
	unavailable := `{"error":"Ratings service is currently unavailable"}`
	tests := []struct {
		name    string
		ratings http.HandlerFunc
		want1   string // Reviewer1's rating
	}{
		{"abort 503", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) }, unavailable},
		{"not JSON", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "<html>") }, unavailable},
		{"delay past timeout", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}, unavailable},
		{"missing reviewer", func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, `{"id":0,"ratings":{"Reviewer2":3}}`)
		}, unavailable},
		{"custom stars", func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, `{"id":0,"ratings":{"Reviewer1":1}}`)
		}, `{"stars":1,"color":"black"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ratings := httptest.NewServer(tt.ratings)
			defer ratings.Close()
			srv := serve(t, Config{Service: "reviews", Version: "v2", RatingsURL: ratings.URL, Timeout: 100 * time.Millisecond})
			status, _, body := do(t, "GET", srv.URL+"/reviews/0", "", nil)
			if status != 200 {
				t.Fatalf("status = %d", status)
			}
			var reply struct {
				Reviews []struct{ Rating json.RawMessage }
			}
			if err := json.Unmarshal([]byte(body), &reply); err != nil || len(reply.Reviews) != 2 {
				t.Fatalf("body %s: %v", body, err)
			}
			assertJSON(t, 200, string(reply.Reviews[0].Rating), 200, tt.want1)
		})
	}
}

func TestReviewsPropagatesHeaders(t *testing.T) {
	got := make(chan http.Header, 1)
	ratings := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		writeJSON(w, 200, ratingsReply{0, defaultRatings})
	}))
	defer ratings.Close()
	srv := serve(t, Config{Service: "reviews", Version: "v3", RatingsURL: ratings.URL})
	in := tracingHeaders()
	in.Set("End-User", "jason")
	in.Set("Cookie", "session=secret")
	do(t, "GET", srv.URL+"/reviews/0", "", in)
	assertPropagated(t, <-got, in, "jason")
}

// tracingHeaders is a full set of trace-context headers, as Envoy or a tracer sets them.
func tracingHeaders() http.Header {
	h := http.Header{}
	for k, v := range map[string]string{
		"x-request-id":                "7f0c7a3e-6b8f-4d1f-9d4e-2b1f0c0e9a11",
		"x-b3-traceid":                "80f198ee56343ba864fe8b2a57d3eff7",
		"x-b3-spanid":                 "e457b5a2e4d86bd1",
		"x-b3-parentspanid":           "05e3ac9a4f6e3b90",
		"x-b3-sampled":                "1",
		"x-b3-flags":                  "0",
		"b3":                          "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
		"traceparent":                 "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"tracestate":                  "congo=t61rcWkgMzE",
		"baggage":                     "k=v",
		"x-ot-span-context":           "abc",
		"x-datadog-trace-id":          "1",
		"x-datadog-parent-id":         "2",
		"x-datadog-sampling-priority": "1",
		"user-agent":                  "bookinfo-test",
	} {
		h.Set(k, v)
	}
	return h
}

// assertPropagated checks that got carries every tracing header of sent, end-user
// equal to wantUser, and no cookie.
func assertPropagated(t *testing.T, got, sent http.Header, wantUser string) {
	t.Helper()
	for k := range tracingHeaders() {
		if g, w := got.Get(k), sent.Get(k); g != w {
			t.Errorf("%s = %q, want %q", k, g, w)
		}
	}
	if g := got.Get("End-User"); g != wantUser {
		t.Errorf("end-user = %q, want %q", g, wantUser)
	}
	if c := got.Get("Cookie"); c != "" {
		t.Errorf("cookie leaked downstream: %q", c)
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    Config
		wantErr string
	}{
		{"flags", []string{"--service=reviews", "--version=v2", "--port=8080"}, map[string]string{"HOSTNAME": "pod-1"},
			Config{Service: "reviews", Version: "v2", Port: 8080, DetailsURL: "http://details:9080", ReviewsURL: "http://reviews:9080",
				RatingsURL: "http://ratings:9080", PodName: "pod-1", ClusterName: "null"}, ""},
		{"env", nil, map[string]string{"SERVICE": "productpage", "PORT": "9999", "HOSTNAME": "p", "CLUSTER_NAME": "east",
			"SERVICES_DOMAIN": ".default.svc.cluster.local", "DETAILS_HOSTNAME": "d", "REVIEWS_HOSTNAME": "localhost:9082"},
			Config{Service: "productpage", Version: "v1", Port: 9999, DetailsURL: "http://d.default.svc.cluster.local:9080",
				ReviewsURL: "http://localhost:9082", RatingsURL: "http://ratings.default.svc.cluster.local:9080", PodName: "p", ClusterName: "east"}, ""},
		{"domain without dot", []string{"--service=productpage"}, map[string]string{"SERVICES_DOMAIN": "ns.svc.cluster.local", "HOSTNAME": "h"},
			Config{Service: "productpage", Version: "v1", Port: 9080, DetailsURL: "http://details.ns.svc.cluster.local:9080",
				ReviewsURL: "http://reviews.ns.svc.cluster.local:9080", RatingsURL: "http://ratings.ns.svc.cluster.local:9080", PodName: "h", ClusterName: "null"}, ""},
		{"flag beats env", []string{"-service", "details"}, map[string]string{"SERVICE": "ratings", "SERVICE_VERSION": "v9", "HOSTNAME": "h"},
			Config{Service: "details", Version: "v9", Port: 9080, DetailsURL: "http://details:9080", ReviewsURL: "http://reviews:9080",
				RatingsURL: "http://ratings:9080", PodName: "h", ClusterName: "null"}, ""},
		{"no service", nil, nil, Config{}, `service ""`},
		{"unknown service", []string{"--service=mongodb"}, nil, Config{}, `service "mongodb"`},
		{"bad reviews version", []string{"--service=reviews", "--version=v4"}, nil, Config{}, `reviews version "v4"`},
		{"bad port env", []string{"--service=details"}, map[string]string{"PORT": "http"}, Config{}, "PORT"},
		{"bad port", []string{"--service=details", "--port=70000"}, nil, Config{}, "port 70000"},
		{"extra args", []string{"--service=details", "x"}, nil, Config{}, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConfig(tt.args, func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestFailEvery(t *testing.T) {
	h, err := New(Config{Service: "ratings", Version: "v1", Port: 9080, FailEvery: 3}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var codes []int
	for range 6 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/ratings/0", nil))
		codes = append(codes, rec.Code)
	}
	want := []int{200, 200, 503, 200, 200, 503}
	if fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Fatalf("codes = %v, want %v", codes, want)
	}
}

// TestUpstreamCallsOpenANewConnectionEach: like upstream Bookinfo, every
// call to another service is a new connection, so each is load balanced on
// its own (pooled connections pinned one reviews pod per productpage).
func TestUpstreamCallsOpenANewConnectionEach(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]int{"n": 1})
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	for range 3 {
		var out map[string]int
		if status, err := getJSON(context.Background(), srv.URL, http.Header{}, 5*time.Second, &out); err != nil || status != 200 {
			t.Fatalf("getJSON = %d, %v", status, err)
		}
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("3 calls used %d connections, want 3", n)
	}
}
