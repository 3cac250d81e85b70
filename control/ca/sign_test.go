package ca

import (
	"crypto/x509"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func parseChain(t *testing.T, ders [][]byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func TestSignIssuesVerifiableSVID(t *testing.T) {
	testKeys(t)
	clock := newFakeClock()
	a := newTestAuthority(t, Options{Now: clock.Now})
	id := workloadID(t, testTD, "default", "reviews")

	for _, tc := range []struct {
		name string
		csr  []byte
		ku   x509.KeyUsage
	}{
		{"ECDSA", makeCSR(t, csrSpec{key: keyP256, uris: []string{id.String()}}), x509.KeyUsageDigitalSignature},
		{"RSA", makeCSR(t, csrSpec{key: keyRSA2k, uris: []string{id.String()}}), x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
		{"Ed25519", makeCSR(t, csrSpec{key: keyEd, uris: []string{id.String()}}), x509.KeyUsageDigitalSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ders, err := a.Sign(tc.csr, id, 0)
			if err != nil {
				t.Fatal(err)
			}
			chain := parseChain(t, ders)
			got, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(testTD, a.Bundle()), x509svid.WithTime(clock.Now()))
			if err != nil {
				t.Fatalf("x509svid.Verify: %v", err)
			}
			if got != id {
				t.Errorf("SPIFFE ID %s, want %s", got, id)
			}
			leaf := chain[0]
			if leaf.KeyUsage != tc.ku {
				t.Errorf("KeyUsage %v, want %v", leaf.KeyUsage, tc.ku)
			}
			if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
				t.Errorf("ExtKeyUsage %v", leaf.ExtKeyUsage)
			}
			if !leaf.NotBefore.Equal(clock.Now().Add(-time.Minute).Truncate(time.Second)) {
				t.Errorf("NotBefore %v, want now-1m", leaf.NotBefore)
			}
			if want := clock.Now().Add(DefaultTTL).Truncate(time.Second); !leaf.NotAfter.Equal(want) {
				t.Errorf("NotAfter %v, want %v (default 24h)", leaf.NotAfter, want)
			}
		})
	}
}

func TestSignTTL(t *testing.T) {
	testKeys(t)
	clock := newFakeClock()
	id := workloadID(t, testTD, "default", "ratings")
	csr := makeCSR(t, csrSpec{key: keyP256, uris: []string{id.String()}})

	// A CA that expires in 3 days caps everything at that.
	root := newSelfSigned(t, "short root", clock.Now().Add(72*time.Hour))
	short, err := NewAuthority(root.key, root.cert, nil, []*x509.Certificate{root.cert}, Options{Now: clock.Now, MaxTTL: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		a       *Authority
		ttl     time.Duration
		want    time.Duration
		wantErr error
	}{
		{"default", newTestAuthority(t, Options{Now: clock.Now}), 0, 24 * time.Hour, nil},
		{"configured default", newTestAuthority(t, Options{Now: clock.Now, DefaultTTL: time.Hour}), 0, time.Hour, nil},
		{"requested", newTestAuthority(t, Options{Now: clock.Now}), 2 * time.Hour, 2 * time.Hour, nil},
		{"capped at default max 7d", newTestAuthority(t, Options{Now: clock.Now}), 30 * 24 * time.Hour, 7 * 24 * time.Hour, nil},
		{"capped at configured max", newTestAuthority(t, Options{Now: clock.Now, MaxTTL: 48 * time.Hour}), 96 * time.Hour, 48 * time.Hour, nil},
		{"capped at CA expiry", short, 10 * 24 * time.Hour, 72 * time.Hour, nil},
		{"negative", newTestAuthority(t, Options{Now: clock.Now}), -time.Second, 0, ErrInvalidTTL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ders, err := tc.a.Sign(csr, id, tc.ttl)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			leaf := parseChain(t, ders)[0]
			want := clock.Now().Add(tc.want)
			if d := leaf.NotAfter.Sub(want); d > time.Second || d < -time.Second {
				t.Errorf("NotAfter %v, want %v", leaf.NotAfter, want)
			}
		})
	}

	t.Run("expired CA", func(t *testing.T) {
		later := &fakeClock{now: clock.Now().Add(73 * time.Hour)}
		short.now = later.Now
		defer func() { short.now = clock.Now }()
		if _, err := short.Sign(csr, id, 0); !errors.Is(err, ErrCAExpired) {
			t.Fatalf("err %v, want ErrCAExpired", err)
		}
	})
}

func TestSignForeignTrustDomain(t *testing.T) {
	testKeys(t)
	a := newTestAuthority(t, Options{})
	id := workloadID(t, otherTD, "default", "reviews")
	_, err := a.Sign(makeCSR(t, csrSpec{key: keyP256, uris: []string{id.String()}}), id, 0)
	if !errors.Is(err, ErrCSRForeignDomain) {
		t.Fatalf("err %v, want ErrCSRForeignDomain", err)
	}
}

func TestSignWithIntermediate(t *testing.T) {
	testKeys(t)
	root := newSelfSigned(t, "root", time.Now().Add(365*24*time.Hour))
	inter := root.child(t, "intermediate", true, time.Now().Add(100*24*time.Hour))
	a, err := NewAuthority(inter.key, inter.cert, []*x509.Certificate{root.cert}, []*x509.Certificate{root.cert}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	id := workloadID(t, testTD, "default", "details")
	ders, err := a.Sign(makeCSR(t, csrSpec{key: keyP256, uris: []string{id.String()}}), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	chain := parseChain(t, ders)
	if len(chain) != 2 || !chain[1].Equal(inter.cert) {
		t.Fatalf("chain has %d certificates, want leaf + intermediate (no root)", len(chain))
	}
	if _, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(testTD, a.Bundle())); err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	if !a.NotAfter().Equal(inter.cert.NotAfter) {
		t.Errorf("NotAfter %v, want the intermediate's %v", a.NotAfter(), inter.cert.NotAfter)
	}
}
