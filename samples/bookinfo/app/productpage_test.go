package app

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startBookinfo runs all four services with reviews at version and returns productpage.
func startBookinfo(t *testing.T, version string) *httptest.Server {
	t.Helper()
	ratings := serve(t, Config{Service: "ratings"})
	return serve(t, Config{
		Service:    "productpage",
		DetailsURL: serve(t, Config{Service: "details"}).URL,
		ReviewsURL: serve(t, Config{Service: "reviews", Version: version, PodName: "reviews-" + version + "-abc",
			ClusterName: "null", RatingsURL: ratings.URL}).URL,
		RatingsURL: ratings.URL,
	})
}

func TestProductPageReviewsVersions(t *testing.T) {
	tests := []struct{ version, color string }{
		{"v1", ""}, // no ratings at all
		{"v2", "black"},
		{"v3", "red"},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			pp := startBookinfo(t, tt.version)
			status, ctype, page := do(t, "GET", pp.URL+"/productpage", "", nil)
			if status != 200 || ctype != "text/html; charset=utf-8" {
				t.Fatalf("status %d, Content-Type %q", status, ctype)
			}
			for _, want := range []string{
				"<title>Simple Bookstore App</title>",
				"<h1>The Comedy of Errors</h1>",
				"<b>William Shakespeare's</b>", // description is trusted HTML
				"<dt>Type:</dt><dd>paperback</dd>",
				"<dt>Pages:</dt><dd>200</dd>",
				"<dt>Publisher:</dt><dd>PublisherA</dd>",
				"<dt>ISBN-10:</dt><dd>1234567890</dd>",
				"<dt>ISBN-13:</dt><dd>123-1234567890</dd>",
				"An extremely entertaining play by Shakespeare.",
				"<small>Reviewer2</small>",
				fmt.Sprintf(`<div data-reviews-version="%s">`, tt.version),
				fmt.Sprintf("<u>reviews-%s-abc</u>", tt.version),
				`name="login_form"`,
			} {
				if !strings.Contains(page, want) {
					t.Errorf("page lacks %q", want)
				}
			}
			// Reviewer1 has 5 stars and Reviewer2 4, so 9 full and 1 empty.
			fonts, full, empty := 0, 0, 0
			if tt.color != "" {
				fonts, full, empty = 2, 9, 1
			}
			for what, want := range map[string]int{
				`<font color="` + tt.color + `">`:  fonts,
				`<font color=`:                     fonts,
				`"glyphicon glyphicon-star"`:       full,
				`"glyphicon glyphicon-star-empty"`: empty,
			} {
				if got := strings.Count(page, what); got != want {
					t.Errorf("count(%s) = %d, want %d", what, got, want)
				}
			}
			if strings.Contains(page, "Sorry") || strings.Contains(page, "on cluster") {
				t.Errorf("unexpected error or cluster text in page:\n%s", page)
			}
		})
	}
}

func TestProductPageDegraded(t *testing.T) {
	var reviewsCalls atomic.Int32
	abort := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) }))
	defer abort.Close()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reviewsCalls.Add(1)
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer slow.Close()
	details := serve(t, Config{Service: "details"}).URL
	reviews := serve(t, Config{Service: "reviews", Version: "v1"}).URL
	const (
		detailsSorry = "Sorry, product details are currently unavailable for this book."
		reviewsSorry = "Sorry, product reviews are currently unavailable for this book."
	)
	tests := []struct {
		name                     string
		details, reviews         string
		detailsDown, reviewsDown bool
	}{
		{"details refused", closedURL(), reviews, true, false},
		{"reviews refused", details, closedURL(), false, true},
		{"both aborted", abort.URL, abort.URL, true, true},
		{"reviews delayed", details, slow.URL, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reviewsCalls.Store(0)
			pp := serve(t, Config{Service: "productpage", DetailsURL: tt.details, ReviewsURL: tt.reviews, Timeout: 100 * time.Millisecond})
			status, _, page := do(t, "GET", pp.URL+"/productpage", "", nil)
			if status != 200 {
				t.Fatalf("status = %d, want 200", status)
			}
			checks := []struct {
				down      bool
				sorry, ok string
			}{
				{tt.detailsDown, detailsSorry, "<dt>Publisher:</dt>"},
				{tt.reviewsDown, reviewsSorry, "data-reviews-version"},
			}
			for _, c := range checks {
				if got := strings.Contains(page, c.sorry); got != c.down {
					t.Errorf("page contains %q = %v, want %v", c.sorry, got, c.down)
				}
				if got := strings.Contains(page, c.ok); got == c.down {
					t.Errorf("page contains %q = %v, want %v", c.ok, got, !c.down)
				}
			}
			if tt.reviews == slow.URL && reviewsCalls.Load() != ReviewsAttempts {
				t.Errorf("reviews attempts = %d, want %d", reviewsCalls.Load(), ReviewsAttempts)
			}
		})
	}
}

