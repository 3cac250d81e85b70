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

	mu        sync.Mutex
	lastUse   time.Time
	prev, cur []Scrape
	scraped   chan struct{} // closed and replaced after each round
}

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
		if idle { // rates from a stale previous round would be wrong later
			s.prev, s.cur = nil, nil
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

// Graph marks the dashboard as in use and returns the latest graph,
// waiting up to wait for the first round after a wake-up.
func (s *Scraper) Graph(ctx context.Context, wait time.Duration) Graph {
	s.init()
	s.mu.Lock()
	s.lastUse = s.Now()
	first, scraped := s.cur == nil, s.scraped
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
	return Build(s.prev, s.cur, s.Now())
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
	s.prev, s.cur = s.cur, out
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
