package access

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/weft-mesh/weft/control/ca"
)

// fakeAuthn answers from a table of tokens and counts the reviews; a
// token "block" waits until release is closed.
type fakeAuthn struct {
	callers map[string]ca.Caller
	reviews atomic.Int32
	entered chan struct{}
	release chan struct{}
}

func (f *fakeAuthn) Audience() string { return "weft-ca" }

func (f *fakeAuthn) Authenticate(_ context.Context, token string) (*ca.Caller, error) {
	f.reviews.Add(1)
	switch token {
	case "api-down":
		return nil, errors.New("TokenReview failed: the server is currently unable to handle the request")
	case "block":
		f.entered <- struct{}{}
		<-f.release
	}
	c, ok := f.callers[token]
	if !ok {
		return nil, fmt.Errorf("%w: invalid bearer token", ca.ErrUnauthenticated)
	}
	return &c, nil
}

const secretToken = "eyJhbGciOiJSUzI1NiJ9.tenant-secret-token-never-logged"

func newFakeAuthn() *fakeAuthn {
	return &fakeAuthn{callers: map[string]ca.Caller{
		secretToken:    {Namespace: "tenant-a", ServiceAccount: "default"},
		"system-token": {Namespace: "weft-system", ServiceAccount: "weft-node-agent"},
		"block":        {Namespace: "tenant-a", ServiceAccount: "default"},
	}, entered: make(chan struct{}, DefaultMaxConcurrentReviews), release: make(chan struct{})}
}

// scopeEcho answers with the scope the guard admitted.
var scopeEcho = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	fmt.Fprint(w, FromContext(r.Context()))
})

func request(remote, path string, auth ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	r.RemoteAddr = remote
	for _, a := range auth {
		r.Header.Add("Authorization", a)
	}
	return r
}

func TestGuard(t *testing.T) {
	const pod = "10.1.0.7:40000" // any pod of the cluster
	authn := newFakeAuthn()
	var logs bytes.Buffer
	g := NewGuard(authn, "weft-system", []string{"/metrics", "/ready"},
		slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	h := g.Wrap(scopeEcho)
	for _, tc := range []struct {
		name string
		req  *http.Request
		code int
		body string
	}{
		{"metrics stay open", request(pod, "/metrics"), 200, "nothing"},
		{"probes stay open", request(pod, "/ready"), 200, "nothing"},
		{"no token", request(pod, "/debug/syncz"), 401, "no Authorization header"},
		{"not an open path: unclean", request(pod, "/metrics/../debug/syncz"), 401, "no Authorization header"},
		{"unknown paths too", request(pod, "/debug/pprof/"), 401, "no Authorization header"},
		{"basic auth", request(pod, "/dashboard", "Basic Zm9vOmJhcg=="), 401, "not a single"},
		{"two tokens", request(pod, "/dashboard", "Bearer "+secretToken, "Bearer system-token"), 401, "not a single"},
		{"invalid token", request(pod, "/dashboard/api/graph", "Bearer forged-token-1234567890"), 401, "invalid bearer token"},
		{"API server down", request(pod, "/debug/syncz", "Bearer api-down"), 503, "cannot verify the token right now"},
		{"tenant token", request(pod, "/debug/syncz", "bearer "+secretToken), 200, "namespace tenant-a"},
		{"control plane's namespace", request(pod, "/debug/syncz", "Bearer system-token"), 200, "everything"},
		{"port-forward (IPv4 loopback)", request("127.0.0.1:5555", "/dashboard"), 200, "everything"},
		{"port-forward (IPv6 loopback)", request("[::1]:5555", "/dashboard"), 200, "everything"},
		{"port-forward (v4-mapped)", request("[::ffff:127.0.0.1]:5555", "/dashboard"), 200, "everything"},
		{"loopback ignores a bad token", request("127.0.0.1:5555", "/dashboard", "Bearer forged-token-1234567890"), 200, "everything"},
		{"not loopback: the pod's own IP", request("10.1.0.9:5555", "/dashboard"), 401, "no Authorization header"},
		{"unparsable remote", request("pipe", "/dashboard"), 401, "no Authorization header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, tc.req)
			if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.body) {
				t.Fatalf("%d %q, want %d containing %q", rec.Code, rec.Body, tc.code, tc.body)
			}
			if tc.code == 401 {
				if rec.Header().Get("WWW-Authenticate") == "" || !strings.Contains(rec.Body.String(), "--audience weft-ca") {
					t.Errorf("401 without the way in: %v %q", rec.Header(), rec.Body)
				}
			}
			if strings.Contains(rec.Body.String(), secretToken) {
				t.Errorf("the response quotes the token: %q", rec.Body)
			}
		})
	}
	if strings.Contains(logs.String(), secretToken) || strings.Contains(logs.String(), "forged-token") {
		t.Errorf("a token reached the log:\n%s", logs.String())
	}
	// Only non-loopback requests with a well-formed single bearer token are
	// reviewed: invalid, api-down, tenant, system.
	if n := authn.reviews.Load(); n != 4 {
		t.Errorf("%d token reviews, want 4", n)
	}
}

