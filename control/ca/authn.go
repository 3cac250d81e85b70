package ca

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/weft-mesh/weft/pkg/mesh"
)

// Defaults for TokenReviewOptions.
const (
	DefaultAudience      = "weft-ca"
	DefaultAuthCacheTTL  = 10 * time.Second
	MaxAuthCacheTTL      = 10 * time.Second
	DefaultAuthCacheSize = 10000
	// DefaultMaxConcurrentReviews: see TokenReviewOptions.MaxConcurrentReviews.
	DefaultMaxConcurrentReviews = 16
	DefaultTokenReviewWait      = 5 * time.Second
)

// Keys of TokenReview status.user.extra for pod-bound service-account tokens.
// Node information is present from Kubernetes 1.32 (beta, on by default,
// since 1.30).
const (
	ExtraPodName  = "authentication.kubernetes.io/pod-name"
	ExtraPodUID   = "authentication.kubernetes.io/pod-uid"
	ExtraNodeName = "authentication.kubernetes.io/node-name"
	ExtraNodeUID  = "authentication.kubernetes.io/node-uid"
)

const serviceAccountUsernamePrefix = "system:serviceaccount:"

// ErrUnauthenticated is wrapped by every authentication failure that is the
// caller's fault (missing, invalid, expired or foreign-audience token, not a
// service account). Other Authenticate errors are infrastructure failures
// (the API server could not be asked) and deserve a retry.
var ErrUnauthenticated = errors.New("unauthenticated")

// Caller is an authenticated service account, with the pod and node its
// token is bound to when it is a pod-bound projected token.
type Caller struct {
	// Username as reported by the API server, system:serviceaccount:<ns>:<sa>.
	Username       string
	Namespace      string
	ServiceAccount string
	// PodName and PodUID of the pod the token is bound to; empty for tokens
	// that are not pod-bound.
	PodName string
	PodUID  string
	// NodeName the bound pod runs on, when the API server put it in the
	// token (Kubernetes >= 1.32); empty otherwise.
	NodeName string
}

// ID is the caller's own SPIFFE ID in td: spiffe://<td>/ns/<ns>/sa/<sa>.
func (c *Caller) ID(td spiffeid.TrustDomain) (spiffeid.ID, error) {
	return mesh.WorkloadID(td, c.Namespace, c.ServiceAccount)
}

// String names the caller for logs and error messages (never the token).
func (c *Caller) String() string {
	if c == nil {
		return "<unauthenticated>"
	}
	s := c.Namespace + "/" + c.ServiceAccount
	if c.PodName != "" {
		s += " (pod " + c.Namespace + "/" + c.PodName
		if c.NodeName != "" {
			s += " on node " + c.NodeName
		}
		s += ")"
	}
	return s
}

// Authenticator turns a bearer token into a Caller. Errors wrapping
// ErrUnauthenticated are the caller's fault; others are transient.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (*Caller, error)
}

