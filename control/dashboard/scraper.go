package dashboard

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// Scraper scrapes the targets only while someone looks: the first request
// wakes it, and it stops after Idle without requests, so an unwatched
// dashboard costs nothing (each replica would otherwise scrape every node
// forever).
type Scraper struct {
	Targets     func() []Target
	Interval    time.Duration // default 5s
	Timeout     time.Duration // per target; default 2s
	Idle        time.Duration // default 10m
	Concurrency int           // default 16
	Client      *http.Client  // default: no keep-alives, no redirects
	Log         *slog.Logger
	Now         func() time.Time

	once sync.Once
	wake chan struct{}

	mu      sync.Mutex
	lastUse time.Time
	rounds  []round       // oldest first, thinned by prune
	scraped chan struct{} // closed and replaced after each round
}

// round is one scrape of every target, reduced to what the graph needs.
type round struct {
	at       time.Time
	readings []reading
}

// Windows the graph's rates may be taken over: the last interval, or up to
// MaxWindow back. Rounds older than RecentWindow are thinned to one per
// minute, so a longer window may reach up to a minute further back (the
// graph says how long it is).
const (
	MaxWindow    = 15 * time.Minute
	RecentWindow = 2 * time.Minute
)

func (s *Scraper) init() {
	s.once.Do(func() {
		s.wake = make(chan struct{}, 1)
		s.scraped = make(chan struct{})
		if s.Interval <= 0 {
			s.Interval = 5 * time.Second
		}
		if s.Timeout <= 0 {
			s.Timeout = 2 * time.Second
		}
		if s.Idle <= 0 {
			s.Idle = 10 * time.Minute
		}
		if s.Concurrency <= 0 {
			s.Concurrency = 16
		}
		if s.Client == nil {
			s.Client = &http.Client{
				Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			}
		}
		if s.Log == nil {
			s.Log = slog.New(slog.DiscardHandler)
		}
		if s.Now == nil {
			s.Now = time.Now
		}
	})
}

// Run scrapes while the dashboard is in use, until ctx ends.
func (s *Scraper) Run(ctx context.Context) {
	s.init()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.mu.Lock()
		stale := s.Now().Sub(s.lastUse) > s.Idle // a wake-up left over from the last session
		s.mu.Unlock()
		if stale {
			continue
		}
		s.Log.Info("dashboard in use: scraping the mesh's proxies", "interval", s.Interval)
		s.scrapeWhileUsed(ctx)
		s.Log.Info("dashboard idle: stopped scraping", "idle", s.Idle)
	}
}

func (s *Scraper) scrapeWhileUsed(ctx context.Context) {
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		s.round(ctx)
		s.mu.Lock()
		idle := s.Now().Sub(s.lastUse) > s.Idle
		if idle { // rates from stale rounds would be wrong later
			s.rounds = nil
		}
		s.mu.Unlock()
		if idle {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Graph marks the dashboard as in use and returns the latest graph with
// rates over window (0: since the round before), waiting up to wait for
// the first round after a wake-up.
func (s *Scraper) Graph(ctx context.Context, wait, window time.Duration) Graph {
	s.init()
	s.mu.Lock()
	s.lastUse = s.Now()
	first, scraped := len(s.rounds) == 0, s.scraped
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	if first {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-scraped:
		case <-t.C:
		case <-ctx.Done():
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	base, cur := baseFor(s.rounds, window)
	return build(base.readings, cur.readings, s.Now())
}

// baseFor is the latest round and the newest round at least window older
// (the oldest there is when none is old enough); with window 0 the round
// before the latest.
func baseFor(rounds []round, window time.Duration) (base, cur round) {
	if len(rounds) == 0 {
		return round{}, round{}
	}
	cur = rounds[len(rounds)-1]
	if len(rounds) == 1 {
		return round{}, cur
	}
	for i := len(rounds) - 2; i > 0; i-- {
		if cur.at.Sub(rounds[i].at) >= window {
			return rounds[i], cur
		}
	}
	return rounds[0], cur
}

// prune drops the rounds no window needs: those older than the newest
// round that is MaxWindow old (the longest window's base), and, among the
// rounds older than RecentWindow, those less than a minute after the
// round kept before them.
func prune(rounds []round, now time.Time) []round {
	out := rounds[:0]
	for i, r := range rounds {
		if i+1 < len(rounds) && now.Sub(rounds[i+1].at) >= MaxWindow {
			continue
		}
		if n := len(out); n > 0 && now.Sub(r.at) > RecentWindow && r.at.Sub(out[n-1].at) < time.Minute {
			continue
		}
		out = append(out, r)
	}
	clear(rounds[len(out):])
	return out
}

// round scrapes every target concurrently (at most Concurrency at a time).
func (s *Scraper) round(ctx context.Context) {
	targets := s.Targets()
	out := make([]Scrape, len(targets))
	sem := make(chan struct{}, s.Concurrency)
	var wg sync.WaitGroup
	for i, t := range targets {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			out[i] = s.scrape(ctx, t)
		})
	}
	wg.Wait()
	s.mu.Lock()
	s.rounds = prune(append(s.rounds, round{at: s.Now(), readings: reduceAll(out)}), s.Now())
	close(s.scraped)
	s.scraped = make(chan struct{})
	s.mu.Unlock()
}

func (s *Scraper) scrape(ctx context.Context, t Target) Scrape {
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	sc := Scrape{Target: t, Time: s.Now()}
	sc.Samples, sc.Err = s.get(ctx, t.URL)
	if sc.Err != nil {
		sc.Err = fmt.Errorf("scrape %s %s/%s: %w", t.Kind, t.Namespace, t.Pod, sc.Err)
	}
	return sc
}

func (s *Scraper) get(ctx context.Context, url string) ([]Sample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := s.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %s", resp.Status)
	}
	return ParseMetrics(io.LimitReader(resp.Body, 32<<20))
}
