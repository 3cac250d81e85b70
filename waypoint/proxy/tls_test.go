package proxy

import (
	"crypto/tls"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	wellknown "github.com/envoyproxy/go-control-plane/pkg/wellknown"
)

// tlsCluster is control/waypoint's cluster for a DestinationRule with
// tls.mode SIMPLE: an Envoy TLS transport socket with SNI and trusted_ca.
func tlsCluster(t *testing.T, name, sni, caFile string) *clusterv3.Cluster {
	ctx := &tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: caFile}}}}}}
	return edsCluster(name, func(c *clusterv3.Cluster) {
		c.TransportSocket = &corev3.TransportSocket{Name: wellknown.TransportSocketTLS,
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: anyOf(t, ctx)}}
	})
}

// TestGatewayOriginatesTLS: an egress gateway route to a cluster with a TLS
// transport socket reaches a plain-TCP (tunnel NONE) endpoint over TLS with
// the configured SNI, verifying its certificate against trusted_ca; an SNI
// the certificate does not name fails the connection (503), and a CA file
// that cannot be read rejects the cluster.
func TestGatewayOriginatesTLS(t *testing.T) {
	var mu sync.Mutex
	var snis []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			http.Error(w, "not TLS", http.StatusBadRequest)
			return
		}
		io.WriteString(w, "hello over TLS to "+r.Host)
	}))
	srv.TLS = &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		mu.Lock()
		snis = append(snis, h.ServerName)
		mu.Unlock()
		return nil, nil
	}}
	srv.StartTLS()
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	ep := epSpec{addr: netip.MustParseAddrPort(srv.Listener.Addr().String()), tunnel: "NONE", workload: "external", health: corev3.HealthStatus_HEALTHY}

	e := newEnv(t)
	fetch := originatingGateway(t, e, ep, tlsCluster(t, "example.com", "example.com", caFile), tlsCluster(t, "wrong-name", "other.test", caFile))
	if code, body := fetch("example.com"); code != http.StatusOK || body != "hello over TLS to example.com" {
		t.Fatalf("GET /ok: %d %q, want 200 from the TLS endpoint", code, body)
	}
	mu.Lock()
	got := append([]string(nil), snis...)
	mu.Unlock()
	if len(got) != 1 || got[0] != "example.com" {
		t.Fatalf("server saw SNIs %q, want one handshake with example.com", got)
	}
	if code, body := fetch("wrong-name"); code != http.StatusServiceUnavailable {
		t.Fatalf("GET with SNI the certificate does not name: %d %q, want 503", code, body)
	}

	if err := e.push(resourcev3.ClusterType, tlsCluster(t, "missing-ca", "example.com", filepath.Join(t.TempDir(), "none.crt"))); err == nil {
		t.Fatal("a cluster whose trusted_ca file cannot be read was accepted")
	}
}
