package dnsresolve

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeDNS answers lookups from a script the test changes, counting them.
type fakeDNS struct {
	mu      sync.Mutex
	answer  Answer
	err     error
	lookups []time.Time
}

func (f *fakeDNS) set(a Answer, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answer, f.err = a, err
}

func (f *fakeDNS) lookup(_ context.Context, _ string, _ Family) (Answer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups = append(f.lookups, time.Now())
	return Answer{Addrs: slices.Clone(f.answer.Addrs), TTL: f.answer.TTL}, f.err
}

func (f *fakeDNS) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.lookups)
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func TestWatchReresolvesOnTTLWithinFloorAndCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeDNS{answer: Answer{Addrs: addrs("10.0.0.1", "10.0.0.2"), TTL: 30 * time.Second}}
		var changes []State
		var mu sync.Mutex
		w := Watch("api.example.com", V4Only, f.lookup, Options{RespectTTL: true, MinRefresh: 2 * time.Second, MaxRefresh: time.Minute},
			func(s State) { mu.Lock(); changes = append(changes, s); mu.Unlock() })
		defer w.Stop()
		synctest.Wait()
		if got := w.State(); !slices.Equal(got.Addrs, addrs("10.0.0.1", "10.0.0.2")) || got.Err != nil {
			t.Fatalf("state %+v, want both A records", got)
		}
		// The TTL (30 s) decides the next lookup, not earlier.
		time.Sleep(29 * time.Second)
		synctest.Wait()
		if n := f.count(); n != 1 {
			t.Fatalf("%d lookups before the TTL ran out, want 1", n)
		}
		f.set(Answer{Addrs: addrs("10.0.0.3"), TTL: 0}, nil)
		time.Sleep(time.Second)
		synctest.Wait()
		if got := w.State(); f.count() != 2 || !slices.Equal(got.Addrs, addrs("10.0.0.3")) {
			t.Fatalf("after the TTL: %d lookups, state %+v; want 2 and the new address", f.count(), got)
		}
		// TTL 0 is floored at MinRefresh (2 s): not a lookup per read.
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n := f.count(); n != 3 {
			t.Fatalf("%d lookups 2 s after a TTL of 0, want 3 (floor 2 s)", n)
		}
		// A day-long TTL is capped at MaxRefresh (1 min).
		f.set(Answer{Addrs: addrs("10.0.0.3"), TTL: 24 * time.Hour}, nil)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := f.count(); n != 5 {
			t.Fatalf("%d lookups a minute after a day-long TTL, want 5 (cap 1 min)", n)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(changes) != 2 {
			t.Errorf("%d change notifications (%+v), want 2: first answer, new address", len(changes), changes)
		}
	})
}

func TestWatchWithoutRespectTTLUsesRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeDNS{answer: Answer{Addrs: addrs("10.0.0.1"), TTL: time.Hour}}
		w := Watch("api.example.com", V4Only, f.lookup, Options{Refresh: 10 * time.Second}, nil)
		defer w.Stop()
		time.Sleep(25 * time.Second)
		synctest.Wait()
		if n := f.count(); n != 3 {
			t.Fatalf("%d lookups in 25 s with refresh 10 s, want 3", n)
		}
	})
}

