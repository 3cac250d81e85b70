package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	wellknown "github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
)

// compileUpstreamTLS turns a cluster's transport_socket into the client TLS
// config used to originate TLS to its endpoints (a DestinationRule's
// tls.mode SIMPLE or MUTUAL, e.g. at an egress gateway); nil for none.
// The server certificate is always verified: against the CA bundle named
// by SDS (resolved by certs at each handshake, so a renewed Secret counts
// at once), validation_context.trusted_ca (a file the proxy reads, or
// inline bytes) or the system roots; it must carry one of the listed
// SANs, or without them the SNI name. The client certificate (MUTUAL)
// is named by SDS or given as files. Anything else in the context is
// refused rather than ignored, so a configuration asking for more than
// this does not silently get less. A proxy without certs (a waypoint: no
// Secret access) accepts SDS names but fails their handshakes.
func compileUpstreamTLS(ts *corev3.TransportSocket, certs Certificates) (*tls.Config, error) {
	if ts == nil {
		return nil, nil
	}
	if ts.GetName() != wellknown.TransportSocketTLS {
		return nil, fmt.Errorf("transport_socket %q is not supported (want %s)", ts.GetName(), wellknown.TransportSocketTLS)
	}
	var ctx tlsv3.UpstreamTlsContext
	if err := ts.GetTypedConfig().UnmarshalTo(&ctx); err != nil {
		return nil, fmt.Errorf("transport_socket %s: %w", ts.GetName(), err)
	}
	if ctx.GetSni() == "" {
		return nil, fmt.Errorf("transport_socket %s: sni is required (the name the server certificate must carry)", ts.GetName())
	}
	cfg := &tls.Config{ServerName: ctx.GetSni(), MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	common := ctx.GetCommonTlsContext()
	check, err := compileServerCheck(common, ctx.GetSni(), certs)
	if err == nil {
		err = clientCertificate(cfg, common, certs)
	}
	if err != nil {
		return nil, fmt.Errorf("transport_socket %s: %w", ts.GetName(), err)
	}
	if check != nil {
		// Go's own check knows only roots and the server name.
		cfg.InsecureSkipVerify, cfg.VerifyConnection = true, check.verify
	}
	return cfg, nil
}

// serverCheck verifies an upstream's certificate where Go's default check
// cannot: a CA bundle resolved per handshake, or SANs instead of the name.
type serverCheck struct {
	roots func() (*x509.CertPool, error) // nil pool: the system roots
	sni   string
	sans  []sanMatch
}

// compileServerCheck reads the validation context; nil without one, when
// Go's default verification (the system roots, the SNI name) is the check.
func compileServerCheck(common *tlsv3.CommonTlsContext, sni string, certs Certificates) (*serverCheck, error) {
	var def *tlsv3.CertificateValidationContext
	check := &serverCheck{sni: sni, roots: func() (*x509.CertPool, error) { return nil, nil }}
	switch v := common.GetValidationContextType().(type) {
	case nil:
		return nil, nil
	case *tlsv3.CommonTlsContext_ValidationContext:
		def = v.ValidationContext
		if ca := def.GetTrustedCa(); ca != nil {
			pool, err := pemPool(ca)
			if err != nil {
				return nil, err
			}
			check.roots = func() (*x509.CertPool, error) { return pool, nil }
		}
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		def = v.CombinedValidationContext.GetDefaultValidationContext()
		name := v.CombinedValidationContext.GetValidationContextSdsSecretConfig().GetName()
		if name == "" || def.GetTrustedCa() != nil {
			return nil, errors.New("combined validation context: want an SDS-named CA and no trusted_ca")
		}
		check.roots = func() (*x509.CertPool, error) {
			if certs == nil {
				return nil, errNoSecrets
			}
			return certs.CAs(name)
		}
	default:
		return nil, fmt.Errorf("validation context %T is not supported", v)
	}
	//lint:ignore SA1019 the deprecated untyped matchers are refused, not ignored
	if len(def.GetMatchSubjectAltNames()) > 0 || len(def.GetVerifyCertificateSpki()) > 0 || len(def.GetVerifyCertificateHash()) > 0 ||
		def.GetCrl() != nil || def.GetTrustChainVerification() != tlsv3.CertificateValidationContext_VERIFY_TRUST_CHAIN {
		return nil, errors.New("validation context: only a CA and exact subject alt names (match_typed_subject_alt_names) are supported")
	}
	var err error
	check.sans, err = parseSANs(def.GetMatchTypedSubjectAltNames())
	return check, err
}

// errNoSecrets: SDS names need a proxy that reads Secrets (a gateway).
var errNoSecrets = errors.New("credentials named by SDS are read by gateways only (this proxy has no Secret access)")

// verify is tls.Config.VerifyConnection: the chain to the roots, then the
// SANs (or, without them, the SNI name).
func (c *serverCheck) verify(st tls.ConnectionState) error {
	roots, err := c.roots()
	if err != nil {
		return err
	}
	if len(st.PeerCertificates) == 0 {
		return errors.New("server sent no certificate")
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
	for _, ic := range st.PeerCertificates[1:] {
		opts.Intermediates.AddCert(ic)
	}
	if len(c.sans) == 0 {
		opts.DNSName = c.sni
	}
	leaf := st.PeerCertificates[0]
	if _, err := leaf.Verify(opts); err != nil {
		return err
	}
	if len(c.sans) > 0 && !acceptsSAN(leaf, c.sans) {
		return errors.New("server certificate: no subject alternative name is accepted")
	}
	return nil
}

// clientCertificate sets what cfg presents when the server asks (MUTUAL):
// the certificate SDS names, resolved per handshake, or a file pair.
func clientCertificate(cfg *tls.Config, common *tlsv3.CommonTlsContext, certs Certificates) error {
	sds, files := common.GetTlsCertificateSdsSecretConfigs(), common.GetTlsCertificates()
	switch {
	case len(sds)+len(files) == 0:
		return nil
	case len(sds)+len(files) > 1:
		return errors.New("want at most one client certificate")
	case len(files) == 1:
		certPEM, err := dataSource(files[0].GetCertificateChain())
		if err != nil {
			return fmt.Errorf("client certificate_chain: %w", err)
		}
		keyPEM, err := dataSource(files[0].GetPrivateKey())
		if err != nil {
			return fmt.Errorf("client private_key: %w", err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	case sds[0].GetName() == "":
		return errors.New("tls_certificate_sds_secret_configs: want a name")
	default:
		name := sds[0].GetName()
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if certs == nil {
				return nil, errNoSecrets
			}
			return certs.Certificate(name)
		}
	}
	return nil
}

// pemPool is the CA bundle of a data source.
func pemPool(ds *corev3.DataSource) (*x509.CertPool, error) {
	pem, err := dataSource(ds)
	if err != nil {
		return nil, fmt.Errorf("trusted_ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("trusted_ca holds no PEM certificate")
	}
	return pool, nil
}

func dataSource(ds *corev3.DataSource) ([]byte, error) {
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_Filename:
		return os.ReadFile(s.Filename)
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	}
	return nil, fmt.Errorf("data source %T is not supported", ds.GetSpecifier())
}

// sanMatch is one accepted subject alternative name: its value, of its
// type (SAN_TYPE_UNSPECIFIED: any type).
type sanMatch struct {
	typ   tlsv3.SubjectAltNameMatcher_SanType
	value string
}

// parseSANs reads exact typed SAN matchers; any other matcher is refused.
func parseSANs(ms []*tlsv3.SubjectAltNameMatcher) ([]sanMatch, error) {
	var out []sanMatch
	for _, m := range ms {
		exact := m.GetMatcher().GetExact()
		if exact == "" || m.GetMatcher().GetIgnoreCase() {
			return nil, fmt.Errorf("subject alt name matcher %v: only exact matches are supported", m.GetMatcher())
		}
		out = append(out, sanMatch{typ: m.GetSanType(), value: exact})
	}
	return out, nil
}

// acceptsSAN: cert carries one of sans.
func acceptsSAN(cert *x509.Certificate, sans []sanMatch) bool {
	var uris, ips []string
	for _, u := range cert.URIs {
		uris = append(uris, u.String())
	}
	for _, ip := range cert.IPAddresses {
		ips = append(ips, ip.String())
	}
	byType := map[tlsv3.SubjectAltNameMatcher_SanType][]string{
		tlsv3.SubjectAltNameMatcher_DNS: cert.DNSNames, tlsv3.SubjectAltNameMatcher_URI: uris,
		tlsv3.SubjectAltNameMatcher_EMAIL: cert.EmailAddresses, tlsv3.SubjectAltNameMatcher_IP_ADDRESS: ips,
	}
	for _, m := range sans {
		for typ, names := range byType {
			if (m.typ == tlsv3.SubjectAltNameMatcher_SAN_TYPE_UNSPECIFIED || m.typ == typ) && slices.Contains(names, m.value) {
				return true
			}
		}
	}
	return false
}

// handshake originates TLS on c; a failure is a connect failure.
func handshake(ctx context.Context, c net.Conn, cfg *tls.Config) (net.Conn, error) {
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, &dialError{fmt.Errorf("TLS to %s (SNI %s): %w", c.RemoteAddr(), cfg.ServerName, err)}
	}
	return tc, nil
}

// poolKeyOf is poolKey(cluster, t) for a target of endpoint e (nil: an
// original destination), computed once per endpoint and TLS settings.
func poolKeyOf(cluster string, e *endpoint, t dialTarget) string {
	if e == nil {
		return poolKey(cluster, t)
	}
	if c := e.key.Load(); c != nil && c.tlsID == t.tlsID {
		return c.key
	}
	k := poolKey(cluster, t)
	e.key.Store(&cachedKey{tlsID: t.tlsID, key: k})
	return k
}

// poolKey is the transports' pool key (URL host) of a target: its address,
// unless connections to it differ by more than the address. With
// originated TLS it is per cluster and TLS settings, so that connections
// made with one cluster's TLS settings (or none, or the settings before
// an update) are never reused for another's; with
// a CONNECT target of its own (a waypoint reached for a service VIP) it
// is per target, so that a stream to one service is never reused for
// another's.
func poolKey(cluster string, t dialTarget) string {
	if t.tls == nil && !t.connect.IsValid() {
		return t.addr.String()
	}
	h := fnv.New64a()
	if t.tls != nil {
		h.Write([]byte(cluster))
		h.Write(binary.LittleEndian.AppendUint64(nil, t.tlsID))
	}
	h.Write([]byte{0})
	h.Write([]byte(t.addr.String()))
	h.Write([]byte{0})
	if t.connect.IsValid() {
		h.Write([]byte(t.connect.String()))
	}
	return fmt.Sprintf("up-%016x.invalid:%d", h.Sum64(), t.addr.Port())
}

// protoHash identifies a message by its deterministic encoding.
func protoHash(m proto.Message) uint64 {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}
