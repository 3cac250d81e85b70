package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/pkg/testpki"
)

// mutualCerts adds client CA bundles to staticCerts.
type mutualCerts struct {
	staticCerts
	cas map[string]*x509.CertPool
}

func (m mutualCerts) CAs(name string) (*x509.CertPool, error) {
	if p := m.cas[name]; p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("no client CA %q", name)
}

// mutualChain is an HTTPS chain that checks client certificates as
// control/waypoint renders tls.mode MUTUAL (required) and OPTIONAL_MUTUAL.
func mutualChain(t *testing.T, name string, port uint32, sni, ca string, required bool, sans []string) *listenerv3.FilterChain {
	rc := "https." + strconv.Itoa(int(port))
	fc := tlsGatewayChain(t, name, port, []string{sni}, "kubernetes://server", hcmChain(t, rc, "", port, rc))
	def := &tlsv3.CertificateValidationContext{}
	for _, s := range sans {
		def.MatchTypedSubjectAltNames = append(def.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{
			SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}})
	}
	fc.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{
		TypedConfig: anyOf(t, &tlsv3.DownstreamTlsContext{
			RequireClientCertificate: wrapperspb.Bool(required),
			CommonTlsContext: &tlsv3.CommonTlsContext{
				AlpnProtocols:                  []string{"h2", "http/1.1"},
				TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "kubernetes://server"}},
				ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         def,
					ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: ca},
				}},
			}})}}
	return fc
}

// TestGatewayMutualTLS attacks a MUTUAL chain: no client certificate, one
// of another CA, one of the CA with a SAN the server does not accept, and
// a chain whose CA bundle is missing all fail the handshake; the right
// certificate passes and the backend learns which in
// X-Forwarded-Client-Cert. OPTIONAL_MUTUAL serves a client without a
// certificate, still refuses a bad one, and drops the XFCC header a client
// forges.
func TestGatewayMutualTLS(t *testing.T) {
	server, clientCA, otherCA := testpki.New(t), testpki.New(t), testpki.New(t)
	sc, sk := server.Issue(t, "mutual.example.com")
	pair, _ := tls.X509KeyPair(sc, sk)
	e := newEnv(t, func(o *Options) {
		o.Certificates = mutualCerts{staticCerts{"kubernetes://server": &pair}, map[string]*x509.CertPool{"kubernetes://server-cacert": clientCA.Pool}}
	})
	b := startBackend(t, "productpage-v1", nil)
	port := freePort(t)
	rc := "https." + strconv.Itoa(int(port))
	e.mustPush(resourcev3.ClusterType, edsCluster(clusterName("")))
	e.mustPush(resourcev3.EndpointType, cla(clusterName(""), hboneEP(b, "v1")))
	l := gatewayListener(t, port)
	l.FilterChains = []*listenerv3.FilterChain{
		mutualChain(t, rc+".0", port, "mutual.example.com", "kubernetes://server-cacert", true, []string{"client.example.com"}),
		mutualChain(t, rc+".1", port, "optional.example.com", "kubernetes://server-cacert", false, nil),
		mutualChain(t, rc+".2", port, "nocas.example.com", "kubernetes://missing-cacert", true, nil),
	}
	e.mustPush(resourcev3.ListenerType, l)
	e.mustPush(resourcev3.RouteType, routeConfig(rc, "*", routeTo("default/bookinfo.0", clusterName(""))))
	pl := &PlainListeners{Proxy: e.wp, Host: "127.0.0.1", Source: Source{ID: waypointID}}
	if err := pl.Sync(e.wp.Store.Snapshot().ListenPorts); err != nil {
		t.Fatal(err)
	}
	defer pl.Close()

	get := func(sni string, cert *tls.Certificate) error {
		// SNI picks the chain; the one server certificate is checked
		// against its CA by name mutual.example.com whatever the SNI.
		cfg := &tls.Config{ServerName: sni, InsecureSkipVerify: true, VerifyConnection: func(st tls.ConnectionState) error {
			_, err := st.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: server.Pool, DNSName: "mutual.example.com"})
			return err
		}}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		c := &http.Client{Timeout: testTimeout, Transport: &http.Transport{TLSClientConfig: cfg,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, "127.0.0.1:"+strconv.Itoa(int(port)))
			}}}
		req, _ := http.NewRequest(http.MethodGet, "https://"+sni+"/", nil)
		req.Header.Set(xfccHeader, `Hash=forged;Subject="CN=admin"`)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	issue := func(ca *testpki.CA, host string) *tls.Certificate {
		c, k := ca.Issue(t, host)
		p, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return &p
	}
	good := issue(clientCA, "client.example.com")
	for _, c := range []struct {
		name, sni string
		cert      *tls.Certificate
	}{
		{"MUTUAL without a client certificate", "mutual.example.com", nil},
		{"MUTUAL with a certificate of another CA", "mutual.example.com", issue(otherCA, "client.example.com")},
		{"MUTUAL with a SAN not accepted", "mutual.example.com", issue(clientCA, "intruder.example.com")},
		{"MUTUAL whose CA bundle is missing", "nocas.example.com", good},
		{"OPTIONAL_MUTUAL with a certificate of another CA", "optional.example.com", issue(otherCA, "client.example.com")},
	} {
		if err := get(c.sni, c.cert); err == nil {
			t.Errorf("%s: served, want the handshake refused", c.name)
		}
	}
	if b.hits.Load() != 0 {
		t.Fatalf("the backend got %d requests from refused clients", b.hits.Load())
	}

	if err := get("mutual.example.com", good); err != nil {
		t.Fatalf("MUTUAL with the right certificate: %v", err)
	}
	sum := sha256.Sum256(good.Leaf.Raw)
	want := "Hash=" + hex.EncodeToString(sum[:]) + `;Subject="CN=client.example.com";DNS=client.example.com`
	if got := b.seenHeader(xfccHeader); got != want {
		t.Errorf("X-Forwarded-Client-Cert %q, want %q (the verified certificate, never the client's header)", got, want)
	}
	if err := get("optional.example.com", nil); err != nil {
		t.Fatalf("OPTIONAL_MUTUAL without a certificate: %v", err)
	}
	if got := b.seenHeader(xfccHeader); got != "" || strings.Contains(got, "forged") {
		t.Errorf("X-Forwarded-Client-Cert %q without a client certificate, want none (the client's own dropped)", got)
	}
}

// TestWaypointDropsClientCertHeader: a mesh client's own
// X-Forwarded-Client-Cert does not reach the service through a waypoint
// (Envoy's SANITIZE, Istio's waypoint behaviour): only a proxy that
// verified a client certificate may vouch for one.
func TestWaypointDropsClientCertHeader(t *testing.T) {
	e := newEnv(t)
	b := startBackend(t, "reviews-v1", nil)
	e.simple(nil, b)
	code, _ := get(t, e.httpClient(vipAuthority()), "/", map[string]string{xfccHeader: `Hash=forged;URI=spiffe://cluster.local/ns/admin/sa/root`})
	if code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if got := b.seenHeader(xfccHeader); got != "" {
		t.Errorf("the service saw X-Forwarded-Client-Cert %q, want none", got)
	}
}
