package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/prometheus/client_golang/prometheus"
	cav1 "github.com/weft-mesh/weft/api/ca/v1"
	"github.com/weft-mesh/weft/internal/await"
	"github.com/weft-mesh/weft/waypoint/proxy"
)

// fakeControl is weft-control for one test: TLS gRPC with a CA that signs
// any CSR presenting the expected token, and delta ADS from a snapshot.
type fakeControl struct {
	cav1.UnimplementedCertificateServiceServer
	rootKey   *ecdsa.PrivateKey
	root      *x509.Certificate
	rootPEM   []byte
	addr      string
	snaps     cache.SnapshotCache
	adsTokens atomic.Int32
	g         *grpc.Server
}

func newCert(t *testing.T, tmpl *x509.Certificate, pub any, parent *x509.Certificate, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pemOf(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func startControl(t *testing.T) *fakeControl {
	t.Helper()
	f := &fakeControl{snaps: cache.NewSnapshotCache(true, cache.IDHash{}, nil)}
	var err error
	f.rootKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	f.root = newCert(t, tmpl, &f.rootKey.PublicKey, tmpl, f.rootKey)
	f.rootPEM = pemOf(f.root)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv := newCert(t, &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}, &srvKey.PublicKey, f.root, f.rootKey)
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{srv.Raw}, PrivateKey: srvKey}}})
	f.g = grpc.NewServer(grpc.Creds(creds), grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if md, _ := metadata.FromIncomingContext(ss.Context()); strings.Join(md.Get("authorization"), "") == "Bearer token-1" {
			f.adsTokens.Add(1)
		}
		return h(srv, ss)
	}))
	cav1.RegisterCertificateServiceServer(f.g, f)
	discovery.RegisterAggregatedDiscoveryServiceServer(f.g, server.NewServer(context.Background(), f.snaps, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	go f.g.Serve(ln)
	t.Cleanup(f.g.Stop)
	return f
}

func (f *fakeControl) CreateCertificate(ctx context.Context, req *cav1.CreateCertificateRequest) (*cav1.CreateCertificateResponse, error) {
	if md, _ := metadata.FromIncomingContext(ctx); strings.Join(md.Get("authorization"), "") != "Bearer token-1" {
		return nil, status.Error(codes.Unauthenticated, "bad token")
	}
	b, _ := pem.Decode([]byte(req.GetCsr()))
	if b == nil {
		return nil, status.Error(codes.InvalidArgument, "no CSR")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), URIs: csr.URIs,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
		f.root, csr.PublicKey, f.rootKey)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &cav1.CreateCertificateResponse{
		CertChain:   []string{string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))},
		TrustBundle: []string{string(f.rootPEM)},
	}, nil
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func httpGet(url string) (int, string, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func TestRunAgainstControlPlane(t *testing.T) {
	f := startControl(t)
	streamEnded := await.NewLogLine("xds stream ended")
	dir := t.TempDir()
	rootFile, tokenFile := filepath.Join(dir, "root-cert.pem"), filepath.Join(dir, "token")
	os.WriteFile(rootFile, f.rootPEM, 0o600)
	os.WriteFile(tokenFile, []byte("token-1\n"), 0o600)
	cfg := Config{Namespace: "default", Gateway: "waypoint", PodName: "waypoint-abc", TrustDomain: "cluster.local",
		ControlAddress: f.addr, CARootCert: rootFile, TokenFile: tokenFile,
		HBONEAddress: freeAddr(t), MetricsAddress: freeAddr(t), ReadinessAddress: freeAddr(t), AdminAddress: freeAddr(t),
		DrainDuration: 3 * time.Second, Log: slog.New(slog.NewTextHandler(streamEnded, nil))}
	if cfg.NodeID() != "waypoint~default/waypoint~waypoint-abc" {
		t.Fatalf("node ID %q", cfg.NodeID())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	ready := "http://" + cfg.ReadinessAddress + "/healthz/ready"
	waitHTTP(t, ready, func(code int, body string) bool {
		return code == http.StatusServiceUnavailable && strings.Contains(body, "configuration")
	})

	tc, _ := anypb.New(&tcpv3.TcpProxy{StatPrefix: "db", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "outbound|5432||db.default.svc.cluster.local"}})
	snap, err := cache.NewSnapshot("1", map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: {&listenerv3.Listener{Name: "waypoint", FilterChains: []*listenerv3.FilterChain{{
			Name:             "db.default.svc.cluster.local:5432",
			FilterChainMatch: &listenerv3.FilterChainMatch{PrefixRanges: []*core.CidrRange{{AddressPrefix: "10.96.0.9"}}},
			Filters:          []*listenerv3.Filter{{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tc}}},
		}}}},
		resourcev3.ClusterType: {&clusterv3.Cluster{Name: "outbound|5432||db.default.svc.cluster.local",
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}}},
		resourcev3.EndpointType: {},
		resourcev3.RouteType:    {},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.snaps.SetSnapshot(ctx, cfg.NodeID(), snap); err != nil {
		t.Fatal(err)
	}
	waitHTTP(t, ready, func(code int, _ string) bool { return code == http.StatusOK })
	if f.adsTokens.Load() == 0 {
		t.Fatal("xDS stream carried no bearer token")
	}

	code, dump, err := httpGet("http://" + cfg.AdminAddress + "/config_dump")
	if err != nil || code != 200 {
		t.Fatalf("config_dump: %d %v", code, err)
	}
	for _, want := range []string{"db.default.svc.cluster.local:5432", "spiffe://cluster.local/ns/default/sa/waypoint", `"synced": true`} {
		if !strings.Contains(dump, want) {
			t.Errorf("config_dump lacks %q:\n%s", want, dump)
		}
	}
	if strings.Contains(dump, "PRIVATE KEY") || strings.Contains(dump, "BEGIN") {
		t.Fatal("config_dump shows key material")
	}
	if code, body, _ := httpGet("http://" + cfg.MetricsAddress + "/stats/prometheus"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("metrics: %d", code)
	}
	// HBONE is served with the certificate from the CA.
	conn, err := tls.Dial("tcp", cfg.HBONEAddress, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err == nil {
		// No client certificate: the handshake (or the first read) fails.
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil {
		t.Fatal("HBONE accepted a client without a mesh certificate")
	}

	// The control plane goes away: still ready on the last good config.
	f.g.Stop()
	streamEnded.Wait(t)
	if code, _, _ := httpGet(ready); code != 200 {
		t.Fatalf("readiness after the control plane left: %d", code)
	}

	// Told to stop: not ready, and still serving HBONE during the drain.
	cancel()
	waitHTTP(t, ready, func(code int, body string) bool {
		return code == http.StatusServiceUnavailable && strings.Contains(body, "draining")
	})
	if c, err := net.Dial("tcp", cfg.HBONEAddress); err != nil {
		t.Errorf("HBONE during the drain: %v", err)
	} else {
		c.Close()
	}
}

func waitHTTP(t *testing.T, url string, ok func(int, string) bool) {
	t.Helper()
	await.NoErrorWithin(t, 15*time.Second, "the condition on "+url, func() error {
		code, body, err := httpGet(url)
		switch {
		case err != nil:
			return err
		case !ok(code, body):
			return fmt.Errorf("answered %d: %s", code, body)
		}
		return nil
	})
}

// TestGatewayMode: an ingress gateway names its service account in its
// node ID and identity, needs no HBONE address but a source of
// certificates (weft-gateway's), and a bad mode is refused.
func TestGatewayMode(t *testing.T) {
	cfg := Config{Mode: ModeGateway, Namespace: "weft-ingress", Gateway: "weft-ingress", ServiceAccount: "ingress-sa",
		PodName: "gw-1", TrustDomain: "cluster.local", ControlAddress: "x:15012", CARootCert: "r", TokenFile: "t"}
	if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "weft-gateway") {
		t.Fatalf("gateway mode without certificates (weft-waypoint's): %v, want an error naming weft-gateway", err)
	}
	cfg.Certificates = func(context.Context, string, []string, prometheus.Registerer, *slog.Logger) proxy.Certificates {
		return nil
	}
	if err := cfg.validate(); err != nil {
		t.Fatalf("gateway mode without --hbone-address: %v", err)
	}
	if got := cfg.NodeID(); got != "gateway~weft-ingress/ingress-sa~gw-1" {
		t.Fatalf("node ID %q", got)
	}
	if id, err := cfg.Identity(); err != nil || id.String() != "spiffe://cluster.local/ns/weft-ingress/sa/ingress-sa" {
		t.Fatalf("identity %v %v", id, err)
	}
	if b := cfg.baggage(); !strings.Contains(b, "k8s.deployment.name=weft-ingress") || !strings.Contains(b, "k8s.namespace.name=weft-ingress") {
		t.Fatalf("baggage %q", b)
	}
	cfg.Mode = "sidecar"
	if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "--mode") {
		t.Fatalf("bad mode: %v", err)
	}
	wp := Config{PodName: "p", ControlAddress: "x:15012", CARootCert: "r", TokenFile: "t"}
	if err := wp.validate(); err == nil || !strings.Contains(err.Error(), "--hbone-address") {
		t.Fatalf("waypoint mode without --hbone-address: %v", err)
	}
}
