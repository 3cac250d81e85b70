package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cav1 "github.com/weft-mesh/weft/api/ca/v1"
	"github.com/weft-mesh/weft/control/ca"
)

var (
	quiet = slog.New(slog.NewTextHandler(io.Discard, nil))
	td    = spiffeid.RequireTrustDomainFromString("cluster.local")
	idA   = spiffeid.RequireFromSegments(td, "ns", "default", "sa", "productpage")
	idB   = spiffeid.RequireFromSegments(td, "ns", "default", "sa", "reviews")
	idOff = spiffeid.RequireFromSegments(td, "ns", "default", "sa", "not-on-this-node")
)

// stubAuthn accepts exactly the current content of the token file as the
// node agent's token bound to a pod on node-a; failing simulates an API
// server that cannot be reached.
type stubAuthn struct {
	mu      sync.Mutex
	want    string
	failing bool
	calls   int
	tokens  []string
}

func (a *stubAuthn) Authenticate(_ context.Context, token string) (*ca.Caller, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	a.tokens = append(a.tokens, token)
	if a.failing {
		return nil, errors.New("api server unreachable")
	}
	if token != a.want {
		return nil, ca.ErrUnauthenticated
	}
	return &ca.Caller{Namespace: "weft-system", ServiceAccount: "weft-node-agent",
		PodName: "weft-node-agent-x", NodeName: "node-a"}, nil
}

func (a *stubAuthn) set(f func(a *stubAuthn)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a)
}

func (a *stubAuthn) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls
}

// pods on node-a run as default/productpage and default/reviews (and the
// node agent).
type fakePods struct{}

func (fakePods) PodsOnNode(node string) ([]*corev1.Pod, error) {
	if node != "node-a" {
		return nil, nil
	}
	var out []*corev1.Pod
	for _, sa := range []string{"productpage", "reviews"} {
		out = append(out, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: sa + "-1"},
			Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: sa},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning},
		})
	}
	return out, nil
}

// Pod knows the node agent's own pod, which its token is bound to.
func (fakePods) Pod(ns, name string) (*corev1.Pod, error) {
	if ns != "weft-system" || name != "weft-node-agent-x" {
		return nil, nil
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "weft-node-agent"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}, nil
}

func newAuthority(t *testing.T) *ca.Authority {
	a, _, _ := newAuthorityWithKey(t)
	return a
}

func newAuthorityWithKey(t *testing.T) (*ca.Authority, *ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "throwaway test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	a, err := ca.NewAuthority(key, cert, nil, []*x509.Certificate{cert}, ca.Options{TrustDomain: td, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return a, key, cert
}

// fixture is a Manager talking gRPC to a real CA service over an
// in-memory connection. Tests build it inside a synctest bubble, so
// time.Now is the bubble's fake clock, the Manager's renewal, retry and
// drop timers fire only when the test advances that clock, and
// synctest.Wait returns once the Manager has finished reacting.
type fixture struct {
	authority *ca.Authority
	caKey     *ecdsa.PrivateKey
	caCert    *x509.Certificate
	authn     *stubAuthn
	tokenPath string
	mgr       *Manager
}

// tamper lets a test turn the CA into a malicious one.
type tamperingCA struct {
	cav1.UnimplementedCertificateServiceServer
	real   *ca.Service
	mu     sync.Mutex
	tamper func(req *cav1.CreateCertificateRequest) (*cav1.CreateCertificateResponse, error)
}

func (s *tamperingCA) CreateCertificate(ctx context.Context, req *cav1.CreateCertificateRequest) (*cav1.CreateCertificateResponse, error) {
	s.mu.Lock()
	f := s.tamper
	s.mu.Unlock()
	resp, err := s.real.CreateCertificate(ctx, req) // authenticates, as the real one would
	if err != nil || f == nil {
		return resp, err
	}
	return f(req)
}

