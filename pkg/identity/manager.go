// Package identity keeps one X.509 SVID per SPIFFE identity the node needs:
// the identities of the enrolled pods on this node. For each it makes an
// ECDSA P-256 key in process (the key never leaves the process and is never
// logged), asks the control plane's CA for a certificate with a CSR whose
// only SAN is the identity, checks what comes back, and renews at
// half-life. A failed renewal keeps the current certificate and retries
// with exponential back-off and jitter.
package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	randv2 "math/rand/v2"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/metadata"

	cav1 "github.com/weft-mesh/weft/api/ca/v1"
)

// Defaults for Options.
const (
	DefaultMinBackoff     = time.Second
	DefaultMaxBackoff     = time.Minute
	DefaultGracePeriod    = 2 * time.Minute
	DefaultRequestTimeout = 10 * time.Second
)

// ErrNotWanted is wrapped by Get and GetX509SVID errors for identities
// that are not in the set passed to Want (or were dropped).
var ErrNotWanted = errors.New("identity is not wanted on this node")

// Options configure a Manager. Client and Tokens are required.
type Options struct {
	// Client of the control plane's CertificateService.
	Client cav1.CertificateServiceClient
	// Tokens supplies the agent's bearer token for every request.
	Tokens TokenSource
	// Validity requested for each certificate; 0 means the CA's default.
	Validity time.Duration
	// GracePeriod an identity is kept after it leaves the wanted set.
	// Default 2m; negative drops at once.
	GracePeriod time.Duration
	// Back-off bounds after a failed request. Default 1s and 1m.
	MinBackoff, MaxBackoff time.Duration
	// RequestTimeout of one CreateCertificate call. Default 10s.
	RequestTimeout time.Duration
	// Logger, default slog.Default().
	Logger *slog.Logger
	// Jitter returns a number in [0, 1); default math/rand/v2.Float64.
	Jitter func() float64
}

// CertStatus describes one identity's certificate for the admin endpoint
// and metrics. It holds no key material.
type CertStatus struct {
	ID        string    `json:"id"`
	Serial    string    `json:"serial,omitempty"`
	NotBefore time.Time `json:"notBefore,omitzero"`
	NotAfter  time.Time `json:"notAfter,omitzero"`
	// NextRefresh is when the next request is due (renewal or retry).
	NextRefresh time.Time `json:"nextRefresh,omitzero"`
	// LastError of the latest request; empty after a success.
	LastError           string `json:"lastError,omitempty"`
	ConsecutiveFailures int    `json:"consecutiveFailures,omitempty"`
	// DropAt is set while the identity is no longer wanted: it is
	// forgotten then unless wanted again.
	DropAt time.Time `json:"dropAt,omitzero"`
}

// Manager holds the node's SVIDs. It is safe for concurrent use.
type Manager struct {
	opts Options
	log  *slog.Logger

	mu      sync.RWMutex
	entries map[spiffeid.ID]*entry
	bundles map[spiffeid.TrustDomain]*x509bundle.Bundle
	changed chan struct{} // closed and replaced on every change
	runCtx  context.Context
	workers sync.WaitGroup
	kick    chan struct{}
}

type entry struct {
	id    spiffeid.ID
	svid  atomic.Pointer[x509svid.SVID]
	ready chan struct{} // closed when the first certificate arrives

	// Guarded by Manager.mu.
	lastErr     error
	failures    int
	nextRefresh time.Time
	unwanted    time.Time // zero while wanted
	cancel      context.CancelFunc
}

