package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/pkg/testpki"
)

// staticCerts resolves SDS names from a map (tests).
type staticCerts map[string]*tls.Certificate

func (s staticCerts) Certificate(name string) (*tls.Certificate, error) {
	if c := s[name]; c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("no credential %q", name)
}

func (s staticCerts) CAs(name string) (*x509.CertPool, error) {
	return nil, fmt.Errorf("no client CA %q", name)
}

func tlsGatewayChain(t *testing.T, name string, port uint32, sni []string, sds string, fc *listenerv3.FilterChain) *listenerv3.FilterChain {
	fc.Name = name
	fc.FilterChainMatch = &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(port), ServerNames: sni}
	if sds != "" {
		fc.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{
			TypedConfig: anyOf(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
				AlpnProtocols:                  []string{"h2", "http/1.1"},
				TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: sds}}}})}}
	}
	return fc
}

// TestGatewayTLS: on a gateway TLS port the ClientHello's SNI picks the
// chain. An HTTPS chain terminates TLS with its credential (h2 by ALPN) and
// routes to the mesh; a passthrough chain forwards the TLS bytes over HBONE
// to a backend that terminates TLS itself (the client verifies the
// backend's certificate); an unknown SNI and a missing credential fail the
// handshake and are counted; plain HTTP is not answered.
func TestGatewayTLS(t *testing.T) {
	pki := testpki.New(t)
	certPEM, keyPEM := pki.Issue(t, "bookinfo.example.com")
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(o *Options) { o.Certificates = staticCerts{"kubernetes://bookinfo-credential": &pair} })
	b := startBackend(t, "productpage-v1", nil)

	// The passthrough destination: a TLS server of its own.
	bc, bk := pki.Issue(t, "secure.example.com")
	bpair, _ := tls.X509KeyPair(bc, bk)
	bln, err := net.Listen("tcp", netip.AddrPortFrom(podIP(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	bsrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello over the backend's own TLS")
	})}
	go bsrv.Serve(tls.NewListener(bln, &tls.Config{Certificates: []tls.Certificate{bpair}}))
	t.Cleanup(func() { bsrv.Close() })
	secure := &backend{name: "secure-v1", addr: netip.MustParseAddrPort(bln.Addr().String())}

	port := freePort(t)
	p := strconv.Itoa(int(port))
	rcName := "https." + p
	secureCluster := "outbound|443||secure.default.svc.cluster.local"
	e.mustPush(resourcev3.ClusterType, edsCluster(clusterName("")), edsCluster(secureCluster))
	e.mustPush(resourcev3.EndpointType, cla(clusterName(""), hboneEP(b, "v1")), cla(secureCluster, hboneEP(secure, "v1")))
	l := gatewayListener(t, port)
	l.FilterChains = []*listenerv3.FilterChain{
		tlsGatewayChain(t, rcName+".0", port, []string{"bookinfo.example.com"}, "kubernetes://bookinfo-credential", hcmChain(t, rcName, "", port, rcName)),
		tlsGatewayChain(t, rcName+".1", port, []string{"*.missing.example.com"}, "kubernetes://missing", hcmChain(t, rcName, "", port, rcName)),
		tlsGatewayChain(t, "tls."+p+".secure", port, []string{"secure.example.com"}, "", tcpChain(t, "", "", port, secureCluster)),
	}
	e.mustPush(resourcev3.ListenerType, l)
	// A redirect without a scheme keeps the request's: https here.
	redirect := &routev3.Route{Name: "old", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/old"}},
		Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new"}}}}
	e.mustPush(resourcev3.RouteType, routeConfig(rcName, "bookinfo.example.com", redirect, routeTo("default/bookinfo.0", clusterName(""))))

	pl := &PlainListeners{Proxy: e.wp, Host: "127.0.0.1", Source: Source{ID: waypointID}}
	if err := pl.Sync(e.wp.Store.Snapshot().ListenPorts); err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	client := func(sni string) *http.Client {
		return &http.Client{Timeout: testTimeout, Transport: &http.Transport{
			ForceAttemptHTTP2: true,
			TLSClientConfig:   &tls.Config{ServerName: sni, RootCAs: pki.Pool},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, "127.0.0.1:"+p)
			}}}
	}
	get := func(sni string) (*http.Response, string, error) {
		resp, err := client(sni).Get("https://" + sni + "/productpage")
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp, string(body), err
	}

	resp, body, err := get("bookinfo.example.com")
	if err != nil || resp.StatusCode != 200 || body != "hello from productpage-v1" {
		t.Fatalf("HTTPS bookinfo.example.com: %v %v %q", resp, err, body)
	}
	if resp.Proto != "HTTP/2.0" || resp.TLS.PeerCertificates[0].Subject.CommonName != "bookinfo.example.com" {
		t.Fatalf("HTTPS: %s with certificate %s, want HTTP/2.0 (ALPN) and the credential's certificate", resp.Proto, resp.TLS.PeerCertificates[0].Subject)
	}

	c := client("bookinfo.example.com")
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if resp, err := c.Get("https://bookinfo.example.com/old"); err != nil || resp.Header.Get("Location") != "https://bookinfo.example.com/new" {
		t.Fatalf("redirect over HTTPS: %v, Location %q; want https://bookinfo.example.com/new", err, resp.Header.Get("Location"))
	}

	resp, body, err = get("secure.example.com")
	if err != nil || resp.StatusCode != 200 || body != "hello over the backend's own TLS" {
		t.Fatalf("passthrough secure.example.com: %v %v %q", resp, err, body)
	}
	if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != "secure.example.com" {
		t.Fatalf("passthrough: certificate %q, want the backend's own", cn)
	}

	if _, _, err := get("unknown.example.com"); err == nil {
		t.Fatal("unknown SNI: handshake succeeded, want it closed")
	}
	await.True(t, "the missing filter chain counted", func() bool {
		return testutil.ToFloat64(e.wp.Metrics.gatewayTLS.WithLabelValues("no_filter_chain")) == 1
	})
	if _, _, err := get("a.missing.example.com"); err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Fatalf("missing credential: %v, want a handshake alert", err)
	}
	await.True(t, "the handshake failure counted", func() bool { return testutil.ToFloat64(e.wp.Metrics.gatewayTLS.WithLabelValues("handshake")) == 1 })
	// Plain HTTP on the TLS port is not served in clear.
	conn, err := net.Dial("tcp", "127.0.0.1:"+p)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /productpage HTTP/1.1\r\nHost: bookinfo.example.com\r\n\r\n")
	_ = conn.SetReadDeadline(time.Now().Add(testTimeout))
	if n, _ := conn.Read(make([]byte, 64)); n > 0 {
		t.Fatalf("plain HTTP on the TLS port got %d bytes back", n)
	}
}

// TestUpstreamH2: a gateway client's HTTP/2 is not carried upstream except
// for gRPC; inside the mesh the downstream protocol is.
func TestUpstreamH2(t *testing.T) {
	for _, c := range []struct {
		edge, h2 bool
		ct       string
		want     bool
	}{
		{edge: true, h2: true, ct: "text/html", want: false},
		{edge: true, h2: true, ct: "application/grpc+proto", want: true},
		{edge: true, h2: false, ct: "application/grpc", want: false},
		{edge: false, h2: true, ct: "text/html", want: true},
		{edge: false, h2: false, want: false},
	} {
		req, _ := http.NewRequest(http.MethodPost, "http://example.com/", nil)
		req.Header.Set("Content-Type", c.ct)
		if got := (&requestState{edge: c.edge, h2: c.h2}).upstreamH2(req); got != c.want {
			t.Errorf("edge=%v h2=%v content-type %q: upstream h2 %v, want %v", c.edge, c.h2, c.ct, got, c.want)
		}
	}
}
