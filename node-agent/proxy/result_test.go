package proxy

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weft-mesh/weft/pkg/hbone"
)

// TestResultMapping: a handler's result decides the response flag, the
// access log's error and what the HBONE server answers; record writes the
// metrics and the log line once per connection.
func TestResultMapping(t *testing.T) {
	pipeErr := errors.New("connection reset by peer")
	for _, tt := range []struct {
		name      string
		err       error
		flag      string
		answer    func(error) bool
		logsError string
	}{
		{"ran to its end", nil, FlagNone, func(err error) bool { return err == nil }, ""},
		{"pipe error", pipeErr, FlagNone, func(err error) bool { return err == nil }, pipeErr.Error()},
		{"policy refusal", &refusal{Flag: FlagDenied, Status: http.StatusForbidden, Cause: errors.New("denied by policy b/x: a DENY policy matched")},
			FlagDenied, func(err error) bool {
				var re *hbone.RefusedError
				return errors.As(err, &re) && re.Status == http.StatusForbidden && re.Reason == "denied by policy b/x: a DENY policy matched"
			}, "denied by policy b/x"},
		{"accept failed", &refusal{Flag: FlagUpstreamFailure, Cause: pipeErr},
			FlagUpstreamFailure, func(err error) bool { return err == pipeErr }, pipeErr.Error()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reg, log := prometheus.NewRegistry(), &syncBuffer{}
			metrics, err := NewMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			in := &Inbound{Env: &Env{Metrics: metrics, AccessLog: slog.New(slog.NewJSONHandler(log, nil))}}
			rec := &connRecord{Direction: "inbound", Reporter: ReporterDestination, Security: SecurityMutualTLS, Start: time.Now()}
			if got := in.answer(rec, tt.err); !tt.answer(got) {
				t.Errorf("answer = %v", got)
			}
			if n := counter(t, reg, "istio_tcp_connections_closed_total", map[string]string{"response_flags": tt.flag}); n != 1 {
				t.Errorf("closed{response_flags=%s} = %v, want 1", tt.flag, n)
			}
			if n := counter(t, reg, "istio_tcp_connections_opened_total", nil); n != 1 {
				t.Errorf("opened = %v, want 1 (a refused connection counts as opened and closed)", n)
			}
			lines := strings.Split(strings.TrimSpace(log.String()), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], `"response_flags":"`+tt.flag+`"`) {
				t.Fatalf("access log = %q", lines)
			}
			if hasErr := strings.Contains(lines[0], `"error":`); hasErr != (tt.logsError != "") || !strings.Contains(lines[0], tt.logsError) {
				t.Errorf("access log %s, want error %q", lines[0], tt.logsError)
			}
			if c := metrics.Connections(); len(c) != 0 {
				t.Errorf("still open after record: %+v", c)
			}
		})
	}
}