func newFixture(t *testing.T, tampering *tamperingCA) *fixture {
	t.Helper()
	f := &fixture{authn: &stubAuthn{want: "token-1"}}
	f.authority, f.caKey, f.caCert = newAuthorityWithKey(t)
	f.tokenPath = filepath.Join(t.TempDir(), "token")
	f.writeToken(t, "token-1\n")

	svc := ca.NewService(f.authority, f.authn, ca.NewNodeAuthorizer(td, ca.ServiceAccountRef{}, fakePods{}), ca.ServiceOptions{Logger: quiet})
	var server cav1.CertificateServiceServer = svc
	if tampering != nil {
		tampering.real = svc
		server = tampering
	}
	lis := bufconn.Listen(1 << 20)
	g := grpc.NewServer()
	cav1.RegisterCertificateServiceServer(g, server)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	f.mgr, err = NewManager(Options{
		Client: cav1.NewCertificateServiceClient(conn), Tokens: FileTokenSource(f.tokenPath),
		GracePeriod: time.Minute, Logger: quiet, Jitter: func() float64 { return 0.5 },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.mgr.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

func (f *fixture) writeToken(t *testing.T, tok string) {
	t.Helper()
	if err := os.WriteFile(f.tokenPath, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) status(id spiffeid.ID) (CertStatus, bool) {
	for _, s := range f.mgr.Status() {
		if s.ID == id.String() {
			return s, true
		}
	}
	return CertStatus{}, false
}

// settled waits until every goroutine of the bubble is blocked (the
// Manager has done all it will do at the current fake time) and then
// requires cond.
func settled(t *testing.T, what string, cond func() bool) {
	t.Helper()
	synctest.Wait()
	if !cond() {
		t.Fatalf("%s: not so once the manager settled", what)
	}
}

// advance moves the bubble's fake clock on by d, firing every timer due
// meanwhile, and waits for the Manager to settle. The Sleep takes no real
// time: the bubble's clock jumps once every goroutine is blocked.
func advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func get(t *testing.T, m *Manager, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := m.Get(ctx, id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return s
}

func TestFirstIssue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, nil)
		f.mgr.Want([]spiffeid.ID{idA})
		svid := get(t, f.mgr, idA)

		if svid.ID != idA {
			t.Fatalf("ID = %s", svid.ID)
		}
		leaf := svid.Certificates[0]
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != idA.String() {
			t.Fatalf("leaf URIs = %v", leaf.URIs)
		}
		if k, ok := svid.PrivateKey.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
			t.Fatalf("private key is %T, want ECDSA P-256", svid.PrivateKey)
		}
		if got := time.Until(leaf.NotAfter); got < 23*time.Hour || got > 25*time.Hour {
			t.Fatalf("lifetime %s, want the CA default 24h", got)
		}
		// Source serves the same certificate; the bundle verifies it.
		s2, err := f.mgr.Source(idA).GetX509SVID()
		if err != nil || s2 != svid {
			t.Fatalf("Source.GetX509SVID = %v, %v", s2, err)
		}
		b, err := f.mgr.Bundles().GetX509BundleForTrustDomain(td)
		if err != nil || !b.HasX509Authority(f.authority.Certificate()) {
			t.Fatalf("bundle = %v, %v", b, err)
		}
		if _, err := f.mgr.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("other.example")); err == nil {
			t.Fatal("bundle for an unknown trust domain")
		}
		st, _ := f.status(idA)
		wantRefresh := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
		if st.Serial != leaf.SerialNumber.Text(16) || !st.NotAfter.Equal(leaf.NotAfter) || !st.NextRefresh.Equal(wantRefresh) || st.LastError != "" {
			t.Fatalf("status = %+v, want refresh at %s", st, wantRefresh)
		}
		// Unknown identities are refused, not requested.
		if _, err := f.mgr.Source(idB).GetX509SVID(); !errors.Is(err, ErrNotWanted) {
			t.Fatalf("Source for an unwanted identity: %v", err)
		}
		if f.authn.count() != 1 {
			t.Fatalf("%d requests, want 1", f.authn.count())
		}
	})
}

