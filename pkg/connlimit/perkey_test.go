package connlimit

import "testing"

// TestPerKeyHoldsEachKeyToItsLimit: a key at its limit is refused while
// others are not, and gets its share back as it releases; no limit counts
// nothing.
func TestPerKeyHoldsEachKeyToItsLimit(t *testing.T) {
	p := NewPerKey[string](2)
	for i := range 2 {
		if !p.Take("a") {
			t.Fatalf("take %d of a, within its limit, refused", i+1)
		}
	}
	if p.Take("a") {
		t.Fatal("a third take of a allowed")
	}
	if !p.Take("b") {
		t.Fatal("b refused while a is at its limit")
	}
	p.Release("a")
	if !p.Take("a") {
		t.Fatal("a refused after releasing one")
	}
	p.Release("a")
	p.Release("a")
	p.Release("b")
	if len(p.held) != 0 {
		t.Errorf("keys left after every release: %v", p.held)
	}
	for _, limit := range []int{0, -1} {
		u := NewPerKey[string](limit)
		for range 100 {
			if !u.Take("a") {
				t.Fatalf("limit %d refused a take", limit)
			}
		}
		if len(u.held) != 0 {
			t.Errorf("limit %d counted %v", limit, u.held)
		}
	}
}
