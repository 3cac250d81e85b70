package app

import (
	"bytes"
	"embed"
	"encoding/json"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
)

//go:embed templates/*.html
var templateFS embed.FS

var templates = template.Must(template.ParseFS(templateFS, "templates/*.html"))

// Upstream's error texts; Istio's fault-injection task looks for them on the page.
const (
	detailsUnavailable        = "Sorry, product details are currently unavailable for this book."
	reviewsUnavailable        = "Sorry, product reviews are currently unavailable for this book."
	productRatingsUnavailable = "Sorry, product ratings are currently unavailable for this book."
)

// userCookie holds the signed-in user; it never leaves productpage (see propagated).
const userCookie = "user"

type product struct {
	ID              int           `json:"id"`
	Title           string        `json:"title"`
	DescriptionHTML template.HTML `json:"descriptionHtml"`
}

var products = []product{{
	ID:    0,
	Title: "The Comedy of Errors",
	DescriptionHTML: `<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">Wikipedia Summary</a>: ` +
		`The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest and one of his ` +
		`most farcical comedies, with a major part of the humour coming from slapstick and mistaken identity, in ` +
		`addition to puns and word play.`,
}}

type productPage struct {
	cfg Config
	log *slog.Logger
}

func newProductPage(cfg Config, log *slog.Logger) *productPage {
	return &productPage{cfg: cfg, log: log}
}

func (p *productPage) register(mux *http.ServeMux) {
	index := func(w http.ResponseWriter, _ *http.Request) { p.render(w, "index.html", nil) }
	mux.HandleFunc("GET /{$}", index)
	mux.HandleFunc("GET /index.html", index)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("Product page is healthy"))
	})
	mux.HandleFunc("POST /login", login)
	mux.HandleFunc("GET /logout", logout)
	mux.HandleFunc("GET /productpage", p.productPage)

	mux.HandleFunc("GET /api/v1/products", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, products)
	})
	mux.HandleFunc("GET /api/v1/products/{id}", p.api(p.details, detailsUnavailable))
	mux.HandleFunc("GET /api/v1/products/{id}/reviews", p.api(p.reviews, reviewsUnavailable))
	mux.HandleFunc("GET /api/v1/products/{id}/ratings", p.api(p.ratings, productRatingsUnavailable))
}

// pageData feeds templates/productpage.html; nil Details or Reviews means the
// upstream call failed.
type pageData struct {
	User                                   string
	Product                                product
	Details                                *bookDetails
	Reviews                                *reviewsReply
	DetailsUnavailable, ReviewsUnavailable string
}

func (p *productPage) productPage(w http.ResponseWriter, r *http.Request) {
	const id = "0" // upstream shows a single book too
	data := pageData{
		User:               currentUser(r),
		Product:            products[0],
		DetailsUnavailable: detailsUnavailable,
		ReviewsUnavailable: reviewsUnavailable,
	}
	var d bookDetails
	if p.details(r, id, &d) == http.StatusOK {
		data.Details = &d
	}
	var rv reviewsReply
	if p.reviews(r, id, &rv) == http.StatusOK {
		data.Reviews = &rv
	}
	// The page is 200 even when upstreams fail: it degrades to the "Sorry" texts.
	p.render(w, "productpage.html", data)
}

// render executes a template into a buffer first, so a template error can
// still become a clean 500.
func (p *productPage) render(w http.ResponseWriter, name string, data any) {
	var buf bytes.Buffer
	if err := templates.ExecuteTemplate(&buf, name, data); err != nil {
		p.log.Error("rendering template", "template", name, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = buf.WriteTo(w)
}

// fetcher GETs one upstream resource for product id into out and returns the status.
type fetcher func(r *http.Request, id string, out any) int

// api serves an upstream resource as JSON, or upstream's error body and status.
func (p *productPage) api(fetch fetcher, unavailable string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body json.RawMessage
		if status := fetch(r, r.PathValue("id"), &body); status != http.StatusOK {
			writeJSON(w, status, errorBody{unavailable})
			return
		}
		writeJSON(w, http.StatusOK, body)
	}
}

func (p *productPage) details(r *http.Request, id string, out any) int {
	return p.get(r, p.cfg.DetailsURL+"/details/"+url.PathEscape(id), DetailsTimeout, out)
}

func (p *productPage) ratings(r *http.Request, id string, out any) int {
	return p.get(r, p.cfg.RatingsURL+"/ratings/"+url.PathEscape(id), RatingsTimeout, out)
}

// reviews tries twice, like upstream; the fault-injection task's timing relies on it.
func (p *productPage) reviews(r *http.Request, id string, out any) int {
	var status int
	for range ReviewsAttempts {
		if status = p.get(r, p.cfg.ReviewsURL+"/reviews/"+url.PathEscape(id), ReviewsTimeout, out); status == http.StatusOK {
			break
		}
	}
	return status
}

func (p *productPage) get(r *http.Request, target string, timeout time.Duration, out any) int {
	status, err := getJSON(r.Context(), target, forwardHeaders(r), p.cfg.timeout(timeout), out)
	if err != nil {
		p.log.Warn("upstream request failed", "url", target, "status", status, "error", err)
	}
	return status
}

// forwardHeaders is what productpage sends downstream: the propagated headers,
// with end-user taken from the login cookie rather than from the client.
func forwardHeaders(r *http.Request) http.Header {
	h := propagate(r.Header)
	h.Del(endUserHeader)
	if user := currentUser(r); user != "" {
		h.Set(endUserHeader, user)
	}
	return h
}

func currentUser(r *http.Request) string {
	c, err := r.Cookie(userCookie)
	if err != nil {
		return ""
	}
	user, err := url.QueryUnescape(c.Value)
	if err != nil {
		return ""
	}
	return printable(user)
}

// printable drops control characters, which are invalid in the end-user header;
// the cookie is client-controlled, so this runs on every read.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, s)
}

// login accepts any user name (there are no passwords, as upstream).
func login(w http.ResponseWriter, r *http.Request) {
	if user := strings.TrimSpace(r.PostFormValue("username")); user != "" {
		http.SetCookie(w, &http.Cookie{
			Name:     userCookie,
			Value:    url.QueryEscape(user), // keeps spaces and commas cookie-safe
			Path:     "/",
			HttpOnly: true,
			SameSite: http.SameSiteLaxMode,
		})
	}
	http.Redirect(w, r, "/productpage", http.StatusFound)
}

func logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: userCookie, Path: "/", MaxAge: -1})
	http.Redirect(w, r, "/productpage", http.StatusFound)
}
