// Package cli holds what Weft's long-running commands share: the JSON log
// format and level flag, the access log's buffering, and running until
// SIGTERM (what the kubelet sends).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap/zapcore"
)

// Logger returns a JSON logger writing to w at level (debug, info, warn or
// error), or an error naming the --log-level flag.
func Logger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// RunUntilSignal runs fn with a context that ends on SIGTERM or SIGINT. An
// fn that returns because of it (context.Canceled) has exited cleanly.
func RunUntilSignal(fn func(ctx context.Context) error) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := fn(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// AccessLogFlushInterval is how long an access log line may wait in the
// buffer: Envoy's default (access_log_flush_interval, 1 s).
const AccessLogFlushInterval = time.Second

// AccessLog is out (stdout) buffered for access logs, as Envoy buffers them: the
// lines go out when 256 KiB have accumulated or AccessLogFlushInterval after
// the first one, not with one write system call per request (which cost
// the waypoint more than a tenth of its CPU at 1000 req/s). stop writes out
// what is left; call it before the process exits.
func AccessLog(out io.Writer) (w io.Writer, stop func()) {
	b := &zapcore.BufferedWriteSyncer{WS: zapcore.AddSync(out), FlushInterval: AccessLogFlushInterval}
	return b, func() { b.Stop() }
}
