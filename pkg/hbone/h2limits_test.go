package hbone

import (
	"testing"
	"time"
)

// A budget refills with time up to its burst, and keeps what is earned
// beyond it: a reading peer's WINDOW_UPDATEs are paid for by the data we
// sent it in large writes, spent one small update at a time.
func TestBudget(t *testing.T) {
	now := time.Unix(0, 0)
	b := newBudget(2, 1)
	for i := range 2 {
		if !b.spend(now) {
			t.Fatalf("spend %d of a burst of 2 refused", i+1)
		}
	}
	if b.spend(now) {
		t.Fatal("spend beyond the burst allowed")
	}
	if !b.spend(now.Add(time.Second)) || b.spend(now.Add(time.Second)) {
		t.Fatal("one second at rate 1 should refill exactly one token")
	}
	b.earn(100, 50)
	for i := range 50 {
		if !b.spend(now.Add(2 * time.Second)) {
			t.Fatalf("earned token %d of 50 lost", i+1)
		}
	}
	if b.spend(now.Add(2 * time.Second)) {
		t.Fatal("earned beyond the limit of 50")
	}
}
