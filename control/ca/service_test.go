package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	cav1 "github.com/weft-mesh/weft/api/ca/v1"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func serveCA(t *testing.T, svc cav1.CertificateServiceServer) cav1.CertificateServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	cav1.RegisterCertificateServiceServer(srv, svc)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return cav1.NewCertificateServiceClient(conn)
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			return metricValue(m)
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

func TestServiceEndToEnd(t *testing.T) {
	testKeys(t)
	var reviews atomic.Int32
	client := tokenReviewClient(t, map[string]fakeToken{
		"productpage-token": testTokens["productpage"],
		"agent-a-token": {authenticated: true, username: "system:serviceaccount:weft-system:weft-node-agent", audiences: []string{"weft-ca"},
			extra: podExtras("weft-node-agent-a", "uid-agent-a", "node-a")},
		"api-audience-token": testTokens["api-audience"],
	}, &reviews)

	a := newTestAuthority(t, Options{})
	authn := NewTokenReviewAuthenticator(client, TokenReviewOptions{})
	authz := NewNodeAuthorizer(testTD, DefaultNodeAgent, indexerLookup(t, testPods))
	reg := prometheus.NewRegistry()
	logs := &syncBuffer{}
	svc := NewService(a, authn, authz, ServiceOptions{Registerer: reg, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	ca := serveCA(t, svc)

	productpage := workloadID(t, testTD, "default", "bookinfo-productpage")
	reviewsID := workloadID(t, testTD, "default", "bookinfo-reviews")
	csrFor := func(id string) string { return string(makeCSR(t, csrSpec{key: keyP256, uris: []string{id}})) }

	tests := []struct {
		name     string
		auth     []string // authorization metadata values
		csr      string
		validity int64
		code     codes.Code
		msg      []string
	}{
		{name: "own identity", auth: []string{"Bearer productpage-token"}, csr: csrFor(productpage.String()), code: codes.OK},
		{name: "own identity, lower-case scheme, 1h", auth: []string{"bearer productpage-token"}, csr: csrFor(productpage.String()), validity: 3600, code: codes.OK},
		{name: "node agent for a pod on its node", auth: []string{"Bearer agent-a-token"}, csr: csrFor(productpage.String()), code: codes.OK},
		{name: "huge validity is capped", auth: []string{"Bearer productpage-token"}, csr: csrFor(productpage.String()), validity: 1 << 62, code: codes.OK},
		{name: "no token", csr: csrFor(productpage.String()), code: codes.Unauthenticated, msg: []string{"authorization"}},
		{name: "not bearer", auth: []string{"Basic Zm9vOmJhcg=="}, csr: csrFor(productpage.String()), code: codes.Unauthenticated},
		{name: "two tokens", auth: []string{"Bearer a", "Bearer b"}, csr: csrFor(productpage.String()), code: codes.Unauthenticated},
		{name: "invalid token", auth: []string{"Bearer forged"}, csr: csrFor(productpage.String()), code: codes.Unauthenticated},
		{name: "API-server audience", auth: []string{"Bearer api-audience-token"}, csr: csrFor(productpage.String()), code: codes.Unauthenticated, msg: []string{"weft-ca"}},
		{name: "API server down", auth: []string{"Bearer api-down"}, csr: csrFor(productpage.String()), code: codes.Unavailable},
		{name: "someone else's identity", auth: []string{"Bearer productpage-token"}, csr: csrFor(reviewsID.String()), code: codes.PermissionDenied,
			msg: []string{"default/bookinfo-productpage", reviewsID.String()}},
		{name: "node agent for a pod on another node", auth: []string{"Bearer agent-a-token"}, csr: csrFor(reviewsID.String()), code: codes.PermissionDenied,
			msg: []string{"weft-system/weft-node-agent", reviewsID.String(), "node-a"}},
		{name: "foreign trust domain", auth: []string{"Bearer productpage-token"}, csr: csrFor(workloadID(t, otherTD, "default", "bookinfo-productpage").String()), code: codes.PermissionDenied},
		{name: "garbage CSR", auth: []string{"Bearer productpage-token"}, csr: "garbage", code: codes.InvalidArgument},
		{name: "CSR with DNS SAN", auth: []string{"Bearer productpage-token"},
			csr: string(makeCSR(t, csrSpec{key: keyP256, uris: []string{productpage.String()}, dns: []string{"x"}})), code: codes.InvalidArgument},
		{name: "weak key", auth: []string{"Bearer productpage-token"},
			csr: string(makeCSR(t, csrSpec{key: keyRSA1k, uris: []string{productpage.String()}})), code: codes.InvalidArgument},
		{name: "negative validity", auth: []string{"Bearer productpage-token"}, csr: csrFor(productpage.String()), validity: -5, code: codes.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, v := range tc.auth {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", v)
			}
			resp, err := ca.CreateCertificate(ctx, &cav1.CreateCertificateRequest{Csr: tc.csr, ValiditySeconds: tc.validity})
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code %v (%v), want %v", got, err, tc.code)
			}
			for _, m := range tc.msg {
				if !strings.Contains(status.Convert(err).Message(), m) {
					t.Errorf("message %q does not mention %q", status.Convert(err).Message(), m)
				}
			}
			if tc.code != codes.OK {
				return
			}
			var chain []*x509.Certificate
			for _, p := range resp.GetCertChain() {
				certs, err := parseCertsPEM([]byte(p))
				if err != nil || len(certs) != 1 {
					t.Fatalf("cert_chain entry: %v", err)
				}
				chain = append(chain, certs...)
			}
			var bundle bytes.Buffer
			for _, p := range resp.GetTrustBundle() {
				bundle.WriteString(p)
			}
			b, err := x509bundle.Parse(testTD, bundle.Bytes())
			if err != nil {
				t.Fatalf("trust_bundle: %v", err)
			}
			id, _, err := x509svid.Verify(chain, b)
			if err != nil || id != productpage {
				t.Fatalf("verify: %s, %v", id, err)
			}
			life := time.Until(chain[0].NotAfter)
			want := DefaultTTL
			switch tc.validity {
			case 3600:
				want = time.Hour
			case 1 << 62:
				want = DefaultMaxTTL
			}
			if life > want || life < want-time.Minute {
				t.Errorf("lifetime %v, want %v", life, want)
			}
		})
	}

	if got := counterValue(t, reg, "weft_ca_certificates_issued_total", nil); got != 4 {
		t.Errorf("issued_total %v, want 4", got)
	}
	for result, want := range map[string]float64{
		ResultOK: 4, ResultUnauthenticated: 5, ResultUnavailable: 1, ResultPermissionDenied: 3, ResultInvalidArgument: 4, ResultInternal: 0,
	} {
		if got := counterValue(t, reg, "weft_ca_requests_total", map[string]string{"result": result}); got != want {
			t.Errorf("requests_total{result=%s} %v, want %v", result, got, want)
		}
	}
	if got := counterValue(t, reg, "weft_ca_request_duration_seconds", nil); got != float64(len(tests)) {
		t.Errorf("duration samples %v, want %d", got, len(tests))
	}

	// One line per request, never the token or the CSR.
	out := logs.String()
	if n := strings.Count(out, `"msg":"certificate request"`); n != len(tests) {
		t.Errorf("%d log lines, want %d", n, len(tests))
	}
	for _, secret := range []string{"productpage-token", "agent-a-token", "forged", "BEGIN CERTIFICATE REQUEST", "garbage"} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains %q", secret)
		}
	}
	if !strings.Contains(out, `"requested":"`+reviewsID.String()+`"`) || !strings.Contains(out, `"result":"permission_denied"`) {
		t.Errorf("log lacks requested identity/result:\n%s", out)
	}

	// A second Service on the same registry shares the metrics.
	_ = NewService(a, authn, authz, ServiceOptions{Registerer: reg, Logger: discardLogger()})
}

