package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	wellknown "github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"

	"github.com/weft-mesh/weft/pkg/testpki"
)

// sdsTLSCluster is control/waypoint's cluster for a DestinationRule with
// credentialName: the CA bundle "<cred>-cacert" and, when cert is set
// (MUTUAL), the client certificate by SDS; sans as exact DNS matches.
func sdsTLSCluster(t *testing.T, name, sni, cert, ca string, sans ...string) *clusterv3.Cluster {
	def := &tlsv3.CertificateValidationContext{}
	for _, s := range sans {
		def.MatchTypedSubjectAltNames = append(def.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{
			SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}})
	}
	common := &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
		CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext: def, ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: ca}}}}
	if cert != "" {
		common.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{{Name: cert}}
	}
	return edsCluster(name, func(c *clusterv3.Cluster) {
		c.TransportSocket = &corev3.TransportSocket{Name: wellknown.TransportSocketTLS,
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: anyOf(t, &tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: common})}}
	})
}

// originatingGateway serves a gateway listener whose route "/<name>" goes
// to cluster <name>, each with endpoint ep; it returns GET /<name>'s
// status and body.
func originatingGateway(t *testing.T, e *env, ep epSpec, clusters ...*clusterv3.Cluster) func(name string) (int, string) {
	t.Helper()
	port := freePort(t)
	rcName := "http." + strconv.Itoa(int(port))
	var routes []*routev3.Route
	var cs, clas []proto.Message
	for i, c := range clusters {
		r := routeTo("default/egress."+strconv.Itoa(i), c.Name)
		r.Match.PathSpecifier = &routev3.RouteMatch_Path{Path: "/" + c.Name}
		routes = append(routes, r)
		cs, clas = append(cs, c), append(clas, cla(c.Name, ep))
	}
	e.mustPush(resourcev3.ClusterType, cs...)
	e.mustPush(resourcev3.EndpointType, clas...)
	e.mustPush(resourcev3.ListenerType, gatewayListener(t, port))
	e.mustPush(resourcev3.RouteType, routeConfig(rcName, "*", routes...))
	pl := &PlainListeners{Proxy: e.wp, Host: "127.0.0.1", Source: Source{ID: waypointID}}
	if err := pl.Sync(e.wp.Store.Snapshot().ListenPorts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pl.Close() })
	c := &http.Client{Timeout: testTimeout}
	return func(name string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://127.0.0.1:"+strconv.Itoa(int(port))+"/"+name, nil)
		req.Host = "example.com"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
}

// TestGatewayOriginatesMutualTLS: a DestinationRule's MUTUAL with
// credentialName at an egress gateway presents the Secret's certificate
// and verifies the server against the Secret's CA bundle and the SANs.
// Attacked: no client certificate, one of a CA the server does not
// trust, a server the CA vouches for but under another name, a server of
// another CA and a missing bundle all fail (503, the request never sent).
// A waypoint (no Secret access) accepts such a cluster and fails its
// connections.
func TestGatewayOriginatesMutualTLS(t *testing.T) {
	serverCA, clientCA, otherCA := testpki.New(t), testpki.New(t), testpki.New(t)
	pair := func(ca *testpki.CA, host string) *tls.Certificate {
		c, k := ca.Issue(t, host)
		p, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return &p
	}
	pool := func(ca *testpki.CA) *x509.CertPool {
		p := x509.NewCertPool()
		p.AppendCertsFromPEM(ca.CertPEM())
		return p
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "client "+r.TLS.PeerCertificates[0].DNSNames[0])
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*pair(serverCA, "external.example.com")},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool(clientCA)}
	srv.StartTLS()
	defer srv.Close()
	ep := epSpec{addr: netip.MustParseAddrPort(srv.Listener.Addr().String()), tunnel: "NONE", workload: "external", health: corev3.HealthStatus_HEALTHY}
	certs := mutualCerts{
		staticCerts: staticCerts{"kubernetes://client": pair(clientCA, "egress.example.com"), "kubernetes://rogue": pair(otherCA, "egress.example.com")},
		cas:         map[string]*x509.CertPool{"kubernetes://client-cacert": pool(serverCA), "kubernetes://other-cacert": pool(otherCA)},
	}
	const sni = "external.example.com"
	clusters := []*clusterv3.Cluster{
		sdsTLSCluster(t, "ok", sni, "kubernetes://client", "kubernetes://client-cacert", sni),
		sdsTLSCluster(t, "by-sni", sni, "kubernetes://client", "kubernetes://client-cacert"),
		sdsTLSCluster(t, "no-client-cert", sni, "", "kubernetes://client-cacert"),
		sdsTLSCluster(t, "untrusted-client", sni, "kubernetes://rogue", "kubernetes://client-cacert"),
		sdsTLSCluster(t, "wrong-san", sni, "kubernetes://client", "kubernetes://client-cacert", "other.example.com"),
		sdsTLSCluster(t, "wrong-sni", "other.example.com", "kubernetes://client", "kubernetes://client-cacert"),
		sdsTLSCluster(t, "other-ca", sni, "kubernetes://client", "kubernetes://other-cacert"),
		sdsTLSCluster(t, "no-bundle", sni, "kubernetes://client", "kubernetes://missing-cacert"),
	}
	e := newEnv(t, func(o *Options) { o.Certificates = certs })
	fetch := originatingGateway(t, e, ep, clusters...)
	for _, name := range []string{"ok", "by-sni"} {
		if code, body := fetch(name); code != http.StatusOK || body != "client egress.example.com" {
			t.Errorf("%s: %d %q, want 200 from the server, which saw the credential's certificate", name, code, body)
		}
	}
	// An update of the TLS settings counts for the next request: the
	// connection made with the old ones is not reused.
	e.mustPush(resourcev3.ClusterType, sdsTLSCluster(t, "ok", sni, "kubernetes://client", "kubernetes://client-cacert", "other.example.com"))
	if code, body := fetch("ok"); code != http.StatusServiceUnavailable {
		t.Errorf("after the SANs changed: %d %q, want 503 (a pooled connection of the old settings was reused)", code, body)
	}
	for _, c := range clusters[2:] {
		if code, body := fetch(c.Name); code != http.StatusServiceUnavailable || strings.HasPrefix(body, "client") {
			t.Errorf("%s: %d %q, want 503 without reaching the server", c.Name, code, body)
		}
	}

	waypoint := originatingGateway(t, newEnv(t), ep, clusters[0])
	if code, body := waypoint("ok"); code != http.StatusServiceUnavailable {
		t.Errorf("a proxy without Secret access: %d %q, want 503", code, body)
	}
}
