// Package app implements Istio's Bookinfo sample services (productpage, details,
// reviews, ratings) with the standard library, one service per process.
package app

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Upstream's timeouts. Istio's fault-injection task depends on them: a 7s delay
// on ratings outlasts productpage's 2 × 3s reviews budget, while reviews-v2
// (10s) keeps waiting, so the page shows "reviews unavailable".
const (
	DetailsTimeout     = 3 * time.Second
	ReviewsTimeout     = 3 * time.Second // per attempt
	ReviewsAttempts    = 2
	RatingsTimeout     = 3 * time.Second         // productpage -> ratings
	BlackRatingTimeout = 10 * time.Second        // reviews-v2 -> ratings
	RedRatingTimeout   = 2500 * time.Millisecond // reviews-v3 -> ratings
)

// Port is the port every Bookinfo service listens on and calls.
const Port = 9080

// Config selects and configures one service.
type Config struct {
	Service string // productpage, details, reviews or ratings
	Version string // v1..v3; only reviews behaves differently per version
	Port    int

	// Base URLs of the services this one calls, e.g. "http://details:9080".
	DetailsURL, ReviewsURL, RatingsURL string

	PodName     string // reported by reviews as "podname"
	ClusterName string // reported by reviews as "clustername"

	// Timeout, when non-zero, replaces every upstream timeout above (tests).
	Timeout time.Duration

	// FailEvery, when > 0, answers every FailEvery-th request with 503: a
	// deliberately flaky service for retry tutorials (not in upstream).
	FailEvery int

	// TLSCert and TLSKey, when set, make the service serve HTTPS with this
	// PEM pair instead of HTTP (not in upstream): a mesh service that does
	// its own TLS, as ingress PASSTHROUGH tutorials need.
	TLSCert, TLSKey string
}

// ParseConfig reads flags from args, falling back to the environment variables
// that upstream Bookinfo images and manifests use.
func ParseConfig(args []string, getenv func(string) string) (Config, error) {
	env := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	port, err := strconv.Atoi(env("PORT", strconv.Itoa(Port)))
	if err != nil {
		return Config{}, fmt.Errorf("PORT: %w", err)
	}
	var cfg Config
	fs := flag.NewFlagSet("bookinfo", flag.ContinueOnError)
	fs.StringVar(&cfg.Service, "service", getenv("SERVICE"), "productpage, details, reviews or ratings (env SERVICE)")
	fs.StringVar(&cfg.Version, "version", env("SERVICE_VERSION", "v1"), "service version; reviews: v1 (no stars), v2 (black), v3 (red) (env SERVICE_VERSION)")
	fs.IntVar(&cfg.Port, "port", port, "listen port (env PORT)")
	failEvery, err := strconv.Atoi(env("FAIL_EVERY", "0"))
	if err != nil {
		return Config{}, fmt.Errorf("FAIL_EVERY: %w", err)
	}
	fs.IntVar(&cfg.FailEvery, "fail-every", failEvery, "answer every Nth request with 503, for retry demos; 0 = never (env FAIL_EVERY)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "serve HTTPS with this PEM certificate file (with --tls-key)")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key file of --tls-cert")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return Config{}, fmt.Errorf("--tls-cert and --tls-key go together")
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}

	// Upstream prepends the dot; accept the suffix with or without it.
	domain := getenv("SERVICES_DOMAIN")
	if domain != "" && !strings.HasPrefix(domain, ".") {
		domain = "." + domain
	}
	cfg.DetailsURL = serviceURL(env("DETAILS_HOSTNAME", "details"), domain)
	cfg.ReviewsURL = serviceURL(env("REVIEWS_HOSTNAME", "reviews"), domain)
	cfg.RatingsURL = serviceURL(env("RATINGS_HOSTNAME", "ratings"), domain)
	cfg.PodName = getenv("HOSTNAME")
	if cfg.PodName == "" {
		cfg.PodName, _ = os.Hostname()
	}
	// Upstream reviews prints the unset variable as the string "null", and
	// productpage hides the cluster line for that value.
	cfg.ClusterName = env("CLUSTER_NAME", "null")
	if cfg.Port <= 0 || cfg.Port > 65535 {
		return Config{}, fmt.Errorf("port %d out of range", cfg.Port)
	}
	return cfg, cfg.validate()
}

// serviceURL builds upstream's http://<host><domain>:9080. A host that already
// has a port (e.g. localhost:9081) is used as is, for running outside a cluster.
func serviceURL(host, domain string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return "http://" + host
	}
	return "http://" + net.JoinHostPort(host+domain, strconv.Itoa(Port))
}

func (c Config) validate() error {
	switch c.Service {
	case "productpage", "details", "ratings":
	case "reviews":
		if _, ok := starColors[c.Version]; !ok {
			return fmt.Errorf("reviews version %q: want v1, v2 or v3", c.Version)
		}
	default:
		return fmt.Errorf("service %q: want productpage, details, reviews or ratings", c.Service)
	}
	return nil
}

// timeout returns def unless the config overrides all timeouts.
func (c Config) timeout(def time.Duration) time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return def
}

// New returns the HTTP handler of the configured service, logging each request to log.
func New(cfg Config, log *slog.Logger) (http.Handler, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	switch cfg.Service {
	case "productpage":
		newProductPage(cfg, log).register(mux)
	case "details":
		registerDetails(mux)
	case "reviews":
		newReviews(cfg, log).register(mux)
	case "ratings":
		newRatings().register(mux)
	}
	var h http.Handler = mux
	if cfg.FailEvery > 0 {
		h = failEvery(cfg.FailEvery, h)
	}
	return logRequests(log, h), nil
}

// failEvery answers every nth request with 503 Service Unavailable.
func failEvery(n int, next http.Handler) http.Handler {
	var count atomic.Uint64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if count.Add(1)%uint64(n) == 0 {
			http.Error(w, "injected failure (--fail-every)", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
}
