package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"hash/fnv"
	"net"
	"os"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	wellknown "github.com/envoyproxy/go-control-plane/pkg/wellknown"
)

// compileUpstreamTLS turns a cluster's transport_socket into the client TLS
// config used to originate TLS to its endpoints (a DestinationRule's
// tls.mode SIMPLE, e.g. at an egress gateway); nil for none. The server
// certificate is always verified: against validation_context.trusted_ca
// (a file the proxy reads, or inline bytes) or the system roots, for the
// SNI name. Anything else in the context is refused rather than ignored, so
// a configuration asking for more than this does not silently get less.
func compileUpstreamTLS(ts *corev3.TransportSocket) (*tls.Config, error) {
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
	common := ctx.GetCommonTlsContext()
	if len(common.GetTlsCertificates()) > 0 || len(common.GetTlsCertificateSdsSecretConfigs()) > 0 {
		return nil, fmt.Errorf("transport_socket %s: client certificates (mutual TLS origination) are not supported", ts.GetName())
	}
	cfg := &tls.Config{ServerName: ctx.GetSni(), MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	switch v := common.GetValidationContextType().(type) {
	case nil:
	case *tlsv3.CommonTlsContext_ValidationContext:
		vc := v.ValidationContext
		if len(vc.GetMatchTypedSubjectAltNames()) > 0 || len(vc.GetVerifyCertificateSpki()) > 0 || len(vc.GetVerifyCertificateHash()) > 0 {
			return nil, fmt.Errorf("transport_socket %s: only validation_context.trusted_ca is supported", ts.GetName())
		}
		if ca := vc.GetTrustedCa(); ca != nil {
			pem, err := dataSource(ca)
			if err != nil {
				return nil, fmt.Errorf("transport_socket %s: trusted_ca: %w", ts.GetName(), err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("transport_socket %s: trusted_ca holds no PEM certificate", ts.GetName())
			}
			cfg.RootCAs = pool
		}
	default:
		return nil, fmt.Errorf("transport_socket %s: validation context %T is not supported", ts.GetName(), v)
	}
	return cfg, nil
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

// handshake originates TLS on c; a failure is a connect failure.
func handshake(ctx context.Context, c net.Conn, cfg *tls.Config) (net.Conn, error) {
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, &dialError{fmt.Errorf("TLS to %s (SNI %s): %w", c.RemoteAddr(), cfg.ServerName, err)}
	}
	return tc, nil
}

// poolKey is the transports' pool key (URL host) of a target: its address,
// unless connections to it differ by more than the address. With
// originated TLS it is per cluster, so that connections made with one
// cluster's TLS settings (or none) are never reused for another's; with
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
	}
	h.Write([]byte{0})
	h.Write([]byte(t.addr.String()))
	h.Write([]byte{0})
	if t.connect.IsValid() {
		h.Write([]byte(t.connect.String()))
	}
	return fmt.Sprintf("up-%016x.invalid:%d", h.Sum64(), t.addr.Port())
}