// TokenReviewOptions configure a TokenReviewAuthenticator. Zero is usable.
type TokenReviewOptions struct {
	// Audience the token must be issued for. Default "weft-ca".
	Audience string
	// CacheTTL for successful reviews, keyed by the token's SHA-256. Default
	// and maximum 10s; negative disables caching.
	CacheTTL time.Duration
	// MaxCacheEntries bounds the cache. Default 10000.
	MaxCacheEntries int
	// Timeout of one TokenReview call, waiting for a slot included.
	// Default 5s.
	Timeout time.Duration
	// MaxConcurrentReviews bounds the TokenReviews in flight, so a flood
	// of streams with fresh bad tokens cannot flood the API server; more
	// callers wait (within Timeout). Default 16.
	MaxConcurrentReviews int
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// TokenReviewAuthenticator authenticates service-account tokens with the
// Kubernetes TokenReview API (needs create on tokenreviews).
type TokenReviewAuthenticator struct {
	client kubernetes.Interface
	opts   TokenReviewOptions

	reviews chan struct{} // one slot per TokenReview in flight

	mu    sync.Mutex
	cache map[[sha256.Size]byte]cachedCaller
}

type cachedCaller struct {
	caller  Caller
	expires time.Time
}

// NewTokenReviewAuthenticator returns an Authenticator backed by client.
func NewTokenReviewAuthenticator(client kubernetes.Interface, opts TokenReviewOptions) *TokenReviewAuthenticator {
	if opts.Audience == "" {
		opts.Audience = DefaultAudience
	}
	if opts.CacheTTL == 0 || opts.CacheTTL > MaxAuthCacheTTL {
		opts.CacheTTL = DefaultAuthCacheTTL
	}
	if opts.MaxCacheEntries <= 0 {
		opts.MaxCacheEntries = DefaultAuthCacheSize
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTokenReviewWait
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxConcurrentReviews <= 0 {
		opts.MaxConcurrentReviews = DefaultMaxConcurrentReviews
	}
	return &TokenReviewAuthenticator{client: client, opts: opts, cache: map[[sha256.Size]byte]cachedCaller{},
		reviews: make(chan struct{}, opts.MaxConcurrentReviews)}
}

// Audience the authenticator requires.
func (a *TokenReviewAuthenticator) Audience() string { return a.opts.Audience }

// Authenticate reviews token (or answers from the cache) and returns the
// service account, bound pod and node it stands for.
func (a *TokenReviewAuthenticator) Authenticate(ctx context.Context, token string) (*Caller, error) {
	if token == "" {
		return nil, fmt.Errorf("%w: empty bearer token", ErrUnauthenticated)
	}
	key := sha256.Sum256([]byte(token))
	if c, ok := a.cached(key); ok {
		return c, nil
	}

	ctx, cancel := context.WithTimeout(ctx, a.opts.Timeout)
	defer cancel()
	select {
	case a.reviews <- struct{}{}:
		defer func() { <-a.reviews }()
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for one of %d TokenReview slots: %w", cap(a.reviews), context.Cause(ctx))
	}
	review, err := a.client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{a.opts.Audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		if leaksToken(err, token) {
			// Never let the token reach a log through an error message.
			err = errors.New(strings.ReplaceAll(err.Error(), token, "<token>"))
		}
		return nil, fmt.Errorf("TokenReview failed (weft-control needs create on tokenreviews.authentication.k8s.io): %w", err)
	}
	caller, err := callerFromReview(&review.Status, a.opts.Audience)
	if err != nil {
		if leaksToken(err, token) {
			return nil, fmt.Errorf("%w: token rejected", ErrUnauthenticated)
		}
		return nil, err
	}
	a.store(key, caller)
	c := *caller
	return &c, nil
}

// leaksToken reports whether err's message quotes token. Real tokens are
// JWTs hundreds of bytes long; short strings would match by accident.
func leaksToken(err error, token string) bool {
	return len(token) >= 20 && strings.Contains(err.Error(), token)
}

func (a *TokenReviewAuthenticator) cached(key [sha256.Size]byte) (*Caller, bool) {
	if a.opts.CacheTTL < 0 {
		return nil, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.cache[key]
	if !ok {
		return nil, false
	}
	if !a.opts.Now().Before(e.expires) {
		delete(a.cache, key)
		return nil, false
	}
	c := e.caller
	return &c, true
}

func (a *TokenReviewAuthenticator) store(key [sha256.Size]byte, c *Caller) {
	if a.opts.CacheTTL < 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.opts.Now()
	if len(a.cache) >= a.opts.MaxCacheEntries {
		for k, e := range a.cache {
			if !now.Before(e.expires) {
				delete(a.cache, k)
			}
		}
		if len(a.cache) >= a.opts.MaxCacheEntries {
			clear(a.cache)
		}
	}
	a.cache[key] = cachedCaller{caller: *c, expires: now.Add(a.opts.CacheTTL)}
}

// callerFromReview checks a TokenReview status: authenticated, for our
// audience, a service account with valid names.
func callerFromReview(st *authenticationv1.TokenReviewStatus, audience string) (*Caller, error) {
	if !st.Authenticated {
		reason := st.Error
		if reason == "" {
			reason = "token is invalid or expired"
		}
		return nil, fmt.Errorf("%w: %s", ErrUnauthenticated, reason)
	}
	// An audience-unaware authenticator returns no audiences, meaning the
	// token is only good for the API server itself: reject that as well.
	if !slices.Contains(st.Audiences, audience) {
		return nil, fmt.Errorf("%w: token is not for audience %q (it is for %q); request a projected token with audience %q",
			ErrUnauthenticated, audience, st.Audiences, audience)
	}
	ns, sa, ok := splitServiceAccountUsername(st.User.Username)
	if !ok {
		return nil, fmt.Errorf("%w: user %q is not a service account", ErrUnauthenticated, st.User.Username)
	}
	return &Caller{
		Username:       st.User.Username,
		Namespace:      ns,
		ServiceAccount: sa,
		PodName:        singleExtra(st.User.Extra, ExtraPodName),
		PodUID:         singleExtra(st.User.Extra, ExtraPodUID),
		NodeName:       singleExtra(st.User.Extra, ExtraNodeName),
	}, nil
}

func splitServiceAccountUsername(username string) (namespace, name string, ok bool) {
	rest, ok := strings.CutPrefix(username, serviceAccountUsernamePrefix)
	if !ok {
		return "", "", false
	}
	namespace, name, ok = strings.Cut(rest, ":")
	if !ok || strings.Contains(name, ":") {
		return "", "", false
	}
	if len(validation.IsDNS1123Label(namespace)) != 0 || len(validation.IsDNS1123Subdomain(name)) != 0 {
		return "", "", false
	}
	return namespace, name, true
}

func singleExtra(extra map[string]authenticationv1.ExtraValue, key string) string {
	if v := extra[key]; len(v) == 1 {
		return v[0]
	}
	return ""
}
