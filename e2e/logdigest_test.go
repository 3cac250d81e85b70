package e2e

import "testing"

// The failure report picks warnings and errors from every log format the
// cluster writes, Weft's slog JSON inside CRI container logs included.
func TestIsProblemLine(t *testing.T) {
	for line, want := range map[string]bool{
		`2026-12-07T10:00:00Z stdout F {"time":"x","level":"WARN","msg":"xds stream ended"}`: true,
		`2026-12-07T10:00:00Z stderr F {"level":"ERROR","msg":"x"}`:                          true,
		`{"level":"warn","msg":"zap"}`:                                                       true,
		`time=x level=ERROR msg=y`:                                                           true,
		`E1207 10:00:00.000 klog error`:                                                      true,
		`2026-12-07T10:00:00Z stdout F {"level":"INFO","msg":"ready"}`:                       false,
		`W1207 requestheader-client-ca-file noise`:                                           false,
	} {
		if got := isProblemLine(line); got != want {
			t.Errorf("isProblemLine(%s) = %v, want %v", line, got, want)
		}
	}
}
