package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weft-mesh/weft/pkg/hbone"
)

// A gateway's TLS ports (control/waypoint/gateway_tls.go): the ClientHello
// is read without answering it, its SNI picks the filter chain, then
//   - an HTTPS chain terminates TLS with the certificate its SDS name
//     resolves to (Certificates; a missing or bad one fails the handshake
//     with an alert, never falls back to plain text) and serves HTTP;
//   - a passthrough chain forwards the connection's bytes, ClientHello
//     first, to its cluster over HBONE: the destination terminates TLS;
//   - no chain: the connection is closed.

// Certificates resolves SDS names: of a certificate (a TLS filter chain's,
// or the client certificate a cluster originating MUTUAL presents) and of
// a CA bundle (what a MUTUAL server's clients, or an originating cluster's
// servers, must chain to). weft-gateway's come from Secrets
// (waypoint/gatewaycreds).
type Certificates interface {
	Certificate(sdsName string) (*tls.Certificate, error)
	CAs(sdsName string) (*x509.CertPool, error)
}

// helloTimeout bounds the wait for a client's ClientHello.
const helloTimeout = 10 * time.Second

// errHelloRead stops the handshake used only to parse the ClientHello.
var errHelloRead = errors.New("client hello read")

func (p *Proxy) serveTLSConn(conn net.Conn, dst netip.AddrPort, src Source, snap *Snapshot) {
	_ = conn.SetReadDeadline(time.Now().Add(helloTimeout))
	sni, replay, err := readClientHello(conn)
	if err != nil {
		p.Metrics.gatewayTLSFailure("no_client_hello")
		p.log.Debug("gateway TLS port: no ClientHello", "local", dst, "client", conn.RemoteAddr(), "err", err)
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	c := snap.chains.matchSNI(dst, sni)
	if c == nil || (c.tlsCert == "" && !c.isTCP()) {
		p.Metrics.gatewayTLSFailure("no_filter_chain")
		p.log.Debug("gateway TLS port: no filter chain for SNI", "local", dst, "sni", sni, "client", conn.RemoteAddr())
		return
	}
	rs := &requestState{origDst: dst, peer: src.ID, clientIP: addrOf(conn.RemoteAddr()), baggage: src.Baggage, source: src.meta(), edge: true}
	if c.tlsCert == "" {
		err := p.proxyTCP(context.Background(), c, snap, rs, sni, "", func() (hbone.Stream, error) { return replay, nil })
		if err != nil {
			p.log.Debug("gateway TLS passthrough failed", "chain", c.name, "sni", sni, "err", err)
		}
		return
	}
	tc := tls.Server(replay, p.terminatingTLS(c))
	_ = conn.SetDeadline(time.Now().Add(helloTimeout))
	if err := tc.Handshake(); err != nil {
		p.Metrics.gatewayTLSFailure("handshake")
		p.log.Debug("gateway TLS handshake failed", "chain", c.name, "sni", sni, "client", conn.RemoteAddr(), "err", err)
		return
	}
	_ = conn.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	rs.tls = &st
	p.serveHTTP(tc, c, rs)
}

// terminatingTLS is the server side of chain c: its certificate and, for
// MUTUAL, its client certificate check. Both are resolved per handshake
// (a renewed Secret is used by the next one); a missing certificate or
// CA bundle fails the handshake, never weakens it.
func (p *Proxy) terminatingTLS(c *chain) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if p.certs == nil {
				return nil, errors.New("no certificate source configured")
			}
			return p.certs.Certificate(c.tlsCert)
		},
	}
	a := c.clientAuth
	if a == nil {
		return cfg
	}
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		if p.certs == nil {
			return nil, errors.New("no certificate source configured")
		}
		pool, err := p.certs.CAs(a.caName)
		if err != nil {
			return nil, err
		}
		out := cfg.Clone()
		out.GetConfigForClient = nil
		out.ClientCAs = pool
		out.ClientAuth = tls.VerifyClientCertIfGiven
		if a.required {
			out.ClientAuth = tls.RequireAndVerifyClientCert
		}
		out.VerifyConnection = func(st tls.ConnectionState) error {
			if len(st.VerifiedChains) == 0 {
				return nil // no certificate (OPTIONAL_MUTUAL); RequireAndVerify refused it already otherwise
			}
			return a.verify(st.PeerCertificates[0])
		}
		return out, nil
	}
	return cfg
}

// readClientHello reads conn up to and including the ClientHello and
// returns its server name and conn with the bytes read put back (also
// when they were no ClientHello: err then says why).
func readClientHello(conn net.Conn) (string, *replayConn, error) {
	var buf bytes.Buffer
	sni, seen := "", false
	err := tls.Server(readOnlyConn{r: io.TeeReader(conn, &buf)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			sni, seen = h.ServerName, true
			return nil, errHelloRead
		},
	}).Handshake()
	replay := &replayConn{Conn: conn, r: io.MultiReader(&buf, conn)}
	if !seen {
		return "", replay, err
	}
	return sni, replay, nil
}

// readOnlyConn feeds a handshake that must not answer the client.
type readOnlyConn struct {
	net.Conn // nil: only Read, Write and the deadlines are used
	r        io.Reader
}

func (c readOnlyConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c readOnlyConn) Write([]byte) (int, error)        { return 0, io.ErrClosedPipe }
func (c readOnlyConn) Close() error                     { return nil }
func (c readOnlyConn) SetDeadline(time.Time) error      { return nil }
func (c readOnlyConn) SetReadDeadline(time.Time) error  { return nil }
func (c readOnlyConn) SetWriteDeadline(time.Time) error { return nil }
func (c readOnlyConn) LocalAddr() net.Addr              { return nil }
func (c readOnlyConn) RemoteAddr() net.Addr             { return nil }

// replayConn is a client connection whose first bytes were read already.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite half-closes the client connection (hbone.Stream).
func (c *replayConn) CloseWrite() error { return closeWrite(c.Conn) }

func newGatewayTLSMetric() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_gateway_tls_connections_refused_total",
		Help: "Client connections a gateway TLS port closed before serving them, by reason: no_client_hello, no_filter_chain (unknown SNI), handshake (e.g. missing or invalid credential)."},
		[]string{"reason"})
}

func (m *Metrics) gatewayTLSFailure(reason string) { m.gatewayTLS.WithLabelValues(reason).Inc() }

// upstreamH2 is whether req goes upstream over HTTP/2: the downstream
// protocol, except at a gateway, where a client's HTTP/2 (negotiated with
// the gateway by ALPN, or h2c) says nothing about the destination: there
// only gRPC keeps HTTP/2, as Istio's gateway, which picks the upstream
// protocol from the service port, would for a gRPC port.
func (rs *requestState) upstreamH2(req *http.Request) bool {
	if rs.edge && rs.h2 {
		return strings.HasPrefix(req.Header.Get("Content-Type"), "application/grpc")
	}
	return rs.h2
}
