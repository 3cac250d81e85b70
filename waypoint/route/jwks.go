package route

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// JWKSCache fetches the JWKS of jwks_uri providers and keeps each for its
// cache_duration. It is shared by the pipelines of a proxy, so that a
// config change does not refetch. A fetch that fails (network, status,
// size, malformed document) gives no keys: the token is refused, never
// accepted; another fetch is tried after JWKSRetry.
type JWKSCache struct {
	// Client fetches the documents (default: a client without proxy).
	Client *http.Client

	mu      sync.Mutex
	entries map[string]*jwksEntry
}

// JWKS limits.
const (
	JWKSMaxSize = 1 << 20         // bytes of a JWKS document
	JWKSRetry   = 1 * time.Second // after a failed fetch (Envoy's failed_refetch_duration)
)

type jwksEntry struct {
	mu      sync.Mutex // held during a fetch: concurrent requests wait for it
	keys    *jose.JSONWebKeySet
	expires time.Time
	failed  time.Time // last failed fetch
	err     error
}

// defaultJWKS is the cache of pipelines compiled without Options.JWKS.
var defaultJWKS = &JWKSCache{}

var jwksClient = &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConns: 4, IdleConnTimeout: time.Minute}}

// get returns uri's keys, fetching them when absent or expired.
func (c *JWKSCache) get(ctx context.Context, uri string, timeout, ttl time.Duration) (*jose.JSONWebKeySet, error) {
	c.mu.Lock()
	if c.entries == nil {
		c.entries = map[string]*jwksEntry{}
	}
	e := c.entries[uri]
	if e == nil {
		e = &jwksEntry{}
		c.entries[uri] = e
	}
	c.mu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	if e.keys != nil && now.Before(e.expires) {
		return e.keys, nil
	}
	if e.err != nil && now.Sub(e.failed) < JWKSRetry {
		return nil, e.err
	}
	keys, err := c.fetch(ctx, uri, timeout)
	if err != nil {
		// Expired keys are not used either: a key the issuer revoked must
		// stop verifying.
		e.keys, e.err, e.failed = nil, err, time.Now()
		return nil, err
	}
	e.keys, e.err, e.expires = keys, nil, time.Now().Add(ttl)
	return keys, nil
}

func (c *JWKSCache) fetch(ctx context.Context, uri string, timeout time.Duration) (*jose.JSONWebKeySet, error) {
	// The fetch outlives a request that gives up: others wait for it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, err
	}
	client := c.Client
	if client == nil {
		client = jwksClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, JWKSMaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > JWKSMaxSize {
		return nil, fmt.Errorf("larger than %d bytes", JWKSMaxSize)
	}
	ks, err := parseJWKS(b)
	if err != nil {
		return nil, fmt.Errorf("malformed JWKS: %w", err)
	}
	if len(ks.Keys) == 0 {
		return nil, fmt.Errorf("JWKS has no public key")
	}
	return ks, nil
}
