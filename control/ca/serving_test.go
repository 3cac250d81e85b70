package ca

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"testing"
	"time"
)

func TestServingCertificate(t *testing.T) {
	a := newTestAuthority(t, Options{})
	names := []string{"weft-control.weft-system.svc", "weft-control.weft-system.svc.cluster.local", "127.0.0.1"}
	cert, err := a.ServingCertificate(names, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	for _, r := range a.Bundle() {
		roots.AddCert(r)
	}
	for _, n := range names {
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: n, Roots: roots}); err != nil {
			t.Errorf("verify for %s: %v", n, err)
		}
	}
	if len(cert.Leaf.IPAddresses) != 1 || !cert.Leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Errorf("IP SANs %v", cert.Leaf.IPAddresses)
	}
	if _, err := a.ServingCertificate(nil, 0); err == nil {
		t.Error("no names: want error")
	}
}

func TestServingRotatorHalfLife(t *testing.T) {
	clock := newFakeClock()
	a := newTestAuthority(t, Options{Now: clock.Now})
	r, err := NewServingRotator(a, []string{"weft-control.weft-system.svc"}, ServingRotatorOptions{TTL: time.Hour, Now: clock.Now, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	cfg := r.TLSConfig()
	get := func() *tls.Certificate {
		t.Helper()
		c, err := cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: "weft-control.weft-system.svc"})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	first := get()

	steps := []struct {
		advance time.Duration
		rotated bool
	}{
		{10 * time.Minute, false},
		{19 * time.Minute, false}, // 29m: before half-life
		{2 * time.Minute, true},   // 31m: past half-life
		{20 * time.Minute, false}, // 51m: the new cert's half-life is at 61m
		{11 * time.Minute, true},  // 62m
	}
	prev := first
	for i, s := range steps {
		clock.Advance(s.advance)
		cur := get()
		if rotated := cur != prev; rotated != s.rotated {
			t.Fatalf("step %d (+%v): rotated=%v, want %v", i, s.advance, rotated, s.rotated)
		}
		if cur.Leaf.NotAfter.Before(clock.Now()) {
			t.Fatalf("step %d: serving an expired certificate", i)
		}
		prev = cur
	}
}

func TestServingRotatorKeepsCertOnFailure(t *testing.T) {
	clock := newFakeClock()
	a := newTestAuthority(t, Options{Now: clock.Now})
	r, err := NewServingRotator(a, []string{"weft-control"}, ServingRotatorOptions{TTL: time.Hour, Now: clock.Now, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	good, _ := r.Current()
	r.issue = func() (*tls.Certificate, error) { return nil, errors.New("CA unavailable") }

	clock.Advance(40 * time.Minute) // past half-life, still valid
	if c, err := r.Current(); err != nil || c != good {
		t.Fatalf("after failed rotation: %v, %v; want the old certificate", c, err)
	}
	clock.Advance(30 * time.Minute) // expired
	if _, err := r.Current(); err == nil {
		t.Fatal("expired and cannot rotate: want error")
	}
}