// Signing failures are Internal and say nothing about the CA.
func TestServiceInternalError(t *testing.T) {
	testKeys(t)
	var reviews atomic.Int32
	client := tokenReviewClient(t, map[string]fakeToken{"productpage-token": testTokens["productpage"]}, &reviews)
	clock := newFakeClock()
	root := newSelfSigned(t, "short", clock.Now().Add(time.Hour))
	a, err := NewAuthority(root.key, root.cert, nil, []*x509.Certificate{root.cert}, Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour) // the CA has expired since start-up
	svc := NewService(a, NewTokenReviewAuthenticator(client, TokenReviewOptions{}),
		NewNodeAuthorizer(testTD, DefaultNodeAgent, indexerLookup(t, testPods)), ServiceOptions{Logger: discardLogger()})
	ca := serveCA(t, svc)
	id := workloadID(t, testTD, "default", "bookinfo-productpage")
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer productpage-token")
	_, err = ca.CreateCertificate(ctx, &cav1.CreateCertificateRequest{Csr: string(makeCSR(t, csrSpec{key: keyP256, uris: []string{id.String()}}))})
	if status.Code(err) != codes.Internal {
		t.Fatalf("code %v, want Internal", status.Code(err))
	}
	if msg := status.Convert(err).Message(); strings.Contains(msg, "PRIVATE") || strings.Contains(msg, "expired") {
		t.Errorf("Internal message leaks detail: %q", msg)
	}
}