func TestWatchKeepsLastAnswerOnFailureForKeepStale(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeDNS{answer: Answer{Addrs: addrs("10.0.0.1"), TTL: 5 * time.Second}}
		w := Watch("api.example.com", V4Only, f.lookup, Options{RespectTTL: true, Refresh: 8 * time.Second, KeepStale: time.Minute}, nil)
		defer w.Stop()
		synctest.Wait()
		start := time.Now()
		servfail := errors.New("SERVFAIL")
		f.set(Answer{}, servfail)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		got := w.State()
		if !slices.Equal(got.Addrs, addrs("10.0.0.1")) || !got.Stale || !errors.Is(got.Err, servfail) {
			t.Fatalf("after a failed lookup: %+v, want the last answer, stale, with the error", got)
		}
		// Retries back off 1, 2, 4, 8, 8, ... s while the answer is kept.
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if n := f.count(); n != 7 {
			t.Errorf("%d lookups 35 s after the answer, want 7 (at 0, then retries at 5, 6, 8, 12, 20, 28)", n)
		}
		if got := w.State(); len(got.Addrs) != 1 {
			t.Fatalf("the last answer was dropped after %v, before KeepStale (1 min)", time.Since(start))
		}
		// KeepStale after the last good answer: no address any more.
		time.Sleep(time.Minute - time.Since(start))
		synctest.Wait()
		if got := w.State(); len(got.Addrs) != 0 || got.Stale || got.Err == nil {
			t.Fatalf("after KeepStale: %+v, want no address and the error", got)
		}
		// A later success restores it.
		f.set(Answer{Addrs: addrs("10.0.0.2"), TTL: 5 * time.Second}, nil)
		time.Sleep(8 * time.Second)
		synctest.Wait()
		if got := w.State(); !slices.Equal(got.Addrs, addrs("10.0.0.2")) || got.Err != nil {
			t.Fatalf("after recovery: %+v", got)
		}
	})
}

func TestWatchNameThatNeverResolvesHasNoAddress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeDNS{err: ErrNotFound}
		var changes []State
		w := Watch("nowhere.example.com", V4Only, f.lookup, Options{}, func(s State) { changes = append(changes, s) })
		defer w.Stop()
		synctest.Wait()
		got := w.State()
		if len(got.Addrs) != 0 || got.Stale || !errors.Is(got.Err, ErrNotFound) {
			t.Fatalf("state %+v, want no address and ErrNotFound", got)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if len(changes) != 1 {
			t.Errorf("%d notifications for a name that keeps failing the same way, want 1", len(changes))
		}
	})
}

func TestWatchStopEndsLookups(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeDNS{answer: Answer{Addrs: addrs("10.0.0.1"), TTL: time.Second}}
		w := Watch("api.example.com", V4Only, f.lookup, Options{RespectTTL: true}, nil)
		synctest.Wait()
		w.Stop()
		n := f.count()
		time.Sleep(time.Minute)
		if f.count() != n {
			t.Fatal("lookups after Stop")
		}
	})
}

func TestSetFollowsTheNamesItIsGiven(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeDNS{answer: Answer{Addrs: addrs("10.0.0.1"), TTL: time.Minute}}
		s := NewSet(f.lookup, V4Only, Options{RespectTTL: true}, nil)
		defer s.Close()
		s.Sync([]string{"a.example.com", "b.example.com"})
		synctest.Wait()
		for _, n := range []string{"a.example.com", "b.example.com"} {
			if st, ok := s.State(n); !ok || !slices.Equal(st.Addrs, addrs("10.0.0.1")) {
				t.Fatalf("%s: %+v %v, want resolved", n, st, ok)
			}
		}
		if f.count() != 2 {
			t.Fatalf("%d lookups, want one per name", f.count())
		}
		s.Sync([]string{"b.example.com"})
		if _, ok := s.State("a.example.com"); ok {
			t.Fatal("a name dropped from the set is still watched")
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if f.count() != 3 {
			t.Fatalf("%d lookups a TTL later, want 3 (b re-resolved, a stopped)", f.count())
		}
	})
}

func TestSetCountsByState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeDNS{answer: Answer{Addrs: addrs("10.0.0.1"), TTL: time.Second}}
		s := NewSet(f.lookup, V4Only, Options{RespectTTL: true}, nil)
		defer s.Close()
		s.Sync([]string{"a.example.com"})
		synctest.Wait()
		if c := s.Counts(); c != (Counts{Resolved: 1}) {
			t.Fatalf("counts %+v, want 1 resolved", c)
		}
		f.set(Answer{}, errors.New("SERVFAIL"))
		time.Sleep(time.Second)
		synctest.Wait()
		if c := s.Counts(); c != (Counts{Stale: 1}) {
			t.Fatalf("counts %+v after a failed lookup, want 1 stale", c)
		}
		time.Sleep(DefaultKeepStale)
		synctest.Wait()
		if c := s.Counts(); c != (Counts{Unresolved: 1}) {
			t.Fatalf("counts %+v after KeepStale, want 1 unresolved", c)
		}
	})
}
