package agent

import (
	"log/slog"
	"os"
	"runtime/debug"
	"testing"
)

// gcPercent reads the collector's target without changing it.
func gcPercent() int {
	p := debug.SetGCPercent(-1)
	debug.SetGCPercent(p)
	return p
}

// TestGCPercentIsTheAgentsUnlessGOGCIsSet: without GOGC the agent runs at
// GCPercent; with GOGC set, the runtime's reading of it stays.
func TestGCPercentIsTheAgentsUnlessGOGCIsSet(t *testing.T) {
	defer debug.SetGCPercent(gcPercent())
	t.Setenv("GOGC", "") // restored after the test
	os.Unsetenv("GOGC")
	debug.SetGCPercent(100)
	SetGCPercent(slog.New(slog.DiscardHandler))
	if got := gcPercent(); got != GCPercent {
		t.Errorf("GOGC unset: GC percent %d, want %d", got, GCPercent)
	}

	t.Setenv("GOGC", "80")
	debug.SetGCPercent(80) // as the runtime read it at start
	SetGCPercent(slog.New(slog.DiscardHandler))
	if got := gcPercent(); got != 80 {
		t.Errorf("GOGC=80: GC percent %d, want 80", got)
	}
}
