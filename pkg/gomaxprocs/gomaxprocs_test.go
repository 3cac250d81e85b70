package gomaxprocs

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestNext(t *testing.T) {
	for _, c := range []struct {
		name            string
		cur, max        int
		busy            float64
		quiet           int
		want, wantQuiet int
	}{
		{"idle stays at one", 1, 4, 0.05, 0, 1, 0},
		{"below upAt stays at one", 1, 4, 0.45, 0, 1, 0},
		{"above upAt adds a P", 1, 4, 0.6, 0, 2, 0},
		{"saturated goes to max", 1, 4, 0.9, 0, 4, 0},
		{"saturated at two goes to max", 2, 8, 1.8, 0, 8, 0},
		{"enough Ps for upAt each", 2, 8, 1.4, 0, 3, 0},
		{"between downAt and upAt holds", 2, 4, 0.4, 0, 2, 0},
		{"quiet counts before removing", 2, 4, 0.2, 3, 2, 4},
		{"quiet long enough removes", 2, 4, 0.2, quietTicks - 1, 1, 0},
		{"removes down to what downAt needs", 4, 4, 0.5, quietTicks - 1, 2, 0},
		{"a busier interval resets quiet", 2, 4, 0.4, 5, 2, 0},
		{"a shrunk default lowers at once", 4, 2, 0.1, 0, 2, 0},
		{"never above max", 1, 1, 5, 0, 1, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, q := next(c.cur, c.max, c.busy, c.quiet)
			if n != c.want || q != c.wantQuiet {
				t.Errorf("next(%d, %d, %.2f, %d) = %d, %d; want %d, %d", c.cur, c.max, c.busy, c.quiet, n, q, c.want, c.wantQuiet)
			}
		})
	}
}

// fakeRuntime is the controller's view of the process: CPU time that
// grows at load cores per second of (synctest's) time, and the counts set.
type fakeRuntime struct {
	mu    sync.Mutex
	load  float64
	cpu   time.Duration
	at    time.Time
	procs []int
	def   int
}

func (f *fakeRuntime) setLoad(l float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance()
	f.load = l
}

func (f *fakeRuntime) advance() {
	now := time.Now()
	f.cpu += time.Duration(f.load * float64(now.Sub(f.at)))
	f.at = now
}

func (f *fakeRuntime) readCPU() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance()
	return f.cpu
}

func (f *fakeRuntime) set(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.procs = append(f.procs, n)
}

// setDefault is runtime.SetDefaultGOMAXPROCS: the count becomes the default.
func (f *fakeRuntime) setDefault() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.procs = append(f.procs, f.def)
	return f.def
}

func (f *fakeRuntime) current() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.procs[len(f.procs)-1]
}

// TestControllerFollowsLoad drives the controller through a day in the
// life of a proxy on a 4-CPU default: start, idle, a burst that saturates
// its one P, a drop, and the container's limit shrinking in place.
func TestControllerFollowsLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeRuntime{at: time.Now(), def: 4, procs: []int{4}}
		c := &controller{max: 4, cpu: f.readCPU, set: f.set, log: slog.New(slog.DiscardHandler),
			refresh: f.setDefault}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); c.run(ctx) }()
		step := func(d time.Duration, load float64) {
			f.setLoad(load)
			time.Sleep(d)
			synctest.Wait()
		}
		expect := func(what string, want int) {
			t.Helper()
			if got := f.current(); got != want {
				t.Fatalf("%s: GOMAXPROCS %d, want %d (set so far %v)", what, got, want, f.procs)
			}
		}

		step(quietTicks*interval/2, 0.2)
		expect("half the quiet time after start", 4)
		step(quietTicks*interval/2, 0.2)
		expect("the quiet time after start", 1)
		step(interval+time.Millisecond, 0.95)
		expect("one interval into a burst that fills one P", 4)
		step(time.Second, 1.2) // 0.3 per P: holds
		expect("steady at 0.3 per P", 4)
		step(quietTicks*interval/2, 0.1)
		expect("half the quiet time after the drop", 4)
		step(quietTicks*interval, 0.1)
		expect("the quiet time after the drop", 1)

		// The default shrinks to 2 at the next refresh; a burst then stops at 2.
		f.mu.Lock()
		f.def = 2
		f.mu.Unlock()
		step(refreshEvery*interval, 0.1)
		expect("after the refresh, idle", 1)
		step(interval+time.Millisecond, 0.95)
		expect("a burst after the default shrank", 2)

		cancel()
		<-done
		expect("stopped", 2)
	})
}

// TestAdaptPinnedByEnvironment: GOMAXPROCS in the environment is the
// operator's choice; Adapt leaves it alone.
func TestAdaptPinnedByEnvironment(t *testing.T) {
	t.Setenv("GOMAXPROCS", "3")
	before := runtime.GOMAXPROCS(0)
	if Adapt(t.Context(), slog.New(slog.DiscardHandler)) {
		t.Fatal("Adapt runs with GOMAXPROCS set in the environment")
	}
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Fatalf("GOMAXPROCS changed from %d to %d", before, got)
	}
}

// TestAdaptRealRuntime runs Adapt on this process: one P once idle, more
// while goroutines keep every P busy, one again when they stop, Go's
// default once Adapt's context ends.
func TestAdaptRealRuntime(t *testing.T) {
	def := runtime.GOMAXPROCS(0)
	if def < 2 {
		t.Skipf("Go's default here is %d P: nothing to adapt", def)
	}
	defer runtime.GOMAXPROCS(def)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if !Adapt(ctx, slog.New(slog.DiscardHandler)) {
		t.Fatal("Adapt does not run")
	}
	await(t, "one P once idle", func() bool { return runtime.GOMAXPROCS(0) == 1 })

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var work atomic.Int64
	for range def {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					work.Add(1)
				}
			}
		})
	}
	await(t, "more Ps under load", func() bool { return runtime.GOMAXPROCS(0) > 1 })
	close(stop)
	wg.Wait()
	await(t, "one P once the load is gone", func() bool { return runtime.GOMAXPROCS(0) == 1 })
	cancel()
	await(t, "Go's default after the end", func() bool { return runtime.GOMAXPROCS(0) == def })
}

// await polls cond (every interval) until it holds, failing after 10 s.
func await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 10 s (GOMAXPROCS %d)", what, runtime.GOMAXPROCS(0))
		}
		time.Sleep(interval / 4)
	}
}
