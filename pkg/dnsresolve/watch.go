package dnsresolve

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// LookupFunc resolves one name; Client.Lookup is one.
type LookupFunc func(ctx context.Context, name string, f Family) (Answer, error)

// Options tune a Watcher; zero fields take the defaults below.
type Options struct {
	// RespectTTL re-resolves when the answer's TTL runs out (Envoy's
	// respect_dns_ttl), bounded by MinRefresh and MaxRefresh; otherwise
	// every Refresh.
	RespectTTL bool
	// Refresh is the period without RespectTTL (Envoy's dns_refresh_rate,
	// default 5 s) and the longest wait between retries after failures.
	Refresh time.Duration
	// MinRefresh is the floor of a TTL (a TTL of 0 would ask the server
	// for every connection) and the first retry after a failure; default
	// 1 s.
	MinRefresh time.Duration
	// MaxRefresh is the cap of a TTL, so a name that moves is followed
	// within it even when its TTL claims a day; default 5 min.
	MaxRefresh time.Duration
	// KeepStale is how long the last good answer stays in use while
	// lookups fail (a resolver restarting must not take the destination
	// away); after it the name has no address and connections fail.
	// Default 5 min.
	KeepStale time.Duration
}

// Defaults of Options.
const (
	DefaultRefresh    = 5 * time.Second
	DefaultMinRefresh = time.Second
	DefaultMaxRefresh = 5 * time.Minute
	DefaultKeepStale  = 5 * time.Minute
)

func (o Options) withDefaults() Options {
	if o.Refresh <= 0 {
		o.Refresh = DefaultRefresh
	}
	if o.MinRefresh <= 0 {
		o.MinRefresh = DefaultMinRefresh
	}
	if o.MaxRefresh <= 0 {
		o.MaxRefresh = DefaultMaxRefresh
	}
	o.MaxRefresh = max(o.MaxRefresh, o.MinRefresh)
	o.Refresh = min(max(o.Refresh, o.MinRefresh), o.MaxRefresh)
	if o.KeepStale <= 0 {
		o.KeepStale = DefaultKeepStale
	}
	return o
}

// State is what a Watcher knows about its name.
type State struct {
	// Addrs are the addresses to use, in the order of the answer; none
	// until the name first resolves and after the last good answer
	// expired (KeepStale) while lookups failed.
	Addrs []netip.Addr
	// Err is the error of the latest lookup; nil after a success.
	Err error
	// Stale: the latest lookup failed and Addrs are the last good answer.
	Stale bool
	// Resolved is when Addrs were answered.
	Resolved time.Time
}

// Watcher keeps one name resolved in the background: it looks the name up
// at once, then again when the answer's TTL (or the refresh period) runs
// out, so readers never wait for DNS.
type Watcher struct {
	name     string
	family   Family
	lookup   LookupFunc
	o        Options
	onChange func(State)

	mu    sync.Mutex
	state State

	cancel context.CancelFunc
	done   chan struct{}
}

// Watch starts resolving name. onChange (may be nil) is called from the
// watcher's goroutine whenever the addresses, the error or staleness
// change.
func Watch(name string, f Family, lookup LookupFunc, o Options, onChange func(State)) *Watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{name: name, family: f, lookup: lookup, o: o.withDefaults(), onChange: onChange, cancel: cancel, done: make(chan struct{})}
	go w.run(ctx)
	return w
}

// Name is the name watched.
func (w *Watcher) Name() string { return w.name }

// State returns the current state.
func (w *Watcher) State() State {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state
}

// Stop ends the background lookups and waits for the goroutine to exit.
func (w *Watcher) Stop() {
	w.cancel()
	<-w.done
}

func (w *Watcher) run(ctx context.Context) {
	defer close(w.done)
	failures := 0
	for {
		a, err := w.lookup(ctx, w.name, w.family)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
		} else {
			failures = 0
		}
		wait := w.update(a, err, failures)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// update applies one lookup result and returns how long to wait for the
// next lookup.
func (w *Watcher) update(a Answer, err error, failures int) time.Duration {
	now := time.Now()
	w.mu.Lock()
	prev := w.state
	next, wait := w.o.next(prev, a, err, failures, now)
	w.state = next
	w.mu.Unlock()
	if w.onChange != nil && changed(prev, next) {
		w.onChange(next)
	}
	return wait
}

// next is the state after a lookup and the wait before the next one.
func (o Options) next(prev State, a Answer, err error, failures int, now time.Time) (State, time.Duration) {
	if err == nil {
		wait := o.Refresh
		if o.RespectTTL {
			wait = min(max(a.TTL, o.MinRefresh), o.MaxRefresh)
		}
		return State{Addrs: a.Addrs, Resolved: now}, wait
	}
	// Retries back off from MinRefresh, doubling, up to Refresh.
	wait := o.MinRefresh
	for i := 1; i < failures && wait < o.Refresh; i++ {
		wait *= 2
	}
	wait = min(wait, o.Refresh)
	if expires := prev.Resolved.Add(o.KeepStale); len(prev.Addrs) > 0 && now.Before(expires) {
		// Retry no later than the expiry, so the name stops resolving
		// then rather than a retry period later.
		return State{Addrs: prev.Addrs, Err: err, Stale: true, Resolved: prev.Resolved}, min(wait, expires.Sub(now))
	}
	return State{Err: err, Resolved: prev.Resolved}, wait
}

func changed(a, b State) bool {
	return !slices.Equal(a.Addrs, b.Addrs) || a.Stale != b.Stale || (a.Err == nil) != (b.Err == nil) ||
		(a.Err != nil && b.Err != nil && a.Err.Error() != b.Err.Error())
}
