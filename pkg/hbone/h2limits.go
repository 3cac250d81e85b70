package hbone

import "time"

// Limits of the HTTP/2 server connection. The frame parser faces
// unauthorized peers (authorization is per stream, after the headers are
// parsed), so everything a peer can make us do or keep is bounded.
const (
	// prefaceTimeout bounds the client preface and its first SETTINGS.
	prefaceTimeout = 10 * time.Second
	// maxQueuedControl bounds control frames (SETTINGS/PING acks,
	// RST_STREAM, WINDOW_UPDATE) waiting for the writer: a peer that
	// provokes them without reading our answers is cut off.
	maxQueuedControl = 1000
	// cheapBurst/cheapRate budget frames that cost us work but carry
	// nothing (SETTINGS, PING, PRIORITY, empty DATA, unknown frame types,
	// streams refused or reset by us): a flood of them ends the connection.
	cheapBurst, cheapRate = 1000, 200
	// resetBurst/resetRate budget streams the client resets before we
	// answered them (CVE-2023-44487, "rapid reset"): each such stream cost
	// us a handler for nothing.
	resetBurst, resetRate = 200, 100
	// windowBurst/windowRate budget WINDOW_UPDATE frames; the budget also
	// grows by one per windowEarnBytes we send, up to windowEarnMax, since a
	// reading peer legitimately returns window as it consumes our data (x/net
	// as often as every 4 KiB it reads), and our large writes earn in bursts
	// what its updates spend bit by bit.
	windowBurst, windowRate = 1000, 100
	windowEarnBytes         = 1 << 10
	windowEarnMax           = 1 << 20
	// goAwayWriteTimeout bounds the flush of a final GOAWAY to a peer that
	// does not read.
	goAwayWriteTimeout = time.Second
	// DefaultMaxHeaderListSize is the default Options.MaxHeaderListSize.
	DefaultMaxHeaderListSize = 64 << 10
)

// budget is a token bucket: burst tokens, refilled at rate per second.
type budget struct {
	tokens, burst, rate float64
	last                time.Time
}

func newBudget(burst, rate float64) budget {
	return budget{tokens: burst, burst: burst, rate: rate}
}

// spend takes one token and reports whether there was one.
func (b *budget) spend(now time.Time) bool {
	if !b.last.IsZero() && b.tokens < b.burst {
		// Time refills up to burst; earned tokens beyond it are kept.
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// earn adds n tokens beyond the time-based refill, up to limit (which may
// exceed burst).
func (b *budget) earn(n, limit float64) { b.tokens = max(b.tokens, min(limit, b.tokens+n)) }
