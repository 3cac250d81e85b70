package spiffetest

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestIssuedSVIDVerifiesOnlyAgainstItsCA(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	ca, other := NewCA(t, td), NewCA(t, td)
	id := spiffeid.RequireFromPath(td, "/ns/a/sa/x")
	svid := ca.Issue(t, id)
	got, _, err := x509svid.Verify(svid.Certificates, ca.Bundle())
	if err != nil || got != id {
		t.Fatalf("Verify = %v, %v", got, err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, other.Bundle()); err == nil {
		t.Fatal("verified against a foreign CA")
	}
}
