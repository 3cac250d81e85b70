// Package access guards weft-control's monitoring port
// (mesh.MonitoringPort): who may read the debug endpoints and the
// dashboard, and how much of the mesh each reader sees. /metrics and the
// probes stay open, as istiod keeps them.
//
// A reader is admitted when
//   - the connection comes from loopback in weft-control's own network
//     namespace: that is how the API server's pods/portforward (weftctl
//     dashboard, weftctl proxy-status, kubectl port-forward) delivers, so
//     only someone with port-forward or exec rights on weft-control's pod
//     can originate it. It sees everything.
//   - or it sends "Authorization: Bearer <service-account token>" that
//     TokenReview accepts for the CA's audience (the same authenticator and
//     cache as xDS and the CA). A service account of the control plane's
//     namespace sees everything; any other sees its own namespace only.
//
// Everything else gets 401. Tokens are never logged.
package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"

	"github.com/weft-mesh/weft/control/ca"
)

// Scope is how much of the mesh a reader may see: everything, or the
// entries of one namespace. The zero Scope sees nothing, so a handler
// reached without the Guard shows nothing.
type Scope struct {
	all       bool
	namespace string
}

// Everything is the scope of the control plane's own service accounts and
// of port-forwarded (loopback) readers.
func Everything() Scope { return Scope{all: true} }

// Namespace is the scope of a service account of namespace ns.
func Namespace(ns string) Scope { return Scope{namespace: ns} }

// All reports whether the scope is everything.
func (s Scope) All() bool { return s.all }

// Sees reports whether an entry of namespace ns is visible. An entry
// without a namespace is visible only to Everything.
func (s Scope) Sees(ns string) bool {
	return s.all || (s.namespace != "" && ns == s.namespace)
}

func (s Scope) String() string {
	switch {
	case s.all:
		return "everything"
	case s.namespace != "":
		return "namespace " + s.namespace
	}
	return "nothing"
}

type scopeKey struct{}

// NewContext returns ctx carrying s.
func NewContext(ctx context.Context, s Scope) context.Context {
	return context.WithValue(ctx, scopeKey{}, s)
}

// FromContext is the reader's scope; the zero Scope (sees nothing) when the
// request did not pass the Guard.
func FromContext(ctx context.Context) Scope {
	s, _ := ctx.Value(scopeKey{}).(Scope)
	return s
}

// DefaultMaxConcurrentReviews bounds the token reviews one replica runs at
// once for the monitoring port; more are refused with 503 instead of
// queueing, so a flood of made-up tokens cannot pile up TokenReviews.
const DefaultMaxConcurrentReviews = 8

// Authenticator reviews bearer tokens for one audience
// (ca.TokenReviewAuthenticator, which caches the results).
type Authenticator interface {
	ca.Authenticator
	Audience() string
}

// Guard authenticates the requests of the monitoring port.
type Guard struct {
	Authn Authenticator
	// SystemNamespace is the control plane's namespace: its service
	// accounts see everything.
	SystemNamespace string
	// Open are the exact paths served to anyone (/metrics and the probes).
	Open []string
	Log  *slog.Logger

	reviews chan struct{}
}

// NewGuard returns a Guard with at most DefaultMaxConcurrentReviews
// concurrent token reviews.
func NewGuard(authn Authenticator, systemNamespace string, open []string, log *slog.Logger) *Guard {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Guard{Authn: authn, SystemNamespace: systemNamespace, Open: open, Log: log,
		reviews: make(chan struct{}, DefaultMaxConcurrentReviews)}
}

// howToAuthenticate is the 401 body's advice (%s: the audience, twice).
const howToAuthenticate = "weft-control: this endpoint needs authentication: use weftctl dashboard or weftctl proxy-status " +
	"(they port-forward, which needs pods/portforward on weft-control), or send Authorization: Bearer <service-account token " +
	"with audience %s> (kubectl create token <sa> -n <namespace> --audience %s)"

// Wrap serves next to admitted readers, with their Scope in the request's
// context; the Open paths to anyone.
func (g *Guard) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slices.Contains(g.Open, r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		scope, status, err := g.admit(r)
		if err != nil {
			g.refuse(w, r, status, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), scope)))
	})
}

var errBusy = fmt.Errorf("more than %d token reviews in flight", DefaultMaxConcurrentReviews)

// admit decides the reader's scope, or the status and reason to refuse it.
func (g *Guard) admit(r *http.Request) (Scope, int, error) {
	if FromLoopback(r) {
		return Everything(), 0, nil
	}
	header := r.Header.Values("Authorization")
	if len(header) == 0 {
		return Scope{}, http.StatusUnauthorized, errors.New("no Authorization header")
	}
	token, ok := ca.ParseBearer(header[0])
	if len(header) != 1 || !ok {
		return Scope{}, http.StatusUnauthorized, errors.New(`the Authorization header is not a single "Bearer <token>"`)
	}
	select {
	case g.reviews <- struct{}{}:
		defer func() { <-g.reviews }()
	default:
		return Scope{}, http.StatusServiceUnavailable, errBusy
	}
	caller, err := g.Authn.Authenticate(r.Context(), token)
	switch {
	case errors.Is(err, ca.ErrUnauthenticated):
		return Scope{}, http.StatusUnauthorized, err
	case err != nil:
		return Scope{}, http.StatusServiceUnavailable, err
	case caller.Namespace == g.SystemNamespace:
		return Everything(), 0, nil
	}
	return Namespace(caller.Namespace), 0, nil
}

// refuse answers 401 with the reason, which never quotes the token
// (ca.Authenticator's contract), or 503 when the token could not be checked
// (the details go to the log only).
func (g *Guard) refuse(w http.ResponseWriter, r *http.Request, status int, err error) {
	attrs := []any{"path", r.URL.Path, "remote", r.RemoteAddr, "err", err}
	if status != http.StatusUnauthorized {
		level := slog.LevelWarn
		if errors.Is(err, errBusy) { // a flood: one line per request would add to it
			level = slog.LevelDebug
		}
		g.Log.Log(r.Context(), level, "monitoring request: cannot authenticate it now", attrs...)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "weft-control: cannot verify the token right now; retry", status)
		return
	}
	g.Log.Debug("monitoring request refused", attrs...) // any pod can cause these: not worth a warning each
	w.Header().Set("WWW-Authenticate", `Bearer realm="weft-control"`)
	aud := g.Authn.Audience()
	http.Error(w, fmt.Sprintf("%v\n"+howToAuthenticate, err, aud, aud), status)
}

// FromLoopback reports whether r's connection comes from a loopback
// address (127.0.0.0/8, ::1, or ::ffff:127.x): the TCP peer, never a
// header such as X-Forwarded-For. In a pod's own network
// namespace only the pod's containers and the container runtime's
// port-forward can connect from there: the kernel drops packets with a
// loopback source that arrive on any other interface.
func FromLoopback(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}