// NewManager returns a Manager; Run starts its work.
func NewManager(opts Options) (*Manager, error) {
	if opts.Client == nil {
		return nil, errors.New("identity: a CertificateService client is required")
	}
	if opts.Tokens == nil {
		return nil, errors.New("identity: a token source is required")
	}
	if opts.GracePeriod == 0 {
		opts.GracePeriod = DefaultGracePeriod
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	opts.MaxBackoff = max(opts.MaxBackoff, opts.MinBackoff)
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Jitter == nil {
		opts.Jitter = randv2.Float64
	}
	return &Manager{
		opts:    opts,
		log:     opts.Logger,
		entries: map[spiffeid.ID]*entry{},
		bundles: map[spiffeid.TrustDomain]*x509bundle.Bundle{},
		changed: make(chan struct{}),
		kick:    make(chan struct{}, 1),
	}, nil
}

// Run requests and renews certificates until ctx ends, then waits for its
// workers and returns.
func (m *Manager) Run(ctx context.Context) {
	m.mu.Lock()
	if m.runCtx != nil {
		m.mu.Unlock()
		panic("identity: Manager.Run called twice")
	}
	m.runCtx = ctx
	for _, e := range m.entries {
		m.startLocked(e)
	}
	m.mu.Unlock()
	defer m.workers.Wait()

	for {
		m.mu.Lock()
		next := m.dropExpiredLocked()
		m.mu.Unlock()
		var timer *time.Timer
		var timerC <-chan time.Time
		if !next.IsZero() {
			timer = time.NewTimer(time.Until(next))
			timerC = timer.C
		}
		select {
		case <-ctx.Done():
		case <-m.kick:
		case <-timerC:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// dropExpiredLocked forgets identities unwanted for longer than the grace
// period and returns when the next one is due (zero if none).
func (m *Manager) dropExpiredLocked() time.Time {
	now := time.Now()
	var next time.Time
	for id, e := range m.entries {
		if e.unwanted.IsZero() {
			continue
		}
		at := e.unwanted.Add(max(m.opts.GracePeriod, 0))
		if !now.Before(at) {
			if e.cancel != nil {
				e.cancel()
			}
			delete(m.entries, id)
			m.notifyLocked()
			m.log.Info("dropped certificate of identity no longer on this node", "id", id.String())
			continue
		}
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}

// Want sets the identities needed on this node. New ones are requested at
// once; ones missing from ids are dropped after the grace period.
func (m *Manager) Want(ids []spiffeid.ID) {
	set := make(map[spiffeid.ID]struct{}, len(ids))
	for _, id := range ids {
		if !id.IsZero() {
			set[id] = struct{}{}
		}
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for id := range set {
		e, ok := m.entries[id]
		if !ok {
			e = &entry{id: id, ready: make(chan struct{})}
			m.entries[id] = e
			m.startLocked(e)
			m.notifyLocked()
			continue
		}
		if !e.unwanted.IsZero() {
			e.unwanted = time.Time{}
			m.notifyLocked()
		}
	}
	for id, e := range m.entries {
		if _, ok := set[id]; !ok && e.unwanted.IsZero() {
			e.unwanted = now
			m.notifyLocked()
		}
	}
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

func (m *Manager) startLocked(e *entry) {
	if m.runCtx == nil || e.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(m.runCtx)
	e.cancel = cancel
	m.workers.Add(1)
	go m.work(ctx, e)
}

func (m *Manager) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// work keeps one identity's certificate fresh until ctx ends.
func (m *Manager) work(ctx context.Context, e *entry) {
	defer m.workers.Done()
	for {
		svid, bundle, err := m.fetch(ctx, e.id)
		if ctx.Err() != nil {
			return
		}
		now := time.Now()
		m.mu.Lock()
		if err != nil {
			e.failures++
			e.lastErr = err
			e.nextRefresh = now.Add(m.backoff(e.failures))
			m.log.Warn("certificate request failed; keeping the current certificate",
				"id", e.id.String(), "err", err, "failures", e.failures, "retryAt", e.nextRefresh)
		} else {
			leaf := svid.Certificates[0]
			e.failures, e.lastErr = 0, nil
			e.nextRefresh = m.refreshAt(leaf, now)
			first := e.svid.Swap(svid) == nil
			m.bundles[e.id.TrustDomain()] = bundle
			if first {
				close(e.ready)
			}
			m.log.Info("certificate issued", "id", e.id.String(), "serial", leaf.SerialNumber.Text(16),
				"notAfter", leaf.NotAfter, "refreshAt", e.nextRefresh)
		}
		next := e.nextRefresh
		m.notifyLocked()
		m.mu.Unlock()

		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// refreshAt is the half-life of leaf, but never sooner than MinBackoff
// from now (a certificate already past its half-life, e.g. with clock skew,
// must not cause a request loop).
func (m *Manager) refreshAt(leaf *x509.Certificate, now time.Time) time.Time {
	at := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	if earliest := now.Add(m.opts.MinBackoff); at.Before(earliest) {
		return earliest
	}
	return at
}

// backoff after the n-th consecutive failure: MinBackoff doubling up to
// MaxBackoff, each with ±20% jitter, kept within [MinBackoff, MaxBackoff].
func (m *Manager) backoff(n int) time.Duration {
	d := m.opts.MinBackoff
	for i := 1; i < n && d < m.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, m.opts.MaxBackoff)
	d = time.Duration(float64(d) * (0.8 + 0.4*m.opts.Jitter()))
	return min(max(d, m.opts.MinBackoff), m.opts.MaxBackoff)
}

// fetch makes a key, asks the CA for a certificate and checks it.
func (m *Manager) fetch(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, *x509bundle.Bundle, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating a key for %s: %w", id, err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating the CSR for %s: %w", id, err)
	}
	token, err := m.opts.Tokens.Token(ctx)
	if err != nil {
		return nil, nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, m.opts.RequestTimeout)
	defer cancel()
	rctx = metadata.AppendToOutgoingContext(rctx, "authorization", "Bearer "+token)
	resp, err := m.opts.Client.CreateCertificate(rctx, &cav1.CreateCertificateRequest{
		Csr:             string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
		ValiditySeconds: int64(m.opts.Validity / time.Second),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("CreateCertificate for %s: %w", id, err)
	}
	return verifyResponse(id, key, resp, time.Now())
}

// verifyResponse checks that the CA answered what was asked: a leaf for
// exactly id with our public key, chaining to the returned trust bundle.
func verifyResponse(id spiffeid.ID, key *ecdsa.PrivateKey, resp *cav1.CreateCertificateResponse, now time.Time) (*x509svid.SVID, *x509bundle.Bundle, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("CA response for %s rejected: %s", id, fmt.Sprintf(format, args...))
	}
	chain, err := parseCertsPEM(resp.GetCertChain())
	if err != nil {
		return nil, nil, bad("certificate chain: %v", err)
	}
	roots, err := parseCertsPEM(resp.GetTrustBundle())
	if err != nil {
		return nil, nil, bad("trust bundle: %v", err)
	}
	leaf := chain[0]
	got, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, nil, bad("leaf certificate: %v", err)
	}
	if got != id {
		return nil, nil, bad("leaf certificate is for %s", got)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) > 0 {
		return nil, nil, bad("leaf certificate has SANs besides the SPIFFE ID")
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, nil, bad("leaf certificate is not for the key of the CSR")
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, nil, bad("leaf certificate lacks the digitalSignature key usage")
	}
	bundle := x509bundle.FromX509Authorities(id.TrustDomain(), roots)
	if _, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(now)); err != nil {
		return nil, nil, bad("%v", err)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, bundle, nil
}

func parseCertsPEM(pems []string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for _, p := range pems {
		rest := []byte(p)
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			if block.Type != "CERTIFICATE" {
				return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
			}
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, err
			}
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no certificates")
	}
	return out, nil
}

// Get returns the current SVID of id, waiting until the first one arrives
// or ctx ends. It fails at once for an expired certificate.
func (m *Manager) Get(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, error) {
	for {
		m.mu.RLock()
		e := m.entries[id]
		changed := m.changed
		var lastErr error
		if e != nil {
			lastErr = e.lastErr
		}
		m.mu.RUnlock()
		if e != nil {
			if s := e.svid.Load(); s != nil {
				return m.usable(s)
			}
		}
		select {
		case <-ctx.Done():
			switch {
			case e == nil:
				return nil, fmt.Errorf("no certificate for %s: %w (%w)", id, ErrNotWanted, ctx.Err())
			case lastErr != nil:
				return nil, fmt.Errorf("no certificate for %s yet (%w): last request failed: %w", id, ctx.Err(), lastErr)
			default:
				return nil, fmt.Errorf("no certificate for %s yet: %w", id, ctx.Err())
			}
		case <-changed:
		}
	}
}

func (m *Manager) usable(s *x509svid.SVID) (*x509svid.SVID, error) {
	if na := s.Certificates[0].NotAfter; time.Now().After(na) {
		return nil, fmt.Errorf("certificate for %s expired at %s and could not be renewed", s.ID, na.UTC().Format(time.RFC3339))
	}
	return s, nil
}

// current returns the SVID of id without waiting.
func (m *Manager) current(id spiffeid.ID) (*x509svid.SVID, error) {
	m.mu.RLock()
	e := m.entries[id]
	var lastErr error
	if e != nil {
		lastErr = e.lastErr
	}
	m.mu.RUnlock()
	if e == nil {
		return nil, fmt.Errorf("no certificate for %s: %w", id, ErrNotWanted)
	}
	s := e.svid.Load()
	if s == nil {
		if lastErr != nil {
			return nil, fmt.Errorf("no certificate for %s yet: %w", id, lastErr)
		}
		return nil, fmt.Errorf("no certificate for %s yet", id)
	}
	return m.usable(s)
}

// Changed is closed at the next change of the certificates held.
func (m *Manager) Changed() <-chan struct{} {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.changed
}

// Holds reports whether every one of ids has a usable certificate now.
func (m *Manager) Holds(ids []spiffeid.ID) bool {
	for _, id := range ids {
		if _, err := m.current(id); err != nil {
			return false
		}
	}
	return true
}

// Source returns an x509svid.Source for one identity (for
// go-spiffe/tlsconfig). It always serves the latest certificate.
func (m *Manager) Source(id spiffeid.ID) x509svid.Source { return svidSource{m: m, id: id} }

type svidSource struct {
	m  *Manager
	id spiffeid.ID
}

func (s svidSource) GetX509SVID() (*x509svid.SVID, error) { return s.m.current(s.id) }

// Bundles returns the trust bundle source (the Manager itself).
func (m *Manager) Bundles() x509bundle.Source { return m }

// GetX509BundleForTrustDomain implements x509bundle.Source with the trust
// bundle of the latest CA response for td.
func (m *Manager) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	m.mu.RLock()
	b := m.bundles[td]
	m.mu.RUnlock()
	if b == nil {
		return nil, fmt.Errorf("no trust bundle for trust domain %q yet (it comes with the first certificate)", td.Name())
	}
	return b, nil
}

// Status lists every identity held, sorted by ID.
func (m *Manager) Status() []CertStatus {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]CertStatus, 0, len(m.entries))
	for _, e := range m.entries {
		st := CertStatus{ID: e.id.String(), NextRefresh: e.nextRefresh, ConsecutiveFailures: e.failures}
		if e.lastErr != nil {
			st.LastError = e.lastErr.Error()
		}
		if s := e.svid.Load(); s != nil {
			leaf := s.Certificates[0]
			st.Serial = leaf.SerialNumber.Text(16)
			st.NotBefore, st.NotAfter = leaf.NotBefore, leaf.NotAfter
		}
		if !e.unwanted.IsZero() {
			st.DropAt = e.unwanted.Add(max(m.opts.GracePeriod, 0))
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b CertStatus) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}
