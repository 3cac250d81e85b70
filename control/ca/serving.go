package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// ServingCertificate issues a TLS server certificate for weft-control's own
// listener (mesh.XDSPort) with a fresh in-memory ECDSA P-256 key. dnsNames are the
// names clients dial (e.g. weft-control.weft-system.svc); an entry that
// parses as an IP address becomes an IP SAN. ttl 0 means the default
// workload lifetime; it is capped at MaxTTL and at the CA's expiry. The
// returned certificate carries the intermediates after the leaf; clients
// trust it through Bundle.
func (a *Authority) ServingCertificate(dnsNames []string, ttl time.Duration) (*tls.Certificate, error) {
	if len(dnsNames) == 0 {
		return nil, errors.New("serving certificate needs at least one DNS name")
	}
	ttl, err := a.EffectiveTTL(ttl)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: dnsNames[0], Organization: []string{a.td.Name()}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range dnsNames {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating serving key: %w", err)
	}
	leaf, err := a.create(tmpl, key.Public(), ttl)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{
		Certificate: a.chainDER(leaf),
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

// ServingRotatorOptions configure a ServingRotator.
type ServingRotatorOptions struct {
	// TTL of each serving certificate; 0 means the Authority's default.
	TTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

// ServingRotator hands out weft-control's serving certificate through
// tls.Config.GetCertificate and replaces it once half of its lifetime has
// passed. If reissuing fails the current certificate is served until it
// expires, and reissuing is retried on the next handshake.
type ServingRotator struct {
	issue  func() (*tls.Certificate, error)
	now    func() time.Time
	logger *slog.Logger

	mu        sync.Mutex
	cert      *tls.Certificate
	refreshAt time.Time
}

// NewServingRotator issues the first certificate immediately (so a broken
// CA fails at start-up, not at the first handshake).
func NewServingRotator(a *Authority, dnsNames []string, opts ServingRotatorOptions) (*ServingRotator, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	names := append([]string(nil), dnsNames...)
	r := &ServingRotator{
		issue:  func() (*tls.Certificate, error) { return a.ServingCertificate(names, opts.TTL) },
		now:    opts.Now,
		logger: opts.Logger,
	}
	if err := r.rotate(r.now()); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *ServingRotator) rotate(now time.Time) error {
	cert, err := r.issue()
	if err != nil {
		return fmt.Errorf("issuing serving certificate: %w", err)
	}
	r.cert = cert
	r.refreshAt = now.Add(cert.Leaf.NotAfter.Sub(now) / 2)
	r.logger.Info("issued serving certificate", "dnsNames", cert.Leaf.DNSNames,
		"notAfter", cert.Leaf.NotAfter, "refreshAt", r.refreshAt)
	return nil
}

// Current returns the certificate to serve now, rotating it first if it is
// past its half-life.
func (r *ServingRotator) Current() (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if !now.Before(r.refreshAt) {
		if err := r.rotate(now); err != nil {
			if now.Before(r.cert.Leaf.NotAfter) {
				r.logger.Warn("serving certificate rotation failed; keeping the current one",
					"error", err, "notAfter", r.cert.Leaf.NotAfter)
				return r.cert, nil
			}
			return nil, err
		}
	}
	return r.cert, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (r *ServingRotator) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.Current()
}

// TLSConfig returns a server configuration (TLS 1.2 minimum, so that Envoy
// clients with their default TLS 1.2 maximum can connect; ALPN h2 for gRPC)
// that serves the rotating certificate.
func (r *ServingRotator) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2"},
		GetCertificate: r.GetCertificate,
	}
}
