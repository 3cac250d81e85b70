// Package gomaxprocs runs a proxy on as many Go Ps as its load needs, up to
// Go's default (the container's CPU limit, or the node's CPUs).
//
// Why: below full load a proxy is idle between requests. When the network
// readies a goroutine while a P is idle, Go's scheduler wakes a second
// thread to look for work (a futex wake, a spin in findRunnable, a futex
// sleep) that the first thread then does itself. With two Ps that was
// over a third of the waypoint's CPU at 1000 req/s on the 2-core
// development machine (docs/operations.md#gomaxprocs-follows-the-load has
// the measurements). One P
// removes it, but caps the proxy at one core. So Adapt keeps Go's default
// while the process is busy (starting up, for one), gives Ps back once its
// CPU use has been low for a second, and adds them again as soon as it
// says one is not enough.
//
// Setting GOMAXPROCS in the environment pins it: Adapt then does nothing.
package gomaxprocs

import (
	"context"
	"log/slog"
	"math"
	"os"
	"runtime"
	"syscall"
	"time"
)

// The controller's parameters. busy is the process's CPU time (user and
// system, every thread) per second of wall time over the last interval.
const (
	// interval is how often busy is sampled: the longest a proxy runs
	// short of Ps when load jumps.
	interval = 100 * time.Millisecond
	// upAt is the busy per P above which Ps are added: the count becomes
	// enough Ps for each to be at most upAt busy.
	upAt = 0.5
	// saturatedAt is the busy per P from which the demand is unknown (the
	// Ps are full): the count goes straight to the maximum.
	saturatedAt = 0.85
	// downAt is the busy per P below which fewer Ps would do; lower than
	// upAt, so a steady load does not flap between two counts (with more
	// Ps the same load also costs more, the wake-ups above).
	downAt = 0.3
	// quietTicks is how many intervals in a row must want fewer Ps before
	// Ps are removed: load drops are not trusted at once.
	quietTicks = 10
	// refreshEvery is how many intervals pass between re-reads of Go's
	// default (the container's CPU limit may change in place).
	refreshEvery = 300
)

// Adapt runs the controller until ctx ends, unless GOMAXPROCS is set in
// the environment or Go's default is one P, and reports whether it does.
// It returns at once; the controller runs in its own goroutine and, when
// ctx ends, leaves the count at the default.
func Adapt(ctx context.Context, log *slog.Logger) bool {
	if v := os.Getenv("GOMAXPROCS"); v != "" {
		log.Info("GOMAXPROCS set in the environment: not adapting it to load", "gomaxprocs", runtime.GOMAXPROCS(0))
		return false
	}
	c := &controller{max: runtime.GOMAXPROCS(0), cpu: processCPU, set: setProcs, refresh: defaultProcs, log: log}
	if c.max <= 1 {
		return false
	}
	log.Info("GOMAXPROCS follows the load", "max", c.max)
	go c.run(ctx)
	return true
}

// controller is Adapt's state; cpu, set and refresh are the runtime's,
// replaced in tests.
type controller struct {
	max     int
	cur     int
	cpu     func() time.Duration // process CPU time so far
	set     func(n int)
	refresh func() int // Go's current default
	log     *slog.Logger
}

func (c *controller) run(ctx context.Context) {
	c.cur = c.max // start-up is busy: Ps go once it is quiet
	defer func() { c.set(c.max) }()
	t := time.NewTicker(interval)
	defer t.Stop()
	lastCPU, lastWall := c.cpu(), time.Now()
	quiet, ticks := 0, 0
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cpu := c.cpu()
			busy := float64(cpu-lastCPU) / float64(now.Sub(lastWall))
			lastCPU, lastWall = cpu, now
			refreshed := false
			if ticks++; ticks%refreshEvery == 0 {
				c.max, refreshed = max(c.refresh(), 1), true
			}
			var n int
			n, quiet = next(c.cur, c.max, busy, quiet)
			if n != c.cur {
				c.log.Debug("GOMAXPROCS adapted to load", "from", c.cur, "to", n, "busy", busy)
			}
			if n != c.cur || refreshed { // refresh set the default
				c.cur = n
				c.set(n)
			}
		}
	}
}

// next is the P count for cur Ps of at most max after an interval at
// busy, given quiet intervals in a row that wanted fewer; it returns the
// new quiet count too.
func next(cur, max int, busy float64, quiet int) (int, int) {
	if cur > max { // the default shrank
		return max, 0
	}
	if busy >= saturatedAt*float64(cur) {
		return max, 0
	}
	if up := procsFor(busy, upAt, max); up > cur {
		return up, 0
	}
	down := procsFor(busy, downAt, max)
	if down >= cur {
		return cur, 0
	}
	if quiet++; quiet < quietTicks {
		return cur, quiet
	}
	return down, 0
}

// procsFor is the fewest Ps, between 1 and max, that keep each at most
// perP busy.
func procsFor(busy, perP float64, max int) int {
	return min(max, int(math.Max(1, math.Ceil(busy/perP))))
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func setProcs(n int) { runtime.GOMAXPROCS(n) }

// defaultProcs is Go's default now: SetDefaultGOMAXPROCS recomputes it
// (and would keep it up to date itself, which the next set stops).
func defaultProcs() int {
	runtime.SetDefaultGOMAXPROCS()
	return runtime.GOMAXPROCS(0)
}