func TestProductPageAPI(t *testing.T) {
	pp := startBookinfo(t, "v2")
	down := serve(t, Config{Service: "productpage", DetailsURL: closedURL(), ReviewsURL: closedURL(), RatingsURL: closedURL()})
	tests := []struct {
		srv        *httptest.Server
		path       string
		wantStatus int
		want       string
	}{
		{pp, "/api/v1/products", 200, `[{"id":0,"title":"The Comedy of Errors","descriptionHtml":` +
			`"<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">Wikipedia Summary</a>: The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. ` +
			`It is his shortest and one of his most farcical comedies, with a major part of the humour coming from slapstick and mistaken identity, in addition to puns and word play."}]`},
		{pp, "/api/v1/products/0", 200,
			`{"id":0,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,"publisher":"PublisherA","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}`},
		{pp, "/api/v1/products/0/reviews", 200,
			`{"id":"0","podname":"reviews-v2-abc","clustername":"null","version":"v2","reviews":[` +
				`{` + review1 + `,"rating":{"stars":5,"color":"black"}},{` + review2 + `,"rating":{"stars":4,"color":"black"}}]}`},
		{pp, "/api/v1/products/0/ratings", 200, `{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}`},
		{pp, "/api/v1/products/x", 400, `{"error":"Sorry, product details are currently unavailable for this book."}`},
		{down, "/api/v1/products/0", 500, `{"error":"Sorry, product details are currently unavailable for this book."}`},
		{down, "/api/v1/products/0/reviews", 500, `{"error":"Sorry, product reviews are currently unavailable for this book."}`},
		{down, "/api/v1/products/0/ratings", 500, `{"error":"Sorry, product ratings are currently unavailable for this book."}`},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			status, ctype, body := do(t, "GET", tt.srv.URL+tt.path, "", nil)
			if ctype != "application/json" {
				t.Errorf("Content-Type = %q", ctype)
			}
			assertJSON(t, status, body, tt.wantStatus, tt.want)
		})
	}
}

func TestProductPageStaticRoutes(t *testing.T) {
	pp := serve(t, Config{Service: "productpage"})
	tests := []struct {
		path, want string
		status     int
	}{
		{"/", `href="productpage"`, 200},
		{"/index.html", `href="productpage"`, 200},
		{"/health", "Product page is healthy", 200},
		{"/nope", "404 page not found", 404},
	}
	for _, tt := range tests {
		status, _, body := do(t, "GET", pp.URL+tt.path, "", nil)
		if status != tt.status || !strings.Contains(body, tt.want) {
			t.Errorf("GET %s = %d %q, want %d containing %q", tt.path, status, body, tt.status, tt.want)
		}
	}
}

func TestLoginLogout(t *testing.T) {
	var endUser atomic.Value // end-user seen by reviews
	endUser.Store("")
	reviews := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		endUser.Store(r.Header.Get("End-User"))
		writeJSON(w, 200, reviewsReply{ID: "0", Version: "v1", Reviews: bookReviews})
	}))
	defer reviews.Close()
	pp := serve(t, Config{Service: "productpage", DetailsURL: closedURL(), ReviewsURL: reviews.URL})

	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	page := func(resp *http.Response, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.Request.URL.Path != "/productpage" {
			t.Errorf("landed on %s, want /productpage", resp.Request.URL)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	steps := []struct {
		name    string
		do      func() (*http.Response, error)
		welcome string // "" means signed out
		endUser string
	}{
		{"anonymous", func() (*http.Response, error) { return client.Get(pp.URL + "/productpage") }, "", ""},
		{"login", func() (*http.Response, error) {
			return client.PostForm(pp.URL+"/login", url.Values{"username": {"jason"}, "passwd": {"x"}})
		}, "Welcome, jason", "jason"},
		{"still signed in", func() (*http.Response, error) { return client.Get(pp.URL + "/productpage") }, "Welcome, jason", "jason"},
		{"login escapes", func() (*http.Response, error) {
			return client.PostForm(pp.URL+"/login", url.Values{"username": {"<b>eve</b>, x"}})
		}, "Welcome, &lt;b&gt;eve&lt;/b&gt;, x", "<b>eve</b>, x"},
		{"logout", func() (*http.Response, error) { return client.Get(pp.URL + "/logout") }, "", ""},
	}
	for _, s := range steps {
		endUser.Store("")
		body := page(s.do())
		if s.welcome == "" {
			if strings.Contains(body, "Welcome,") || !strings.Contains(body, `name="login_form"`) {
				t.Errorf("%s: page should be signed out", s.name)
			}
		} else if !strings.Contains(body, s.welcome) {
			t.Errorf("%s: page lacks %q", s.name, s.welcome)
		}
		if got := endUser.Load(); got != s.endUser {
			t.Errorf("%s: reviews saw end-user %q, want %q", s.name, got, s.endUser)
		}
	}

	if c := jar.Cookies(mustParse(t, pp.URL)); len(c) != 0 {
		t.Errorf("cookies after logout: %v", c)
	}
}

func TestProductPagePropagatesHeaders(t *testing.T) {
	got := make(chan http.Header, 3) // details + reviews
	stub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		w.WriteHeader(503)
	}))
	defer stub.Close()
	pp := serve(t, Config{Service: "productpage", DetailsURL: stub.URL, ReviewsURL: stub.URL})

	tests := []struct {
		name, cookie, spoofed, wantUser string
	}{
		{"anonymous", "", "", ""},
		{"signed in", "user=jason", "", "jason"},
		{"client cannot spoof end-user", "", "jason", ""},
		{"cookie wins over spoofed end-user", "user=jason", "mallory", "jason"},
		{"control characters dropped", "user=ja%0Dson", "", "jason"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tracingHeaders()
			if tt.cookie != "" {
				in.Set("Cookie", tt.cookie)
			}
			if tt.spoofed != "" {
				in.Set("End-User", tt.spoofed)
			}
			do(t, "GET", pp.URL+"/productpage", "", in)
			// One details call and two reviews attempts.
			for range 1 + ReviewsAttempts {
				assertPropagated(t, <-got, in, tt.wantUser)
			}
		})
	}
}

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