// TestGuardBoundsConcurrentReviews: made-up tokens cannot queue up
// TokenReviews; a request beyond the limit is refused at once.
func TestGuardBoundsConcurrentReviews(t *testing.T) {
	authn := newFakeAuthn()
	h := NewGuard(authn, "weft-system", nil, nil).Wrap(scopeEcho)
	var wg sync.WaitGroup
	codes := make([]int, DefaultMaxConcurrentReviews)
	for i := range DefaultMaxConcurrentReviews {
		wg.Go(func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, request("10.1.0.7:1", "/debug/syncz", "Bearer block"))
			codes[i] = rec.Code
		})
	}
	for range DefaultMaxConcurrentReviews {
		<-authn.entered
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, request("10.1.0.7:2", "/debug/syncz", "Bearer "+secretToken))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("beyond the limit: %d %v, want 503 with Retry-After", rec.Code, rec.Header())
	}
	close(authn.release)
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusOK {
			t.Errorf("request %d within the limit: %d", i, c)
		}
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, request("10.1.0.7:2", "/debug/syncz", "Bearer "+secretToken))
	if rec.Code != http.StatusOK {
		t.Errorf("after the reviews finished: %d", rec.Code)
	}
}

func TestScope(t *testing.T) {
	for _, tc := range []struct {
		s    Scope
		ns   string
		sees bool
	}{
		{Everything(), "tenant-a", true},
		{Everything(), "", true},
		{Namespace("tenant-a"), "tenant-a", true},
		{Namespace("tenant-a"), "tenant-b", false},
		{Namespace("tenant-a"), "", false},
		{Namespace(""), "", false},
		{Scope{}, "tenant-a", false},
		{Scope{}, "", false},
		{FromContext(context.Background()), "", false},
	} {
		if got := tc.s.Sees(tc.ns); got != tc.sees {
			t.Errorf("%v sees %q = %v, want %v", tc.s, tc.ns, got, tc.sees)
		}
	}
}

// TestGuardTrustsRealLoopbackConnections: what a port-forward delivers, a
// TCP connection from the pod's own loopback, over real sockets (IPv4 and,
// where the host has it, IPv6).
func TestGuardTrustsRealLoopbackConnections(t *testing.T) {
	h := NewGuard(newFakeAuthn(), "weft-system", nil, nil).Wrap(scopeEcho)
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Logf("%s: %v (skipped)", addr, err)
			continue
		}
		srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: h}}
		srv.Start()
		resp, err := http.Get(srv.URL + "/debug/syncz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		srv.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "everything" {
			t.Errorf("from %s: %s %q, want 200 everything", addr, resp.Status, body)
		}
	}
}