// withFirstCertificate is a fixture holding its first certificate for idA,
// and the certificate's half-life, when the manager renews it.
func withFirstCertificate(t *testing.T) (f *fixture, first *x509svid.SVID, half time.Time) {
	t.Helper()
	f = newFixture(t, nil)
	f.mgr.Want([]spiffeid.ID{idA})
	first = get(t, f.mgr, idA)
	leaf := first.Certificates[0]
	return f, first, leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
}

func TestRotationAtHalfLifeReReadsToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, first, half := withFirstCertificate(t)
		leaf := first.Certificates[0]

		// The kubelet rotates the token file; the next request must use it.
		f.writeToken(t, "token-2")
		f.authn.set(func(a *stubAuthn) { a.want = "token-2" })

		advance(time.Until(half) - time.Second)
		if n := f.authn.count(); n != 1 {
			t.Fatalf("%d requests before half-life, want 1", n)
		}
		advance(time.Second)
		settled(t, "rotation", func() bool {
			s, _ := f.mgr.Source(idA).GetX509SVID()
			return s != nil && s != first
		})
		second, _ := f.mgr.Source(idA).GetX509SVID()
		if second.Certificates[0].SerialNumber.Cmp(leaf.SerialNumber) == 0 {
			t.Fatal("same serial after rotation")
		}
		if second.PrivateKey.Public().(*ecdsa.PublicKey).Equal(first.PrivateKey.Public()) {
			t.Fatal("rotation reused the private key")
		}
		if !second.Certificates[0].NotAfter.After(leaf.NotAfter) {
			t.Fatal("rotated certificate does not outlive the old one")
		}
		f.authn.mu.Lock()
		tokens := append([]string(nil), f.authn.tokens...)
		f.authn.mu.Unlock()
		if strings.Join(tokens, ",") != "token-1,token-2" {
			t.Fatalf("tokens presented = %v", tokens)
		}
		st, _ := f.status(idA)
		if st.LastError != "" || st.ConsecutiveFailures != 0 {
			t.Fatalf("status after rotation = %+v", st)
		}
	})
}

func TestFailureKeepsOldCertAndBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, first, half := withFirstCertificate(t)
		leaf := first.Certificates[0]

		f.authn.set(func(a *stubAuthn) { a.failing = true })
		advance(time.Until(half)) // the renewal at half-life fails

		// Jitter is fixed at the middle, so the waits are exactly 1s, 2s, 4s.
		for n, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
			var st CertStatus
			settled(t, "failure", func() bool {
				st, _ = f.status(idA)
				return st.ConsecutiveFailures == n+1
			})
			if !strings.Contains(st.LastError, "Unavailable") {
				t.Fatalf("LastError = %q", st.LastError)
			}
			if got := time.Until(st.NextRefresh); got != wait {
				t.Fatalf("failure %d: retry in %s, want %s", n+1, got, wait)
			}
			if st.Serial != leaf.SerialNumber.Text(16) {
				t.Fatalf("old certificate not kept: %+v", st)
			}
			if s := get(t, f.mgr, idA); s != first {
				t.Fatal("Get does not serve the old certificate while renewal fails")
			}
			if n < 2 {
				// Just before the retry is due nothing happens.
				advance(wait - time.Millisecond)
				if st, _ := f.status(idA); st.ConsecutiveFailures != n+1 {
					t.Fatalf("retried before the back-off elapsed: %+v", st)
				}
				advance(time.Millisecond)
			}
		}
		f.authn.set(func(a *stubAuthn) { a.failing = false })
		advance(4 * time.Second)
		settled(t, "recovery", func() bool {
			st, _ := f.status(idA)
			return st.ConsecutiveFailures == 0 && st.Serial != leaf.SerialNumber.Text(16)
		})
		if st, _ := f.status(idA); st.LastError != "" {
			t.Fatalf("LastError not cleared: %+v", st)
		}
	})
}

