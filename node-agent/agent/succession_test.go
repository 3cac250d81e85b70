package agent

import (
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"
)

// The lease's liveness runs on synctest's fake clock.
func TestSuccessionNewerLiveAgentSupersedes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "agent.lease")
		at := func(started time.Time, id string) *succession {
			return &succession{path: path, ttl: 6 * time.Second, self: lease{ID: id, Started: started}}
		}
		old := at(time.Now().Add(-time.Hour), "old")
		next := at(time.Now(), "new")

		if sup, err := old.beat(); sup || err != nil {
			t.Fatalf("alone: old.beat() = %v, %v; want it to hold the lease", sup, err)
		}
		if sup, err := next.beat(); sup || err != nil {
			t.Fatalf("newer agent: beat() = %v, %v; want it to take the lease", sup, err)
		}
		if sup, _ := old.beat(); !sup {
			t.Fatal("old agent not superseded by a newer live lease")
		}
		if sup, _ := next.beat(); sup {
			t.Fatal("the newer agent must never be superseded by the older one")
		}

		// The newer agent dies: its lease goes stale and the old one resumes.
		time.Sleep(7 * time.Second)
		if sup, err := old.beat(); sup || err != nil {
			t.Fatalf("after the newer lease went stale: old.beat() = %v, %v; want it to resume", sup, err)
		}
		if next.superseded() {
			t.Fatal("an older lease must not supersede the newer agent")
		}
	})
}

func TestSuccessionIgnoresUnreadableLease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.lease")
	if err := os.WriteFile(path, []byte("not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newSuccession(path, time.Second)
	if sup, err := s.beat(); sup || err != nil {
		t.Fatalf("beat over garbage = %v, %v; want the lease rewritten", sup, err)
	}
	if s.awaitSuccessor(0) {
		t.Fatal("own lease counted as a successor")
	}
}