func TestBackoffBounds(t *testing.T) {
	for _, j := range []float64{0, 0.5, 0.999} {
		m, _ := NewManager(Options{Client: cav1.NewCertificateServiceClient(nil), Tokens: FileTokenSource("x"), Jitter: func() float64 { return j }})
		prev := time.Duration(0)
		for n := 1; n <= 12; n++ {
			d := m.backoff(n)
			if d < time.Second || d > time.Minute {
				t.Fatalf("jitter %v: backoff(%d) = %s outside [1s, 1m]", j, n, d)
			}
			if d < prev {
				t.Fatalf("jitter %v: backoff(%d) = %s shrank from %s", j, n, d, prev)
			}
			prev = d
		}
		if j > 0.5 && prev != time.Minute {
			t.Fatalf("backoff does not reach the 1m cap: %s", prev)
		}
	}
}

func TestMaliciousCARejected(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tamper  func(f *fixture, req *cav1.CreateCertificateRequest) (*cav1.CreateCertificateResponse, error)
		wantErr string
	}{
		{
			name: "wrong identity",
			// A certificate for our key, signed by the real CA, but for
			// another identity.
			tamper: func(f *fixture, req *cav1.CreateCertificateRequest) (*cav1.CreateCertificateResponse, error) {
				block, _ := pem.Decode([]byte(req.Csr))
				csr, err := x509.ParseCertificateRequest(block.Bytes)
				if err != nil {
					return nil, err
				}
				now := time.Now()
				der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
					SerialNumber: big.NewInt(42), NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
					URIs: []*url.URL{idB.URL()}, KeyUsage: x509.KeyUsageDigitalSignature,
					ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
				}, f.caCert, csr.PublicKey, f.caKey)
				return &cav1.CreateCertificateResponse{CertChain: ca.EncodePEM([][]byte{der}), TrustBundle: []string{string(f.authority.BundlePEM())}}, err
			},
			wantErr: "leaf certificate is for " + idB.String(),
		},
		{
			name: "untrusted chain",
			tamper: func(f *fixture, req *cav1.CreateCertificateRequest) (*cav1.CreateCertificateResponse, error) {
				chain, err := newAuthority(t).Sign([]byte(req.Csr), idA, time.Hour)
				return &cav1.CreateCertificateResponse{CertChain: ca.EncodePEM(chain), TrustBundle: []string{string(f.authority.BundlePEM())}}, err
			},
			wantErr: "could not verify leaf certificate",
		},
		{
			name: "someone else's key",
			tamper: func(f *fixture, req *cav1.CreateCertificateRequest) (*cav1.CreateCertificateResponse, error) {
				key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{idA.URL()}}, key)
				csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
				chain, err := f.authority.Sign(csr, idA, time.Hour)
				return &cav1.CreateCertificateResponse{CertChain: ca.EncodePEM(chain), TrustBundle: []string{string(f.authority.BundlePEM())}}, err
			},
			wantErr: "not for the key of the CSR",
		},
		{
			name: "garbage",
			tamper: func(f *fixture, req *cav1.CreateCertificateRequest) (*cav1.CreateCertificateResponse, error) {
				return &cav1.CreateCertificateResponse{CertChain: []string{"not pem"}, TrustBundle: []string{string(f.authority.BundlePEM())}}, nil
			},
			wantErr: "certificate chain: no certificates",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tampering := &tamperingCA{}
				f := newFixture(t, tampering)
				tampering.mu.Lock()
				tampering.tamper = func(req *cav1.CreateCertificateRequest) (*cav1.CreateCertificateResponse, error) {
					return tc.tamper(f, req)
				}
				tampering.mu.Unlock()
				f.mgr.Want([]spiffeid.ID{idA})
				var st CertStatus
				settled(t, "rejection", func() bool { st, _ = f.status(idA); return st.ConsecutiveFailures > 0 })
				if !strings.Contains(st.LastError, tc.wantErr) || st.Serial != "" {
					t.Fatalf("status = %+v, want error containing %q", st, tc.wantErr)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
				defer cancel()
				if _, err := f.mgr.Get(ctx, idA); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Get = %v", err)
				}
				if _, err := f.mgr.Bundles().GetX509BundleForTrustDomain(td); err == nil {
					t.Fatal("a rejected response set the trust bundle")
				}
			})
		})
	}
}

func TestPermissionDeniedIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, nil)
		f.mgr.Want([]spiffeid.ID{idOff})
		var st CertStatus
		settled(t, "denial", func() bool { st, _ = f.status(idOff); return st.ConsecutiveFailures == 1 })
		if !strings.Contains(st.LastError, "PermissionDenied") {
			t.Fatalf("LastError = %q", st.LastError)
		}
		advance(time.Second)
		settled(t, "retry", func() bool { st, _ = f.status(idOff); return st.ConsecutiveFailures == 2 })
	})
}

func TestWantDropsAfterGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, nil)
		f.mgr.Want([]spiffeid.ID{idA, idB})
		get(t, f.mgr, idA)
		b := get(t, f.mgr, idB)

		// Leaving and coming back within the grace period keeps the certificate.
		f.mgr.Want([]spiffeid.ID{idA})
		st, _ := f.status(idB)
		if want := time.Now().Add(time.Minute); !st.DropAt.Equal(want) {
			t.Fatalf("DropAt = %s, want %s", st.DropAt, want)
		}
		advance(30 * time.Second)
		f.mgr.Want([]spiffeid.ID{idA, idB})
		advance(time.Minute)
		if s, err := f.mgr.Source(idB).GetX509SVID(); err != nil || s != b {
			t.Fatalf("re-wanted identity lost its certificate: %v", err)
		}
		if n := f.authn.count(); n != 2 {
			t.Fatalf("%d requests, want 2", n)
		}

		f.mgr.Want([]spiffeid.ID{idA})
		advance(time.Minute - time.Second)
		if _, ok := f.status(idB); !ok {
			t.Fatal("dropped before the grace period ended")
		}
		advance(time.Second)
		settled(t, "drop", func() bool { _, ok := f.status(idB); return !ok })
		if _, err := f.mgr.Source(idB).GetX509SVID(); !errors.Is(err, ErrNotWanted) {
			t.Fatalf("dropped identity still served: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if _, err := f.mgr.Get(ctx, idB); !errors.Is(err, ErrNotWanted) {
			t.Fatalf("Get of dropped identity = %v", err)
		}
		if _, err := f.mgr.Source(idA).GetX509SVID(); err != nil {
			t.Fatalf("the wanted identity was affected: %v", err)
		}
	})
}

func TestGetWaitsForWant(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, nil)
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := f.mgr.Get(ctx, idA)
			done <- err
		}()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("Get returned before the identity was wanted: %v", err)
		default:
		}
		f.mgr.Want([]spiffeid.ID{idA})
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func TestFileTokenSource(t *testing.T) {
	p := filepath.Join(t.TempDir(), "token")
	ts := FileTokenSource(p)
	if _, err := ts.Token(context.Background()); err == nil {
		t.Fatal("missing file accepted")
	}
	os.WriteFile(p, []byte("  \n"), 0o600)
	if _, err := ts.Token(context.Background()); err == nil {
		t.Fatal("empty token accepted")
	}
	os.WriteFile(p, []byte("abc\n"), 0o600)
	if tok, err := ts.Token(context.Background()); err != nil || tok != "abc" {
		t.Fatalf("Token = %q, %v", tok, err)
	}
	os.WriteFile(p, []byte("def"), 0o600)
	if tok, _ := ts.Token(context.Background()); tok != "def" {
		t.Fatalf("token not re-read: %q", tok)
	}
}

// TestHoldsAndChanged: Holds is true for no identity, false for a wanted
// one until its first certificate arrives, which closes Changed; an
// identity never wanted is not held.
func TestHoldsAndChanged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, nil)
		if !f.mgr.Holds(nil) {
			t.Error("Holds(nil) = false, want true")
		}
		changed := f.mgr.Changed()
		f.mgr.Want([]spiffeid.ID{idA})
		<-changed
		get(t, f.mgr, idA)
		if !f.mgr.Holds([]spiffeid.ID{idA}) {
			t.Error("Holds(idA) = false after its certificate arrived")
		}
		if f.mgr.Holds([]spiffeid.ID{idA, idB}) {
			t.Error("Holds(idA, idB) = true, but idB is not wanted")
		}
	})
}
